package nodeattest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/nodeattest/nodeattesttest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func ders(leaf nodeattesttest.Leaf, more ...*nodeattesttest.CA) [][]byte {
	out := [][]byte{leaf.Cert.Raw}
	for _, c := range more {
		out = append(out, c.Cert.Raw)
	}
	return out
}

func TestVerify(t *testing.T) {
	root := nodeattesttest.NewCA(t, "node root")
	inter := root.Intermediate(t, "node issuing CA")
	other := nodeattesttest.NewCA(t, "someone else's CA")
	v, err := NewX509PoP([]*x509.Certificate{root.Cert})
	if err != nil {
		t.Fatal(err)
	}
	good := inter.Issue(t, "node-1.example.org")
	n, err := v.Verify(td, ders(good, inter), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.AgentID.String(), "spiffe://example.org/rampart/agent/x509pop-") || len(n.AgentID.Path()) != len("/rampart/agent/x509pop-")+40 {
		t.Fatalf("agent id %s", n.AgentID)
	}
	if !strings.Contains(strings.Join(n.Selectors, " "), "x509pop:subject:cn:node-1.example.org") {
		t.Fatalf("selectors %v", n.Selectors)
	}
	// Same certificate, same agent; another certificate, another agent.
	if n2, _ := v.Verify(td, ders(good, inter), time.Now()); n2.AgentID != n.AgentID {
		t.Fatal("the agent ID is not stable")
	}
	if n3, _ := v.Verify(td, ders(inter.Issue(t, "node-1.example.org"), inter), time.Now()); n3.AgentID == n.AgentID {
		t.Fatal("two certificates got one agent ID")
	}
	for _, tc := range []struct {
		name    string
		chain   [][]byte
		at      time.Time
		wantErr string
	}{
		// Attack: a certificate from a CA the server does not trust.
		{"not chaining to the configured CA", ders(other.Issue(t, "node-1.example.org")), time.Now(), "does not verify"},
		{"intermediate missing", ders(good), time.Now(), "does not verify"},
		{"expired", ders(inter.Issue(t, "n", nodeattesttest.Expired), inter), time.Now(), "expired"},
		{"verified after the CA expired", ders(good, inter), time.Now().Add(48 * time.Hour), "expired"},
		// Attack: a TLS server certificate from the same CA used as a
		// node credential.
		{"server auth only", ders(inter.Issue(t, "n", nodeattesttest.ServerAuthOnly), inter), time.Now(), "usage"},
		{"key usage without digitalSignature", ders(inter.Issue(t, "n", nodeattesttest.EnciphermentOnly), inter), time.Now(), "digitalSignature"},
		// Attack: the CA's own certificate presented as a node's.
		{"a CA as leaf", [][]byte{inter.Cert.Raw, root.Cert.Raw}, time.Now(), "is a CA"},
		{"empty", nil, time.Now(), "want 1 to 8"},
		{"too long", make([][]byte, 9), time.Now(), "want 1 to 8"},
		{"garbage", [][]byte{[]byte("not DER")}, time.Now(), "certificate 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(td, tc.chain, tc.at)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrRefused containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSignatures(t *testing.T) {
	root := nodeattesttest.NewCA(t, "root")
	leaf := root.Issue(t, "node")
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	sig, err := Sign(leaf.Key, nonce, leaf.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSignature(leaf.Cert, nonce, sig); err != nil {
		t.Fatal(err)
	}
	other := root.Issue(t, "node")
	otherNonce := make([]byte, NonceSize)
	rand.Read(otherNonce)
	for _, tc := range []struct {
		name  string
		nonce []byte
		sig   func() []byte
	}{
		// Attack: a signature by another key (the caller's own) over the
		// right nonce.
		{"signed by another key", nonce, func() []byte { s, _ := Sign(other.Key, nonce, leaf.Cert.Raw); return s }},
		{"another nonce", otherNonce, func() []byte { return sig }},
		// Attack: the node's key signing the bare nonce for someone
		// (another protocol); no answer here.
		{"bare nonce, no domain separation", nonce, func() []byte {
			d := sha256Sum(nonce)
			s, _ := leaf.Key.Sign(rand.Reader, d, crypto.SHA256)
			return s
		}},
		{"empty", nonce, func() []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckSignature(leaf.Cert, tc.nonce, tc.sig()); !errors.Is(err, ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused", err)
			}
		})
	}
	// RSA-PSS and Ed25519 keys round-trip too.
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, k := range []crypto.Signer{rk, ek, pk} {
		c := &x509.Certificate{Raw: []byte("leaf"), PublicKey: k.Public()}
		s, err := Sign(k, nonce, c.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckSignature(c, nonce, s); err != nil {
			t.Fatalf("%T: %v", k, err)
		}
	}
}

func sha256Sum(b []byte) []byte {
	h := crypto.SHA256.New()
	h.Write(b)
	return h.Sum(nil)
}
