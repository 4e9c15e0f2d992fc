package nodeattest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/identity/ids"
)

// KindX509PoP names x509pop challenges in the store.
const KindX509PoP = "x509pop"

// NonceSize is the size of a challenge nonce.
const NonceSize = 32

// ChallengeTTL is how long a nonce may be answered.
const ChallengeTTL = 60 * time.Second

// maxChain bounds the certificates an agent may present.
const maxChain = 8

// ErrRefused is returned (wrapped) for every proof the server refuses;
// the message says why, for the operator (the agent is told only that it
// was refused).
var ErrRefused = errors.New("nodeattest: refused")

// X509PoP verifies x509pop proofs against the configured CAs.
type X509PoP struct {
	roots *x509.CertPool
	cas   []*x509.Certificate
}

// LoadX509PoP reads the PEM CA bundles in files.
func LoadX509PoP(files []string) (*X509PoP, error) {
	var cas []*x509.Certificate
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("nodeattest: x509pop CA: %w", err)
		}
		n := 0
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("nodeattest: x509pop CA %s: %w", f, err)
			}
			cas = append(cas, c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("nodeattest: x509pop CA %s holds no PEM certificate", f)
		}
	}
	return NewX509PoP(cas)
}

// NewX509PoP trusts cas as roots.
func NewX509PoP(cas []*x509.Certificate) (*X509PoP, error) {
	if len(cas) == 0 {
		return nil, errors.New("nodeattest: x509pop needs at least one CA")
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return &X509PoP{roots: pool, cas: cas}, nil
}

// Node is a host whose certificate verified.
type Node struct {
	AgentID spiffeid.ID
	Leaf    *x509.Certificate
	// Selectors describe the node (x509pop:subject:cn:..., ...): recorded
	// with the attestation for the operator.
	Selectors []string
}

// Verify parses and verifies a presented chain (leaf first) at now.
func (v *X509PoP) Verify(td spiffeid.TrustDomain, ders [][]byte, now time.Time) (Node, error) {
	if len(ders) == 0 || len(ders) > maxChain {
		return Node{}, fmt.Errorf("%w: want 1 to %d certificates, leaf first; got %d", ErrRefused, maxChain, len(ders))
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return Node{}, fmt.Errorf("%w: certificate %d: %v", ErrRefused, i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if leaf.IsCA {
		return Node{}, fmt.Errorf("%w: the leaf certificate %q is a CA", ErrRefused, leaf.Subject)
	}
	// A key usage extension, when present, must allow signatures: the
	// proof is a signature.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return Node{}, fmt.Errorf("%w: the certificate %q has no digitalSignature key usage", ErrRefused, leaf.Subject)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return Node{}, fmt.Errorf("%w: the certificate %q does not verify against the x509pop CAs: %v", ErrRefused, leaf.Subject, err)
	}
	sum := sha256.Sum256(leaf.Raw)
	id, err := ids.AgentID(td, "x509pop-"+hex.EncodeToString(sum[:])[:40])
	if err != nil {
		return Node{}, err
	}
	n := Node{AgentID: id, Leaf: leaf}
	if leaf.Subject.CommonName != "" {
		n.Selectors = append(n.Selectors, "x509pop:subject:cn:"+leaf.Subject.CommonName)
	}
	n.Selectors = append(n.Selectors, "x509pop:serialnumber:"+hex.EncodeToString(leaf.SerialNumber.Bytes()))
	for _, d := range leaf.DNSNames {
		n.Selectors = append(n.Selectors, "x509pop:san:dns:"+d)
	}
	for _, c := range chains[0][1:] {
		fp := sha1.Sum(c.Raw) // SPIRE's ca:fingerprint is SHA-1
		n.Selectors = append(n.Selectors, "x509pop:ca:fingerprint:"+hex.EncodeToString(fp[:]))
	}
	return n, nil
}

// Message is what the agent signs: a domain separator, the leaf's
// SHA-256 and the nonce.
func Message(nonce, leafDER []byte) []byte {
	sum := sha256.Sum256(leafDER)
	msg := make([]byte, 0, 19+len(sum)+len(nonce))
	msg = append(msg, "rampart x509pop v1\x00"...)
	msg = append(msg, sum[:]...)
	return append(msg, nonce...)
}

// Sign answers a challenge with the certificate's key: ECDSA and RSA-PSS
// over SHA-256 of Message, Ed25519 over Message itself.
func Sign(key crypto.Signer, nonce, leafDER []byte) ([]byte, error) {
	msg := Message(nonce, leafDER)
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	case *rsa.PublicKey:
		d := sha256.Sum256(msg)
		return key.Sign(rand.Reader, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		return key.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	return nil, fmt.Errorf("nodeattest: x509pop: key type %T is not supported", key.Public())
}

// CheckSignature checks sig over Message(nonce, leaf) by leaf's key.
func CheckSignature(leaf *x509.Certificate, nonce, sig []byte) error {
	msg := Message(nonce, leaf.Raw)
	d := sha256.Sum256(msg)
	ok := false
	switch pub := leaf.PublicKey.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, msg, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, d[:], sig)
	default:
		return fmt.Errorf("%w: key type %T is not supported", ErrRefused, leaf.PublicKey)
	}
	if !ok {
		return fmt.Errorf("%w: the signature over the nonce is not by the certificate's key", ErrRefused)
	}
	return nil
}
