package federation_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/federation"
	"github.com/rampartsec/rampart/internal/svid"
)

// FuzzParseBundle: a bundle document comes from another trust domain's
// endpoint. Whatever it holds, ParseBundle returns a bundle of b.test
// with at least one CA authority naming no other trust domain, or an
// error; and what it accepts survives a round trip.
func FuzzParseBundle(f *testing.F) {
	caB, caC := fuzzCA(f, tdB), fuzzCA(f, tdC)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, err := federation.Document(tdB, []*x509.Certificate{caB.cert}, map[string]crypto.PublicKey{"k": k.Public()}, 3, time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	wrong, _ := federation.Document(tdC, []*x509.Certificate{caC.cert}, nil, 1, time.Minute)
	f.Add(good)
	f.Add(wrong)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":[]}],"spiffe_refresh_hint":-5}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		b, err := federation.ParseBundle(tdB, doc)
		if err != nil {
			return
		}
		if b.TrustDomain() != tdB || len(b.X509Authorities()) == 0 {
			t.Fatalf("accepted a bundle of %s with %d X.509 authorities", b.TrustDomain(), len(b.X509Authorities()))
		}
		for _, c := range b.X509Authorities() {
			if !c.IsCA {
				t.Fatal("accepted a non-CA authority")
			}
			for _, u := range c.URIs {
				if u.Scheme == "spiffe" && u.Host != "b.test" {
					t.Fatalf("accepted an authority for %s", u)
				}
			}
		}
		again, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b2, err := federation.ParseBundle(tdB, again)
		if err != nil || !federation.SameAuthorities(b, b2) {
			t.Fatalf("the round trip changed the bundle: %v", err)
		}
	})
}

func fuzzCA(f *testing.F, td spiffeid.TrustDomain) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := svid.CATemplate(td, td.Name()+" root", t0.Add(-time.Hour), t0.Add(48*time.Hour), -1)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{td: td, cert: c, key: key}
}
