package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var nested = spiffeid.RequireFromString("spiffe://example.org/nested")

// downstreamCSR is a CSR signed by a new key, asking (mod) for whatever
// an attacker would like.
func downstreamCSR(t testing.TB, mod func(*x509.CertificateRequest)) (*ecdsa.PrivateKey, *x509.CertificateRequest) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "nested"}}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// issue signs a certificate for tmpl under parent with parentKey.
func issue(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// An intermediate made while downstream CAs are off (path length 0)
// cannot sign one; turning them on replaces it at once, with path length
// 2. The minted CA takes nothing from the CSR but its key: a CSR asking
// for another trust domain, DNS names, a longer path or its own name
// constraints gets the server's choice. Its life is cut to the bound
// given and to the intermediate's.
func TestSignDownstreamCA(t *testing.T) {
	f := newFixture(t)
	off := f.ca(t, nil)
	_, csr := downstreamCSR(t, nil)
	if _, err := off.SignDownstreamCA(csr, nested, time.Hour, time.Time{}); !errors.Is(err, ErrDownstreamOff) {
		t.Fatalf("intermediate of path length 0: %v, want ErrDownstreamOff", err)
	}
	ca := f.ca(t, func(c *Config) { c.Downstream = true })
	ca.mu.RLock()
	inter := ca.inter.cert
	ca.mu.RUnlock()
	if inter.MaxPathLen != 2 {
		t.Fatalf("intermediate after turning downstream on: MaxPathLen %d, want 2", inter.MaxPathLen)
	}

	// What the CSR asks for, all of it ignored.
	wide, _ := asn1.Marshal(struct {
		CA      bool
		PathLen int
	}{true, 9})
	key, csr := downstreamCSR(t, func(r *x509.CertificateRequest) {
		r.URIs = []*url.URL{{Scheme: "spiffe", Host: "other.org"}}
		r.DNSNames = []string{"evil.example.com"}
		r.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: wide}}
	})
	chain, err := ca.SignDownstreamCA(csr, nested, time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	dc := chain[0]
	now := f.clk.Now()
	switch {
	case !dc.IsCA || dc.MaxPathLen != DownstreamPathLen:
		t.Errorf("CA %v MaxPathLen %d, want CA with %d", dc.IsCA, dc.MaxPathLen, DownstreamPathLen)
	case dc.KeyUsage != x509.KeyUsageCertSign || len(dc.ExtKeyUsage) != 0:
		t.Errorf("key usage %v %v, want certSign only", dc.KeyUsage, dc.ExtKeyUsage)
	case len(dc.URIs) != 1 || dc.URIs[0].String() != "spiffe://example.org" || len(dc.DNSNames) != 0:
		t.Errorf("names %v %v, want spiffe://example.org only", dc.URIs, dc.DNSNames)
	case len(dc.PermittedURIDomains) != 1 || dc.PermittedURIDomains[0] != "example.org" || !dc.PermittedDNSDomainsCritical:
		t.Errorf("name constraints %v (critical %v)", dc.PermittedURIDomains, dc.PermittedDNSDomainsCritical)
	case !dc.NotAfter.Equal(now.Add(time.Hour).Truncate(time.Second)) && !dc.NotAfter.Equal(now.Add(time.Hour)):
		t.Errorf("NotAfter %v, want now+1h", dc.NotAfter)
	case !key.PublicKey.Equal(dc.PublicKey):
		t.Error("not the CSR's key")
	case chain[1].SerialNumber.Cmp(inter.SerialNumber) != 0:
		t.Error("chain[1] is not the intermediate")
	}
	if c, _ := ca.SignDownstreamCA(csr, nested, 1000*time.Hour, time.Time{}); !c[0].NotAfter.Equal(inter.NotAfter) {
		t.Errorf("NotAfter %v: want cut to the intermediate's %v", c[0].NotAfter, inter.NotAfter)
	}
	until := now.Add(10 * time.Minute)
	if c, _ := ca.SignDownstreamCA(csr, nested, time.Hour, until); !c[0].NotAfter.Equal(until.Truncate(time.Second)) && !c[0].NotAfter.Equal(until) {
		t.Errorf("NotAfter %v: want cut to the entry's expiry %v", c[0].NotAfter, until)
	}
	if _, err := ca.SignDownstreamCA(csr, spiffeid.RequireFromString("spiffe://other.org/nested"), time.Hour, time.Time{}); err == nil {
		t.Error("a holder of another trust domain got a CA")
	}
}

