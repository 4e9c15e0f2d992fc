package nodeattest

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/rampartsec/rampart/internal/nodeattest/nodeattesttest"
)

func swtpm(t *testing.T) transport.TPM {
	t.Helper()
	conn, err := net.Dial("tcp", nodeattesttest.SWTPM(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return transport.FromReadWriter(conn)
}

func TestTPMAttestation(t *testing.T) {
	tp := swtpm(t)
	m, err := OpenTPM(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	v, err := NewTPMVerifier([]string{EKHash(m.EKPublic())})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := v.Challenge(td, m.EKPublic(), m.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	secret, quote, sig, err := m.Answer(ch.CredentialBlob, ch.EncryptedSecret, ch.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(td, m.EKPublic(), m.AKPublic(), ch.Nonce, secret, quote, sig, ch.State)
	if err != nil {
		t.Fatal(err)
	}
	if id != ch.AgentID || !strings.HasPrefix(id.String(), "spiffe://example.org/rampart/agent/tpm-") {
		t.Fatalf("agent id %s, challenge for %s", id, ch.AgentID)
	}

	// Attack: a quote from another key of the same TPM (not the AK the
	// credential was made for).
	otherTmpl := AKTemplate
	otherTmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte("another key")}})
	other, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(otherTmpl)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: other.ObjectHandle}.Execute(tp)
	q, err := tpm2.Quote{SignHandle: tpm2.AuthHandle{Handle: other.ObjectHandle, Name: other.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: ch.Nonce}, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(td, m.EKPublic(), m.AKPublic(), ch.Nonce, secret, q.Quoted.Bytes(), tpm2.Marshal(q.Signature), ch.State)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not signed by the attested AK") {
		t.Fatalf("quote from another key: %v", err)
	}

	// Attack: the other key presented as the AK: the credential was made
	// for the first AK's name, so the stored state does not match.
	_, err = v.Verify(td, m.EKPublic(), other.OutPublic.Bytes(), ch.Nonce, secret, q.Quoted.Bytes(), tpm2.Marshal(q.Signature), ch.State)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not activated") {
		t.Fatalf("another AK: %v", err)
	}

	// Attack: a guessed secret (no TPM holding the EK).
	_, err = v.Verify(td, m.EKPublic(), m.AKPublic(), ch.Nonce, make([]byte, 32), quote, sig, ch.State)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not activated") {
		t.Fatalf("guessed secret: %v", err)
	}

	// Attack: an old quote (over an earlier nonce) with a new challenge.
	ch2, _ := v.Challenge(td, m.EKPublic(), m.AKPublic())
	secret2, _, _, err := m.Answer(ch2.CredentialBlob, ch2.EncryptedSecret, ch2.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(td, m.EKPublic(), m.AKPublic(), ch2.Nonce, secret2, quote, sig, ch2.State)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another nonce") {
		t.Fatalf("old quote: %v", err)
	}

	// Attack: an EK the server was not given.
	stranger, _ := NewTPMVerifier([]string{strings.Repeat("ab", 32)})
	if _, err := stranger.Challenge(td, m.EKPublic(), m.AKPublic()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "unknown EK") {
		t.Fatalf("unknown EK: %v", err)
	}
	// Attack: a key that is not restricted signing (could sign a forged
	// TPMS_ATTEST) presented as the AK.
	if _, err := v.Challenge(td, m.EKPublic(), m.EKPublic()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "restricted signing") {
		t.Fatalf("EK as AK: %v", err)
	}
}
