package sdktest_test

import (
	"fmt"
	"log"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/sdk/sdktest"
)

// An SVID from the CA verifies against its bundle, as one from an agent
// verifies against the trust domain's; pass both to sdk.WithX509Source.
func ExampleCA() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := sdktest.NewCA(td)
	sv := ca.SVID(spiffeid.RequireFromPath(td, "/orders"))
	id, _, err := x509svid.Verify(sv.Certificates, ca.Bundle())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id)
	// Output: spiffe://example.org/orders
}
