package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/nodeattest"
	"github.com/rampartsec/rampart/internal/secretfile"
)

// Node attestation methods (Config.Attest).
const (
	AttestJoinToken = "join-token"
	AttestX509PoP   = "x509pop"
	AttestTPM       = "tpm"
)

// DefaultTPM is the kernel's TPM resource manager.
const DefaultTPM = "/dev/tpmrm0"

// openTPM opens the TPM named by path: tcp:HOST:PORT (swtpm) or a device.
func openTPM(ctx context.Context, path string) (transport.TPM, io.Closer, error) {
	if path == "" {
		path = DefaultTPM
	}
	if addr, ok := strings.CutPrefix(path, "tcp:"); ok {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: tpm: %w", err)
		}
		return transport.FromReadWriter(c), c, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: tpm: %w", err)
	}
	return transport.FromReadWriter(f), f, nil
}

// attestTPM proves the node by its TPM: the server makes a credential
// for the agent's attestation key under the TPM's endorsement key; only
// that TPM can activate it; the AK then quotes the server's nonce.
func (a *Agent) attestTPM(ctx context.Context) error {
	t, closer, err := openTPM(ctx, a.cfg.TPM)
	if err != nil {
		return err
	}
	defer closer.Close()
	m, err := nodeattest.OpenTPM(t)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer m.Close()
	ekHash := nodeattest.EKHash(m.EKPublic())
	a.log.Info("attesting by TPM; the server must allow this EK (rampart server --node-attest-tpm-ek-hash)", "ek_hash", ekHash)
	var ch api.TPMChallengeResponse
	if err := a.attestClient.Do(ctx, http.MethodPost, "/v1/agent/attest/tpm/challenge", api.TPMChallengeRequest{EKPublic: m.EKPublic(), AKPublic: m.AKPublic()}, &ch); err != nil {
		return fmt.Errorf("agent: tpm challenge (EK %s): %w", ekHash, err)
	}
	secret, quote, sig, err := m.Answer(ch.CredentialBlob, ch.EncryptedSecret, ch.Nonce)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	key, csr, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	var resp api.AttestResponse
	req := api.TPMAttestRequest{EKPublic: m.EKPublic(), AKPublic: m.AKPublic(), Nonce: ch.Nonce, Secret: secret, Quote: quote, Signature: sig, CSR: csr}
	if err := a.attestClient.Do(ctx, http.MethodPost, "/v1/agent/attest/tpm", req, &resp); err != nil {
		return fmt.Errorf("agent: tpm attestation failed: %w", err)
	}
	return a.attested(resp, key)
}

// attestX509PoP proves the node by its certificate: asks the server for
// a nonce for the chain, signs it with the certificate's key, and sends
// the answer with the CSR for the agent's SVID. The key never leaves the
// node.
func (a *Agent) attestX509PoP(ctx context.Context) error {
	chain, signer, err := loadX509PoP(a.cfg.X509PoPCertFile, a.cfg.X509PoPKeyFile)
	if err != nil {
		return err
	}
	var ch api.X509PoPChallengeResponse
	if err := a.attestClient.Do(ctx, http.MethodPost, "/v1/agent/attest/x509pop/challenge", api.X509PoPChallengeRequest{Chain: chain}, &ch); err != nil {
		return fmt.Errorf("agent: x509pop challenge: %w", err)
	}
	sig, err := nodeattest.Sign(signer, ch.Nonce, chain[0])
	if err != nil {
		return fmt.Errorf("agent: x509pop: %w", err)
	}
	key, csr, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	var resp api.AttestResponse
	req := api.X509PoPAttestRequest{Chain: chain, Nonce: ch.Nonce, Signature: sig, CSR: csr}
	if err := a.attestClient.Do(ctx, http.MethodPost, "/v1/agent/attest/x509pop", req, &resp); err != nil {
		return fmt.Errorf("agent: x509pop attestation failed: %w", err)
	}
	return a.attested(resp, key)
}

// loadX509PoP reads the node's certificate chain (PEM, leaf first) and
// its private key (PEM PKCS#8, SEC 1 or PKCS#1; a file only its owner
// may read), and checks that they belong together.
func loadX509PoP(certFile, keyFile string) ([][]byte, crypto.Signer, error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("agent: x509pop needs --x509pop-cert FILE and --x509pop-key FILE")
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: x509pop certificate: %w", err)
	}
	var chain [][]byte
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			chain = append(chain, blk.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("agent: x509pop certificate file %s holds no PEM certificate", certFile)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("agent: x509pop certificate: %w", err)
	}
	kb, err := secretfile.Read(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: x509pop key: %w", err)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return nil, nil, fmt.Errorf("agent: x509pop key file %s holds no PEM key", keyFile)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("agent: x509pop key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("agent: x509pop key: %T cannot sign", k)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("agent: x509pop: the key in %s is not the key of the certificate in %s", keyFile, certFile)
	}
	return chain, signer, nil
}
