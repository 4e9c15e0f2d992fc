package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

type recordSink struct {
	mu     sync.Mutex
	events []Event
}

func (s *recordSink) Decision(_ context.Context, e Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func request(t *testing.T, caller, target string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "https://payments"+target, nil)
	if caller != "" {
		u, _ := url.Parse(caller)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}
	}
	return r
}

func TestGuard(t *testing.T) {
	sink := &recordSink{}
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments"), Sink: sink})
	var saw *http.Request
	h := g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { saw = r }))

	// No policy yet: default deny.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request(t, "spiffe://example.org/orders", "/payments/1"))
	if w.Code != 403 || saw != nil {
		t.Fatalf("without a policy: %d", w.Code)
	}
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: r\n    callers: [spiffe://example.org/orders]\n    paths: ['/payments/{id}']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.Compile(p)
	g.SetPolicy(eng)

	r := request(t, "spiffe://example.org/orders", "/payments/x/../1")
	r.Header.Set("X-Rampart-Caller", "spiffe://example.org/admin")
	r.Header.Set("X-Rampart-Role", "admin")
	r.Header.Set("X-Forwarded-Client-Cert", "URI=spiffe://example.org/admin")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || saw == nil {
		t.Fatalf("allowed request: %d %s", w.Code, w.Body)
	}
	if got := saw.Header.Get("X-Rampart-Caller"); got != "spiffe://example.org/orders" || saw.Header.Get("X-Rampart-Role") != "" ||
		!strings.Contains(saw.Header.Get("X-Forwarded-Client-Cert"), "URI=spiffe://example.org/orders") || saw.URL.Path != "/payments/1" {
		t.Fatalf("app saw caller %q role %q xfcc %q path %q", got, saw.Header.Get("X-Rampart-Role"), saw.Header.Get("X-Forwarded-Client-Cert"), saw.URL.Path)
	}
	if id, ok := CallerID(saw.Context()); !ok || id.String() != "spiffe://example.org/orders" {
		t.Fatal("caller not in context")
	}

	saw = nil
	w = httptest.NewRecorder()
	h.ServeHTTP(w, request(t, "spiffe://example.org/orders", "/payments/1%2F..%2Fadmin"))
	if w.Code != 400 || saw != nil {
		t.Fatalf("encoded slash: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, request(t, "", "/payments/1"))
	if w.Code != 401 || saw != nil {
		t.Fatalf("no peer certificate: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, request(t, "spiffe://example.org/rogue", "/payments/1"))
	if w.Code != 403 || strings.Contains(w.Body.String(), "callers") || !strings.Contains(w.Body.String(), eng.Version()) {
		t.Fatalf("denial must name the version and nothing of the policy: %s", w.Body)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.events) != 5 || !sink.events[1].Allowed || sink.events[4].Allowed || sink.events[4].Caller != "spiffe://example.org/rogue" {
		t.Fatalf("decision events %+v", sink.events)
	}
}

// Attack: "Connection: X-Rampart-Caller" asks the reverse proxy behind the
// guard to drop the verified identity as a hop-by-hop header.
func TestConnectionHeaderCannotDropIdentity(t *testing.T) {
	var got http.Header
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer app.Close()
	target, _ := url.Parse(app.URL)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments")})
	p, _ := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: r\n    callers: ['*']\n"))
	eng, _ := policy.Compile(p)
	g.SetPolicy(eng)
	r := request(t, "spiffe://example.org/orders", "/x")
	r.Header.Set("Connection", "X-Rampart-Caller, x-forwarded-client-cert, Keep-Alive")
	w := httptest.NewRecorder()
	g.Middleware(rp).ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	if got.Get("X-Rampart-Caller") != "spiffe://example.org/orders" || got.Get("X-Forwarded-Client-Cert") == "" {
		t.Fatalf("the verified identity did not reach the app: %v", got)
	}
}
