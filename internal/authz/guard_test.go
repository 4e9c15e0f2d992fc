package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/svid"
	"github.com/rampartsec/rampart/sdk/decision"
)

type recordSink struct {
	mu     sync.Mutex
	events []decision.Event
}

func (s *recordSink) Decision(_ context.Context, e decision.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func request(t *testing.T, caller, target string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "https://payments"+target, nil)
	if caller != "" {
		u, _ := url.Parse(caller)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}, SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}}}
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

// Attacks on the guard itself, which every path shares (the proxy's
// HTTP/1.1 forwarder, net/http for HTTP/2 and gRPC, the SDK): each request
// goes through Middleware and a real ReverseProxy to an app that records
// what it was given.
func TestGuardRefusesRequestTricks(t *testing.T) {
	var got *http.Request
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r }))
	defer app.Close()
	target, _ := url.Parse(app.URL)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments")})
	p, err := policy.Parse([]byte(`service: spiffe://example.org/payments
rules:
  - name: no-admin-reads
    action: deny
    callers: ['*']
    methods: [GET]
    paths: [/admin]
  - name: no-deletes
    action: deny
    callers: ['*']
    methods: [DELETE]
  - name: acme-only
    callers: ['*']
    paths: [/tenant]
    when: request.headers["x-tenant"] == "acme"
  - name: office-network-only
    callers: ['*']
    paths: [/office]
    when: request.headers["x-forwarded-for"] == "10.0.0.1" || request.headers["x-real-ip"] == "10.0.0.1" || request.headers["true-client-ip"] == "10.0.0.1"
  - name: rest
    callers: ['*']
    paths: ['/public/*', /admin, /items]
`))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	g.SetPolicy(eng)
	h := g.Middleware(rp)

	for _, tc := range []struct {
		name   string
		method string
		path   string
		header [][2]string
		code   int
		absent []string // headers the app must not see
	}{
		{"HEAD under a GET deny rule", "HEAD", "/admin", nil, 403, nil},
		{"lower-case method past a DELETE deny rule", "delete", "/items", nil, 400, nil},
		{"mixed-case method", "Delete", "/items", nil, 400, nil},
		{"path parameter on a dot segment", "GET", "/public/..;/admin", nil, 400, nil},
		{"path parameter on the target", "GET", "/admin;jsessionid=1", nil, 400, nil},
		{"judged header named in Connection", "GET", "/tenant", [][2]string{{"X-Tenant", "acme"}, {"Connection", "X-Tenant"}}, 403, nil},
		{"second value of a judged header", "GET", "/tenant", [][2]string{{"X-Tenant", "acme"}, {"X-Tenant", "globex"}}, 403, nil},
		// The HTTP/1.1 forwarder already dropped it; over HTTP/2 only the
		// guard stands between the caller's claim and the condition.
		{"caller-supplied X-Forwarded-For", "GET", "/office", [][2]string{{"X-Forwarded-For", "10.0.0.1"}}, 403, nil},
		{"caller-supplied X-Real-IP", "GET", "/office", [][2]string{{"X-Real-IP", "10.0.0.1"}}, 403, nil},
		{"caller-supplied True-Client-IP", "GET", "/office", [][2]string{{"True-Client-IP", "10.0.0.1"}}, 403, nil},
		{"other address and prefix claims", "GET", "/public/x", [][2]string{{"X-Client-IP", "10.0.0.1"}, {"X-Forwarded-Port", "443"}, {"X-Forwarded-Prefix", "/admin"}, {"x-forwarded-ssl", "on"}, {"X-Cluster-Client-IP", "10.0.0.1"}},
			200, []string{"X-Client-Ip", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl", "X-Cluster-Client-Ip"}},
		{"caller-supplied Forwarded", "GET", "/public/x", [][2]string{{"Forwarded", "for=10.0.0.1"}, {"X-Forwarded-Host", "admin.internal"}}, 200, []string{"Forwarded", "X-Forwarded-Host"}},
		{"identity header with underscores", "GET", "/public/x", [][2]string{{"X_Rampart_Caller", "spiffe://example.org/admin"}, {"x_rampart_user", "alice"}, {"X_Forwarded_Client_Cert", "URI=spiffe://example.org/admin"}},
			200, []string{"X_rampart_caller", "X_rampart_user", "X_forwarded_client_cert"}},
		{"method and URL overrides", "POST", "/public/x", [][2]string{{"X-HTTP-Method-Override", "DELETE"}, {"X-HTTP-Method", "DELETE"}, {"X-Method-Override", "DELETE"}, {"X-Original-URL", "/admin"}, {"X-Rewrite-URL", "/admin"}},
			200, []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url"}},
		{"the one tenant allowed", "GET", "/tenant", [][2]string{{"X-Tenant", "acme"}}, 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			r := request(t, "spiffe://example.org/orders", "/")
			r.Method = tc.method
			r.URL = &url.URL{Scheme: "https", Host: "payments", Path: tc.path, RawPath: tc.path}
			for _, kv := range tc.header {
				r.Header[kv[0]] = append(r.Header[kv[0]], kv[1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if tc.code != 200 {
				if got != nil {
					t.Fatal("a refused request reached the app")
				}
				return
			}
			if got == nil {
				t.Fatal("the app saw nothing")
			}
			for _, name := range tc.absent {
				if v, ok := got.Header[name]; ok {
					t.Errorf("%s: %q reached the app", name, v)
				}
			}
			if c := got.Header.Get("X-Rampart-Caller"); c != "spiffe://example.org/orders" {
				t.Errorf("app saw caller %q", c)
			}
		})
	}
}

// The caller's certificate is checked on every request, not only at the
// handshake (HTTP/2 connections and the SDK's keep-alive ones live long):
// expired or revoked -> 401 and the connection closed; past three quarters
// of its life -> served, with Connection: close (a GOAWAY on HTTP/2) so
// the client reconnects with its newer SVID before the old one expires.
func TestGuardChecksTheCallerCertificateOnEveryRequest(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var now time.Time
	revs := &mtls.Revocations{}
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments"), Revocations: revs, Now: func() time.Time { return now }})
	p, _ := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: r\n    callers: ['*']\n"))
	eng, _ := policy.Compile(p)
	g.SetPolicy(eng)
	served := 0
	h := g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	for _, tc := range []struct {
		name    string
		at      time.Duration
		revoked []string
		code    int
		close   bool
		detail  string
	}{
		{"fresh", 10 * time.Minute, nil, 200, false, ""},
		{"just under three quarters", 44 * time.Minute, nil, 200, false, ""},
		{"past three quarters", 46 * time.Minute, nil, 200, true, ""},
		{"expired", 61 * time.Minute, nil, 401, true, "expired"},
		{"revoked", 10 * time.Minute, []string{"9a"}, 401, true, "revoked"},
		{"another serial revoked", 10 * time.Minute, []string{"9b"}, 200, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now = t0.Add(tc.at)
			revs.Set(tc.revoked)
			r := request(t, "spiffe://example.org/orders", "/x")
			leaf := r.TLS.PeerCertificates[0]
			leaf.SerialNumber, leaf.NotBefore, leaf.NotAfter = big.NewInt(0x9a), t0, t0.Add(time.Hour)
			before := served
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code || (w.Header().Get("Connection") == "close") != tc.close || !strings.Contains(w.Body.String(), tc.detail) {
				t.Fatalf("got %d Connection=%q %s; want %d close=%v %q", w.Code, w.Header().Get("Connection"), w.Body, tc.code, tc.close, tc.detail)
			}
			if (served > before) != (tc.code == 200) {
				t.Fatalf("app served=%v for status %d", served > before, tc.code)
			}
		})
	}
}

// SVIDs are backdated by svid.ClockSkew: a short-lived one must not count
// as stale the moment it is issued (every answer would then close its
// connection), nor a long one too late.
func TestPeerStaleCountsFromIssuance(t *testing.T) {
	issued := time.Unix(1_800_000_000, 0)
	var now time.Time
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/p"), Now: func() time.Time { return now }})
	for _, tc := range []struct {
		ttl   time.Duration
		at    time.Duration // after issuance
		stale bool
	}{
		{4 * time.Second, time.Second, false},
		{4 * time.Second, 2900 * time.Millisecond, false},
		{4 * time.Second, 3100 * time.Millisecond, true},
		{time.Hour, 44 * time.Minute, false},
		{time.Hour, 46 * time.Minute, true},
	} {
		leaf := &x509.Certificate{NotBefore: issued.Add(-svid.ClockSkew), NotAfter: issued.Add(tc.ttl)}
		now = issued.Add(tc.at)
		if got := g.PeerStale(leaf); got != tc.stale {
			t.Errorf("TTL %v, %v after issuance: stale=%v, want %v", tc.ttl, tc.at, got, tc.stale)
		}
	}
	// Not backdated and shorter than the backdating (another CA's): its
	// life is counted from NotBefore.
	for _, tc := range []struct {
		at    time.Duration
		stale bool
	}{{14 * time.Second, false}, {16 * time.Second, true}} {
		leaf := &x509.Certificate{NotBefore: issued, NotAfter: issued.Add(20 * time.Second)}
		now = issued.Add(tc.at)
		if got := g.PeerStale(leaf); got != tc.stale {
			t.Errorf("20 s certificate not backdated, %v after NotBefore: stale=%v, want %v", tc.at, got, tc.stale)
		}
	}
}

// A connection that outlives requests ends when its caller's certificate
// is revoked or expires, each recorded as a deny; ended by its owner, it
// records nothing.
func TestWatchPeer(t *testing.T) {
	peer := spiffeid.RequireFromString("spiffe://example.org/orders")
	leaf := func(serial int64, life time.Duration) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(life)}
	}
	sink := &recordSink{}
	revs := &mtls.Revocations{}
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments"), Sink: sink, Revocations: revs})
	lastReason := func() string {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.events) == 0 {
			return ""
		}
		e := sink.events[len(sink.events)-1]
		if e.Allowed || e.Caller != peer.String() {
			t.Fatalf("event %+v", e)
		}
		return e.Reason
	}
	wait := func(ctx context.Context, what string) {
		t.Helper()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the connection's context did not end", what)
		}
	}

	ctx, cancel := g.WatchPeer(context.Background(), peer, []*x509.Certificate{leaf(2, time.Hour)}, "127.0.0.1:1")
	defer cancel()
	revs.Set([]string{"1", "3"}) // another serial: still open
	select {
	case <-ctx.Done():
		t.Fatal("ended by another certificate's revocation")
	case <-time.After(50 * time.Millisecond):
	}
	revs.Set([]string{"2"})
	wait(ctx, "revoked")
	if r := lastReason(); !strings.Contains(r, "revoked") {
		t.Fatalf("reason %q", r)
	}

	ctx, cancel = g.WatchPeer(context.Background(), peer, []*x509.Certificate{leaf(4, 100*time.Millisecond)}, "127.0.0.1:1")
	defer cancel()
	wait(ctx, "expired")
	waitReason := time.Now().Add(5 * time.Second)
	for !strings.Contains(lastReason(), "expired") {
		if time.Now().After(waitReason) {
			t.Fatalf("no expiry recorded: %q", lastReason())
		}
		time.Sleep(time.Millisecond)
	}

	sink.mu.Lock()
	n := len(sink.events)
	sink.mu.Unlock()
	ctx, cancel = g.WatchPeer(context.Background(), peer, []*x509.Certificate{leaf(5, time.Hour)}, "127.0.0.1:1")
	cancel()
	wait(ctx, "cancelled")
	time.Sleep(20 * time.Millisecond)
	sink.mu.Lock()
	m := len(sink.events)
	sink.mu.Unlock()
	if m != n {
		t.Fatalf("a connection its owner closed was recorded (%d events, want %d)", m, n)
	}

	// A certificate already revoked (serial 2, above) ends at once.
	ctx, cancel = g.WatchPeer(context.Background(), peer, []*x509.Certificate{leaf(2, time.Hour)}, "127.0.0.1:1")
	defer cancel()
	wait(ctx, "revoked before")

	// An SVID of a downstream CA (serial 9): revoking the CA ends the
	// connection though the leaf's own serial (8) was never revoked.
	ctx, cancel = g.WatchPeer(context.Background(), peer, []*x509.Certificate{leaf(8, time.Hour), leaf(9, time.Hour)}, "127.0.0.1:1")
	defer cancel()
	revs.Set([]string{"2", "9"})
	wait(ctx, "downstream CA revoked")
}
