package mtls

import (
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// An inbound server of a.example that federates with b.example accepts
// b.example's callers whose chain is b.example's, and only those: a
// certificate naming b.example signed by a.example's CA, one of a trust
// domain it does not federate with, and one naming b.example from another
// CA are refused.
func TestFederatedCallers(t *testing.T) {
	a, b, c := newCA(t, "a.example"), newCA(t, "b.example"), newCA(t, "c.example")
	bImpostor := newCA(t, "b.example")
	server := a.svid(t, "/payments", time.Now().Add(time.Hour))
	// A certificate for spiffe://b.example/orders signed by A's CA.
	crossSigned := reissue(t, a, spiffeid.RequireFromString("spiffe://b.example/orders"))

	bundles := x509bundle.NewSet(a.bundle(), b.bundle())
	for _, tc := range []struct {
		name   string
		client *x509svid.SVID
		ok     bool
	}{
		{"own trust domain", a.svid(t, "/orders", time.Now().Add(time.Hour)), true},
		{"federated trust domain", b.svid(t, "/orders", time.Now().Add(time.Hour)), true},
		{"B's ID signed by A's CA", crossSigned, false},
		{"trust domain not federated", c.svid(t, "/orders", time.Now().Add(time.Hour)), false},
		{"B's name, another CA", bImpostor.svid(t, "/orders", time.Now().Add(time.Hour)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r reasons
			srv := ServerConfig(Options{SVID: server, Bundles: bundles, Authorize: AuthorizeTrustDomains(), OnFail: r.add})
			cli := ClientConfig(Options{SVID: tc.client, Bundles: a.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
			peer, serr, cerr := handshake(srv, cli)
			if tc.ok {
				if serr != nil || cerr != nil || peer != tc.client.ID {
					t.Fatalf("refused: server %v, client %v", serr, cerr)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("accepted")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.got) == 0 || r.got[0] != ReasonUntrusted {
				t.Fatalf("reasons %v, want %s", r.got, ReasonUntrusted)
			}
		})
	}
}

// reissue signs an SVID of id (of any trust domain) with ca.
func reissue(t *testing.T, ca *testCA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	s := ca.svid(t, "/x", time.Now().Add(time.Hour))
	tmpl := *s.Certificates[0]
	tmpl.URIs = []*url.URL{id.URL()}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.cert, s.PrivateKey.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: s.PrivateKey}
}