// What the minted CA can sign, as relying parties see it: SVIDs of the
// trust domain verify (go-spiffe), through a nested intermediate too;
// another trust domain's, a subdomain's, DNS names and IP addresses fail
// crypto/x509 verification, even for a relying party that would take the
// same roots for the other trust domain (go-spiffe); a CA two levels
// below fails for its path length.
func TestDownstreamCANameConstraints(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, func(c *Config) { c.Downstream = true })
	key, csr := downstreamCSR(t, nil)
	chain, err := ca.SignDownstreamCA(csr, nested, time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, r := range ca.X509Bundle() {
		roots.AddCert(r)
	}
	now := f.clk.Now()
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := func(uri string, dns []string, ips []net.IP, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
		u, _ := url.Parse(uri)
		return issue(t, &x509.Certificate{URIs: []*url.URL{u}, DNSNames: dns, IPAddresses: ips, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}, parent, leafKey.Public(), parentKey)
	}
	verify := func(c *x509.Certificate, inters ...*x509.Certificate) error {
		pool := x509.NewCertPool()
		for _, i := range inters {
			pool.AddCert(i)
		}
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	// Both trust domains backed by our roots: only name constraints stop
	// the other one.
	both := x509bundle.NewSet(x509bundle.FromX509Authorities(td, ca.X509Bundle()),
		x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("other.org"), ca.X509Bundle()))

	good := leaf("spiffe://example.org/nested/w", nil, nil, chain[0], key)
	if _, _, err := x509svid.Verify([]*x509.Certificate{good, chain[0], chain[1]}, both, x509svid.WithTime(now)); err != nil {
		t.Fatalf("an SVID of the trust domain: %v", err)
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"another trust domain", leaf("spiffe://other.org/w", nil, nil, chain[0], key)},
		{"a subdomain trust domain", leaf("spiffe://sub.example.org/w", nil, nil, chain[0], key)},
		{"a DNS name", leaf("spiffe://example.org/w", []string{"rampart.example.org"}, nil, chain[0], key)},
		{"an IP address", leaf("spiffe://example.org/w", nil, []net.IP{net.ParseIP("127.0.0.1")}, chain[0], key)},
	} {
		err := verify(c.cert, chain[0], chain[1])
		if err == nil || !strings.Contains(err.Error(), "constraint") {
			t.Errorf("%s: %v, want a name constraint violation", c.name, err)
		}
	}
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf("spiffe://other.org/w", nil, nil, chain[0], key), chain[0], chain[1]}, both, x509svid.WithTime(now)); err == nil {
		t.Error("go-spiffe took another trust domain's SVID from the downstream CA")
	}

	// A nested server's own intermediate (path length 0) below it.
	childKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	child := issue(t, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute)}, chain[0], childKey.Public(), key)
	if err := verify(leaf("spiffe://example.org/w", nil, nil, child, childKey), child, chain[0], chain[1]); err != nil {
		t.Fatalf("an SVID under the nested intermediate: %v", err)
	}
	// One more CA level: beyond the path length.
	gKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	child2 := issue(t, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, MaxPathLen: -1, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute)}, chain[0], childKey.Public(), key)
	grand := issue(t, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, MaxPathLen: -1, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute)}, child2, gKey.Public(), childKey)
	if err := verify(leaf("spiffe://example.org/w", nil, nil, grand, gKey), grand, child2, chain[0], chain[1]); err == nil {
		t.Error("a CA two levels below the downstream CA verified")
	}
}

// A CSR whose signature does not verify (its key is not the signer's),
// or whose key is too weak, is refused.
func TestDownstreamCSRRefused(t *testing.T) {
	_, csr := downstreamCSR(t, nil)
	raw := append([]byte(nil), csr.Raw...)
	raw[len(raw)-3] ^= 0xff // in the signature
	bad, err := x509.ParseCertificateRequest(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckDownstreamCSR(bad); !errors.Is(err, ErrDownstreamCSR) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("tampered signature: %v", err)
	}
	k224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k224)
	weak, _ := x509.ParseCertificateRequest(der)
	if err := CheckDownstreamCSR(weak); !errors.Is(err, ErrDownstreamCSR) {
		t.Fatalf("P-224 key: %v", err)
	}
	if err := CheckDownstreamCSR(csr); err != nil {
		t.Fatalf("a good CSR: %v", err)
	}
}

// FuzzCheckDownstreamCSR: whatever bytes a caller sends as its CSR, the
// parse and the check return (no panic), and a CSR that passes has a
// signature that verifies.
func FuzzCheckDownstreamCSR(f *testing.F) {
	_, csr := downstreamCSR(f, nil)
	f.Add(csr.Raw)
	f.Add(csr.Raw[:len(csr.Raw)/2])
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return
		}
		if CheckDownstreamCSR(c) == nil && c.CheckSignature() != nil {
			t.Fatal("a CSR whose signature does not verify passed")
		}
	})
}

// BenchmarkSignDownstreamCA: the CA's cost of one downstream CA (P-256).
func BenchmarkSignDownstreamCA(b *testing.B) {
	f := newFixture(b)
	cfg := Config{TrustDomain: td, Store: f.st, Wrapper: f.w, Now: f.clk.Now, RootTTL: 300 * time.Hour, IntermediateTTL: 24 * time.Hour, Downstream: true}
	ca, err := New(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	_, csr := downstreamCSR(b, nil)
	for b.Loop() {
		if _, err := ca.SignDownstreamCA(csr, nested, time.Hour, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}
