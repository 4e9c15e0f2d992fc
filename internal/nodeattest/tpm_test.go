package nodeattest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// swtpm starts a software TPM 2.0 (Debian's swtpm) on a loopback port
// with its state in a temporary directory, and returns a transport to it.
// Without swtpm the test is skipped, unless CI is set: CI installs it.
func swtpm(t *testing.T) transport.TPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is not installed (apt-get install swtpm); CI must run the TPM tests")
		}
		t.Skip("swtpm is not installed (apt-get install swtpm swtpm-tools)")
	}
	ports := make([]int, 2)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+t.TempDir(),
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[0]),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[1]),
		"--flags", "not-need-init,startup-clear")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0])); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
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
