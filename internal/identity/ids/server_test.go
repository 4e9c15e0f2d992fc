package ids

import (
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The server is authorized only on a chain its own CA made: a
// certificate for its ID signed under a downstream CA (one more CA in the
// chain) is refused, as is another ID on a direct chain.
func TestAuthorizeServer(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	chain := func(n int) [][]*x509.Certificate { return [][]*x509.Certificate{make([]*x509.Certificate, n)} }
	auth := AuthorizeServer(td)
	for _, tc := range []struct {
		name   string
		id     spiffeid.ID
		chains [][]*x509.Certificate
		ok     bool
	}{
		{"the server, leaf+intermediate+root", ServerID(td), chain(3), true},
		{"the server, leaf+root (upstream root signs directly)", ServerID(td), chain(2), true},
		{"the server's ID under a downstream CA", ServerID(td), chain(4), false},
		{"under a downstream CA, deeper", ServerID(td), chain(5), false},
		{"one long and one direct chain", ServerID(td), append(chain(4), chain(3)...), true},
		{"another ID, direct", spiffeid.RequireFromPath(td, "/rampart/agent/n1"), chain(3), false},
		{"the server of another trust domain", ServerID(spiffeid.RequireTrustDomainFromString("other.org")), chain(3), false},
	} {
		if err := auth(tc.id, tc.chains); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
