package ids

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// MaxDirectChain is the length of a verified chain of a certificate the
// server's CA signed itself: leaf, intermediate, trust anchor. A chain of
// a certificate signed under a downstream CA is longer.
const MaxDirectChain = 3

// DirectChain says whether one of the verified chains is of a certificate
// the server's CA signed itself (no downstream CA in between).
func DirectChain(chains [][]*x509.Certificate) bool {
	for _, c := range chains {
		if len(c) <= MaxDirectChain {
			return true
		}
	}
	return false
}

// AuthorizeServer authorizes the Rampart server of td: its SPIFFE ID, on
// a certificate its own CA signed. A downstream CA (a nested server's)
// may sign any SPIFFE ID of the trust domain, the server's too; agents,
// proxies and SDK services must not take such a certificate for the
// control plane (red team: a downstream CA's holder served a fake server,
// took an agent's join token and could have pushed it a bundle).
func AuthorizeServer(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	want := ServerID(td)
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if id != want {
			return fmt.Errorf("ids: unexpected ID %q, want the server %q", id, want)
		}
		if !DirectChain(chains) {
			return fmt.Errorf("ids: %s presented a certificate signed under a downstream CA, not by the server's own intermediate", id)
		}
		return nil
	}
}
