package authz

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

// swappableBundles is a bundle source whose set can be replaced (as the
// Workload API replaces it when a federation ends).
type swappableBundles struct {
	set atomic.Pointer[x509bundle.Set]
}

func (s *swappableBundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.set.Load().GetX509BundleForTrustDomain(td)
}

// A caller of a federated trust domain is served while its bundle is
// held; once the federation ends, its open connection is refused and
// closed at the next request. Callers of our own trust domain are not
// affected.
func TestGuardRefusesCallersOfAnEndedFederation(t *testing.T) {
	own, other := spiffeid.RequireTrustDomainFromString("example.org"), spiffeid.RequireTrustDomainFromString("other.example")
	src := &swappableBundles{}
	src.set.Store(x509bundle.NewSet(x509bundle.New(own), x509bundle.New(other)))
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments"), Bundles: src, Now: func() time.Time { return time.Unix(1_800_000_100, 0) }})
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: r\n    callers: ['*', spiffe://other.example/orders]\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.Compile(p)
	g.SetPolicy(eng)
	h := g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	call := func(caller string) *httptest.ResponseRecorder {
		r := request(t, caller, "/x")
		leaf := r.TLS.PeerCertificates[0]
		leaf.NotBefore, leaf.NotAfter = time.Unix(1_800_000_000, 0), time.Unix(1_800_003_600, 0)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := call("spiffe://other.example/orders"); w.Code != 200 {
		t.Fatalf("federated caller: %d %s", w.Code, w.Body)
	}
	src.set.Store(x509bundle.NewSet(x509bundle.New(own)))
	w := call("spiffe://other.example/orders")
	if w.Code != 401 || w.Header().Get("Connection") != "close" || !strings.Contains(w.Body.String(), "other.example is not trusted here") {
		t.Fatalf("after the federation ended: %d Connection=%q %s", w.Code, w.Header().Get("Connection"), w.Body)
	}
	if w := call("spiffe://example.org/orders"); w.Code != 200 {
		t.Fatalf("own caller after the federation ended: %d %s", w.Code, w.Body)
	}
}
