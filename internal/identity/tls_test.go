package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// A TLS certificate chains to the bundle for its names, carries the TLS
// profile (no SPIFFE ID, server auth only), and is never accepted as an
// SVID.
func TestSignTLSProfile(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := ca.SignTLS(key.Public(), TLSCert{DNSNames: []string{"web.example.org", "*.apps.example.org"},
		IPs: []net.IP{net.ParseIP("10.1.2.3")}, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 0 {
		t.Errorf("URI SANs %v: a TLS certificate must not carry a SPIFFE ID", leaf.URIs)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("EKU %v, want server auth only", leaf.ExtKeyUsage)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf: IsCA %v, key usage %b", leaf.IsCA, leaf.KeyUsage)
	}
	if want := leaf.NotBefore.Add(24*time.Hour + 30*time.Second); !leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", leaf.NotAfter, want)
	}
	if len(leaf.AuthorityKeyId) == 0 || string(leaf.AuthorityKeyId) != string(chain[1].SubjectKeyId) {
		t.Errorf("authority key ID %x, want the intermediate's %x", leaf.AuthorityKeyId, chain[1].SubjectKeyId)
	}
	roots := x509.NewCertPool()
	for _, r := range ca.X509Bundle() {
		roots.AddCert(r)
	}
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	for _, name := range []string{"web.example.org", "x.apps.example.org", "10.1.2.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inters, CurrentTime: f.clk.Now()}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: f.clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a TLS server certificate verified as a client certificate")
	}
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, ca.X509Bundle()), x509svid.WithTime(f.clk.Now())); err == nil {
		t.Error("a TLS server certificate was accepted as an X.509-SVID")
	}

	// The client-auth EKU only when asked.
	chain, err = ca.SignTLS(key.Public(), TLSCert{DNSNames: []string{"mq.example.org"}, TTL: time.Hour, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(chain[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("EKU %v, want server and client auth", chain[0].ExtKeyUsage)
	}

	// Never beyond the intermediate.
	chain, err = ca.SignTLS(key.Public(), TLSCert{DNSNames: []string{"web.example.org"}, TTL: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].NotAfter.After(chain[1].NotAfter) {
		t.Errorf("leaf outlives its intermediate: %v > %v", chain[0].NotAfter, chain[1].NotAfter)
	}
}

func TestSignTLSRefuses(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	many := make([]string, MaxTLSNames+1)
	for i := range many {
		many[i] = "n.example.org"
	}
	for _, tc := range []struct {
		name string
		pub  any
		req  TLSCert
		want string
	}{
		{"no names", ec.Public(), TLSCert{TTL: time.Hour}, "at least one"},
		{"too many names", ec.Public(), TLSCert{DNSNames: many, TTL: time.Hour}, "at most 100"},
		{"zero lifetime", ec.Public(), TLSCert{DNSNames: []string{"a.example.org"}}, "must be positive"},
		{"empty name", ec.Public(), TLSCert{DNSNames: []string{""}, TTL: time.Hour}, "empty DNS name"},
		{"weak RSA key", weak.Public(), TLSCert{DNSNames: []string{"a.example.org"}, TTL: time.Hour}, "1024 bits"},
		{"P-224 key", p224.Public(), TLSCert{DNSNames: []string{"a.example.org"}, TTL: time.Hour}, "P-224"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignTLS(tc.pub, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := ca.SignTLS(edPub, TLSCert{DNSNames: []string{"a.example.org"}, TTL: time.Hour}); err != nil {
		t.Errorf("Ed25519 key: %v", err)
	}
}
