package sdktest

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSVIDVerifiesAgainstBundle(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := NewCA(td)
	id := spiffeid.RequireFromPath(td, "/orders")
	sv := ca.SVID(id)
	got, _, err := x509svid.Verify(sv.Certificates, ca.Bundle())
	if err != nil || got != id {
		t.Fatalf("Verify = %s, %v", got, err)
	}
	if life := time.Until(sv.Certificates[0].NotAfter); life > SVIDLifetime || life < SVIDLifetime-time.Minute {
		t.Fatalf("SVID valid for %v", life)
	}
	// Another CA's SVID, even for the same ID, does not verify.
	if _, _, err := x509svid.Verify(NewCA(td).SVID(id).Certificates, ca.Bundle()); err == nil {
		t.Fatal("an SVID of another CA verified")
	}
}

func TestSVIDRefusesForeignIDs(t *testing.T) {
	ca := NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	for _, id := range []string{"spiffe://other.org/orders", "spiffe://example.org"} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), "is not a workload ID") {
					t.Errorf("SVID(%s): panic %v", id, r)
				}
			}()
			ca.SVID(spiffeid.RequireFromString(id))
		}()
	}
}
