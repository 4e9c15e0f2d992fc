package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
)

// Attacks on the HTTP/1.1 forwarding path: ways a caller (valid SVID,
// limited policy) or a local app could make the proxy and the app behind it
// disagree about a request, or get past the guard. Each test is an attack
// and asserts it is stopped; those from the review of this path that found
// a hole failed before their fix.

const (
	attackService = "spiffe://example.org/payments"
	attackCaller  = "spiffe://example.org/orders"
	attackForged  = "spiffe://example.org/admin"
)

// newGuardedFwd runs the forwarder as an inbound listener does, with a real
// authz.Guard and the given policy rules, in front of h. TLS is skipped: each
// connection is served as if its verified peer were attackCaller.
func newGuardedFwd(t *testing.T, rules string, h http.Handler) *fwd {
	t.Helper()
	return newGuardedFwdWith(t, rules, h, authz.GuardConfig{}, nil)
}

// newGuardedFwdWith is newGuardedFwd with the guard's configuration (its
// Service is set here) and the caller's certificate (nil: attackCaller's,
// valid for the next hour).
func newGuardedFwdWith(t *testing.T, rules string, h http.Handler, cfg authz.GuardConfig, leaf *x509.Certificate) *fwd {
	t.Helper()
	p, err := policy.Parse([]byte("service: " + attackService + "\nrules:\n" + rules))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Service = spiffeid.RequireFromString(attackService)
	g := authz.NewGuard(cfg)
	g.SetPolicy(eng)

	// The outbound harness's app and forwarder, made inbound: given the
	// guard and served from a listener of our own that hands it the
	// verified peer.
	x := newFwd(t, h)
	x.f.guard = g
	if leaf == nil {
		u, _ := url.Parse(attackCaller)
		leaf = &x509.Certificate{URIs: []*url.URL{u}, SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	}
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	x.serveOn(t, func(ln net.Listener) {
		acceptLoop(ln, func(c net.Conn) {
			defer c.Close()
			x.f.serve(context.Background(), c, nil, cs)
		})
	})
	return x
}

// dial opens a client connection owned by t (x.raw belongs to the parent
// test, which subtests must not use).
func dial(t *testing.T, x *fwd) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", x.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

type gotResp struct {
	code  int
	body  string
	close bool
}

// readAllResps reads responses until the connection ends.
func readAllResps(br *bufio.Reader) []gotResp {
	var out []gotResp
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		out = append(out, gotResp{resp.StatusCode, string(b), resp.Close})
		if resp.Close {
			return out
		}
	}
}

// seen records what the app received.
type seen struct {
	mu   sync.Mutex
	reqs []string
}

func (s *seen) add(v string) {
	s.mu.Lock()
	s.reqs = append(s.reqs, v)
	s.mu.Unlock()
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// Framing tricks of RFC 9112 sections 6 and 11 never make the app see a
// request the proxy did not see (and, inbound, judge): the proxy parses
// with net/http and re-frames every message, so whatever the app parses is
// exactly what the proxy parsed. Invariant checked: every request the app
// handled was answered to the client as its own response, and "/smuggled"
// never reaches the app hidden inside another message.
func TestH1AttackFramingNeverDesyncs(t *testing.T) {
	inner := "GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"
	for _, tc := range []struct {
		name, req string
	}{
		{"CL.TE", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s", 5+len(inner), inner)},
		{"TE.CL", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s", 5+len(inner), inner)},
		{"CL hides a request in the body", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)},
		{"duplicate equal Content-Length", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s", len(inner), len(inner), inner)},
		{"Content-Length list", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: %d, %d\r\n\r\n%s", len(inner), len(inner), inner)},
		{"conflicting Content-Length", "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nContent-Length: " + fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"Content-Length with sign", "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: +" + fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"negative Content-Length", "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: -1\r\n\r\n" + inner},
		{"TE obs-folded", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + inner},
		{"TE chunked then identity", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + inner},
		{"two TE fields", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + inner},
		{"TE xchunked", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + inner},
		{"TE in HTTP/1.0 with CL", fmt.Sprintf("POST /a HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s", 5+len(inner), inner)},
		{"TE in HTTP/1.0 without CL", "POST /a HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner},
		{"bare LF line ends", "GET /a HTTP/1.1\nHost: svc\n\n" + inner},
		{"bare CR in a header", "GET /a HTTP/1.1\r\nHost: svc\r\nX-A: 1\rContent-Length: 38\r\n\r\n" + inner},
		{"NUL in a header value", "GET /a HTTP/1.1\r\nHost: svc\r\nX-A: 1\x00\r\n\r\n" + inner},
		{"space-led first header line", "GET /a HTTP/1.1\r\n Content-Length: 38\r\nHost: svc\r\n\r\n" + inner},
		{"chunk size 0x", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + inner},
		{"chunk size overflow", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + inner},
		{"chunk size bare LF", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + inner},
		{"chunk data bare LF", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n" + inner},
		{"chunk extension with bare LF", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n" + inner},
		{"chunk data longer than size", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n" + inner},
		{"chunked with quoted extension", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"a\r\nb\"\r\nhello\r\n0\r\n\r\n" + inner},
		{"pipelined after a body", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello%s", inner)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := &seen{}
			x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.ReadAll(r.Body); err != nil {
					return // a body the proxy cut short: its client got a 502
				}
				app.add(r.URL.Path)
				io.WriteString(w, r.URL.Path)
			}))
			c, br := dial(t, x)
			io.WriteString(c, tc.req)
			c.(*net.TCPConn).CloseWrite()
			resps := readAllResps(br)
			answered := map[string]int{}
			for _, r := range resps {
				if r.code == 200 {
					answered[r.body]++
				}
			}
			got := app.list()
			t.Logf("app handled %v; client got %+v", got, resps)
			for _, p := range got {
				if answered[p] == 0 {
					t.Errorf("the app handled %s, which the client got no answer for (app saw %v, client got %v)", p, got, resps)
				}
				answered[p]--
			}
		})
	}
}

// Identity headers in any case are stripped; an obs-fold cannot smuggle one
// in (it becomes part of the previous field's value); a repeated one is
// dropped whole.
func TestH1AttackIdentityHeaderCaseVariantsStripped(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	for _, tc := range []struct{ name, fields string }{
		{"lower case", "x-rampart-caller: " + attackForged + "\r\nx-forwarded-client-cert: URI=" + attackForged + "\r\n"},
		{"upper case", "X-RAMPART-CALLER: " + attackForged + "\r\nX-RAMPART-USER: alice\r\n"},
		{"repeated", "X-Rampart-Caller: " + attackForged + "\r\nX-Rampart-Caller: " + attackForged + "\r\n"},
		{"other X-Rampart- names", "X-Rampart-Role: admin\r\n"},
		{"obs-fold", "X-A: 1\r\n X-Rampart-Caller: " + attackForged + "\r\n"},
		{"bare LF", "X-A: 1\nX-Rampart-Caller: " + attackForged + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\n"+tc.fields+"\r\n")
			if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			h := <-hdrs
			if v := h.Values("X-Rampart-Caller"); len(v) != 1 || v[0] != attackCaller {
				t.Errorf("X-Rampart-Caller %q, want only the verified %s", v, attackCaller)
			}
			if v := h.Values("X-Rampart-User"); len(v) != 0 {
				t.Errorf("X-Rampart-User %q reached the app without a token", v)
			}
			if v := h.Values("X-Rampart-Role"); len(v) != 0 {
				t.Errorf("X-Rampart-Role %q reached the app", v)
			}
			if v := h.Values("X-Forwarded-Client-Cert"); len(v) != 1 || strings.Contains(v[0], attackForged) {
				t.Errorf("X-Forwarded-Client-Cert %q", v)
			}
		})
	}
}

// Identity header names spelt with "_" for "-" (X_Rampart_Caller): CGI-style
// stacks (WSGI, Rack, PHP) map both spellings to HTTP_X_RAMPART_CALLER, so a
// forged one could win over the real one. The guard drops every name with
// "_", as nginx does by default.
func TestH1AttackIdentityHeaderUnderscoreVariants(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	cgi := func(name string) string { return strings.ToUpper(strings.ReplaceAll(name, "_", "-")) }
	for _, tc := range []struct{ name, fields string }{
		{"caller", "X_Rampart_Caller: " + attackForged + "\r\n"},
		{"user without a token", "x_rampart_user: alice\r\n"},
		{"mixed", "X-Rampart_Caller: " + attackForged + "\r\n"},
		{"xfcc", "X_Forwarded_Client_Cert: By=" + attackService + ";URI=" + attackForged + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\n"+tc.fields+"\r\n")
			if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			for k, v := range <-hdrs {
				n := cgi(k)
				if k != http.CanonicalHeaderKey(n) && (strings.HasPrefix(n, "X-RAMPART-") || n == "X-FORWARDED-CLIENT-CERT") {
					t.Errorf("app received %s: %q, which a CGI-style app reads as %s", k, v, "HTTP_"+strings.ReplaceAll(n, "-", "_"))
				}
			}
		})
	}
}

// "Connection: X-Rampart-Caller" must not make the verified identity vanish
// as a hop-by-hop header on the way to the app.
func TestH1AttackConnectionCannotDropIdentity(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	for _, conn := range []string{
		"X-Rampart-Caller, x-forwarded-client-cert",
		"keep-alive\r\nConnection: x-rampart-caller",
		" X-Rampart-Caller , X-Forwarded-Client-Cert ",
		"X-RAMPART-CALLER,X-FORWARDED-CLIENT-CERT,X-Rampart-User",
	} {
		c, br := dial(t, x)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\nConnection: "+conn+"\r\n\r\n")
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("%q: %d %s", conn, resp.StatusCode, body)
		}
		h := <-hdrs
		if h.Get("X-Rampart-Caller") != attackCaller || h.Get("X-Forwarded-Client-Cert") == "" {
			t.Errorf("Connection: %q: the verified identity did not reach the app: %v", conn, h)
		}
	}
}

const tenantRule = "  - name: acme-only\n    callers: ['*']\n    when: 'request.headers[\"x-tenant\"] == \"acme\"'\n"

// A header named in Connection is hop-by-hop and dropped on the way: had the
// policy judged it first, the app would never see the value that was
// allowed. Hop-by-hop headers go before the guard decides.
func TestH1AttackConnectionDropsJudgedHeader(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, tenantRule, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\nX-Tenant: acme\r\nConnection: X-Tenant\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if resp.StatusCode != 200 {
		return // refused: fine
	}
	if got := (<-hdrs).Values("X-Tenant"); !slices.Equal(got, []string{"acme"}) {
		t.Fatalf("policy allowed X-Tenant: acme, the app saw X-Tenant %q", got)
	}
}

// A repeated header reaches the app as all its values ("acme, globex"):
// conditions judge all of them, not the first.
func TestH1AttackDuplicateJudgedHeader(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, tenantRule, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	for _, tc := range []struct{ name, fields string }{
		{"repeated", "X-Tenant: acme\r\nX-Tenant: globex\r\n"},
		{"case variant", "X-Tenant: acme\r\nx-tenant: globex\r\n"},
		{"underscore variant", "X-Tenant: acme\r\nX_Tenant: globex\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\n"+tc.fields+"\r\n")
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != 200 {
				return // refused: fine
			}
			h := <-hdrs
			var vals []string
			for k, v := range h {
				if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Tenant") {
					vals = append(vals, v...)
				}
			}
			if !slices.Equal(vals, []string{"acme"}) {
				t.Fatalf("policy judged X-Tenant: acme, the app received %q", vals)
			}
		})
	}
}

// "delete" is not DELETE to the policy, but Django, Werkzeug/Flask and
// others upper-case the method before routing: methods not in upper case are
// refused.
func TestH1AttackLowercaseMethodEvadesDenyRule(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: no-delete\n    action: deny\n    callers: ['*']\n    methods: [DELETE]\n    paths: ['/items/*']\n"+
		"  - name: all\n    callers: ['*']\n",
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			app.add(strings.ToUpper(r.Method) + " " + r.URL.Path) // as Django's request.method
		}))
	for _, m := range []string{"DELETE", "delete", "Delete"} {
		c, br := dial(t, x)
		fmt.Fprintf(c, "%s /items/1 HTTP/1.1\r\nHost: svc\r\n\r\n", m)
		readResp(t, br, m)
	}
	if got := app.list(); len(got) != 0 {
		t.Fatalf("a denied DELETE reached the app: %v", got)
	}
}

// Go's ServeMux and most frameworks run the GET handler for HEAD (side
// effects, headers): a rule about GET is a rule about HEAD.
func TestH1AttackHeadEvadesGetDenyRule(t *testing.T) {
	app := &seen{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /secret", func(w http.ResponseWriter, r *http.Request) {
		app.add(r.Method + " " + r.URL.Path)
		w.Header().Set("X-Secret", "42")
	})
	x := newGuardedFwd(t, "  - name: no-secret\n    action: deny\n    callers: ['*']\n    methods: [GET]\n    paths: ['/secret']\n"+
		"  - name: all\n    callers: ['*']\n", mux)
	c, br := dial(t, x)
	io.WriteString(c, "HEAD /secret HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, _ := readResp(t, br, "HEAD")
	if got := app.list(); len(got) != 0 || resp.Header.Get("X-Secret") != "" {
		t.Fatalf("GET /secret is denied, yet HEAD ran its handler (%v, X-Secret %q)", got, resp.Header.Get("X-Secret"))
	}
}

// "/public/..;/admin": Tomcat, Spring and other servlet containers strip
// ";params" and resolve it to /admin. Paths with ";" are refused.
func TestH1AttackPathParameterDotSegment(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: public\n    callers: ['*']\n    paths: ['/public/*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.add(r.URL.EscapedPath())
	}))
	for _, p := range []string{"/public/..;/admin", "/public/%2e%2e;/admin", "/public/..;jsessionid=x/admin", "/public/x/.;/../..;/admin"} {
		c, br := dial(t, x)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: svc\r\n\r\n", p)
		readResp(t, br, "GET")
	}
	if got := app.list(); len(got) != 0 {
		t.Fatalf("paths a servlet container resolves to /admin were allowed as /public/*: %v", got)
	}
}

// Request-target forms: absolute form, authority-less "//", opaque form,
// asterisk form, a "#" (not a fragment in a request), encoded dots and
// slashes. What the app receives is what the guard judged.
func TestH1AttackRequestTargetForms(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: public\n    callers: ['*']\n    paths: ['/public/*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.add(r.RequestURI)
	}))
	for _, tc := range []struct {
		target string
		code   int
	}{
		{"http://svc/admin", 403},
		{"http://svc/public/../admin", 403},
		{"https://other:443/public/%2e%2e/admin", 403},
		{"//public/../admin", 403},
		{"http:admin", 400},
		{"http:/public/../admin", 403},
		{"/public/x#/../../admin", 403},
		{"/public/%2e%2e/admin", 403},
		{"/public/%2fadmin", 400},
		{"/public/..%5cadmin", 400},
		{"/public/x/..\\..\\admin", 400},
		{"/public/%00", 400},
		{"*", 400},
		{"http://other/public/x?q=/admin", 200},
	} {
		c, br := dial(t, x)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: svc\r\n\r\n", tc.target)
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.target, resp.StatusCode, body, tc.code)
		}
	}
	c, br := dial(t, x)
	io.WriteString(c, "OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, _ := readResp(t, br, "OPTIONS"); resp.StatusCode == 200 {
		t.Errorf("OPTIONS * was forwarded without a path rule allowing it")
	}
	if got := app.list(); !slices.Equal(got, []string{"/public/x?q=/admin"}) {
		t.Fatalf("app saw %q, want only the allowed /public/x?q=/admin in origin form", got)
	}
}

// A chunked request's trailer section arrives after the decision and could
// carry forged identity or framing fields (http.ReadRequest merges every
// trailer field): request trailers are not forwarded.
func TestH1AttackTrailersCarryForbiddenFields(t *testing.T) {
	trailers := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		trailers <- r.Trailer.Clone()
	}))
	for _, tc := range []struct{ name, declared, fields string }{
		{"undeclared identity", "", "X-Rampart-Caller: " + attackForged + "\r\nX-Rampart-User: alice\r\n"},
		{"declared identity", "Trailer: X-Rampart-Caller, X-Forwarded-Client-Cert\r\n", "X-Rampart-Caller: " + attackForged + "\r\nX-Forwarded-Client-Cert: URI=" + attackForged + "\r\n"},
		{"framing and routing", "", "Content-Length: 99\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nAuthorization: Bearer forged\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			io.WriteString(c, "POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"+tc.declared+"\r\n5\r\nhello\r\n0\r\n"+tc.fields+"\r\n")
			if resp, _ := readResp(t, br, "POST"); resp.StatusCode != 200 {
				return // refused: fine
			}
			for k, v := range <-trailers {
				switch {
				case len(v) == 0:
				case authzIdentityName(k), k == "Content-Length", k == "Transfer-Encoding", k == "Host", k == "Authorization":
					t.Errorf("trailer %s: %q reached the app", k, v)
				}
			}
		})
	}
}

func authzIdentityName(k string) bool {
	return strings.HasPrefix(k, "X-Rampart-") || k == authz.HeaderXFCC
}

// Upgrade: h2c would hand the caller an HTTP/2 connection on which every
// later request reaches the app without the guard: h2c upgrades and
// HTTP2-Settings are never forwarded (this app is a lenient one that would
// accept them).
func TestH1AttackH2CUpgradeTunnelsPastTheGuard(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: public\n    callers: ['*']\n    methods: [GET]\n    paths: ['/public']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.add("judged " + r.URL.Path + " Upgrade=" + r.Header.Get("Upgrade") + " HTTP2-Settings=" + r.Header.Get("Http2-Settings"))
		if !strings.EqualFold(r.Header.Get("Upgrade"), "h2c") {
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		brw.Flush()
		// Stand-in for the HTTP/2 server the connection now belongs to:
		// it serves requests the guard never saw.
		for {
			req, err := http.ReadRequest(brw.Reader)
			if err != nil {
				return
			}
			app.add("unjudged " + req.URL.Path + " caller=" + req.Header.Get("X-Rampart-Caller"))
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			brw.Flush()
		}
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET /public HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err == nil && resp.StatusCode == 101 {
		io.WriteString(c, "GET /admin HTTP/1.1\r\nHost: svc\r\nX-Rampart-Caller: "+attackForged+"\r\n\r\n")
		readResp(t, br, "GET")
	}
	for _, s := range app.list() {
		if strings.Contains(s, "Upgrade=h2c") || strings.HasPrefix(s, "unjudged") {
			t.Errorf("app: %s", s)
		}
	}
}

// A tunnel needs the app's 101 for the protocol asked for: an upgrade the
// app declines leaves the connection an HTTP one, whose next request is
// judged; a 101 for another protocol, or to a request that asked for none,
// is refused.
func TestH1AttackUpgradeNeedsMatching101(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: public\n    callers: ['*']\n    paths: ['/public/*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.add(r.URL.Path)
		switch r.URL.Path {
		case "/public/decline":
			w.WriteHeader(http.StatusUpgradeRequired)
			return
		case "/public/other", "/public/unasked":
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
		brw.Flush()
		if line, _ := brw.ReadString('\n'); line != "" {
			app.add("tunnel: " + line)
		}
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET /public/decline HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"+
		"GET /admin HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 426 {
		t.Fatalf("declined upgrade: %d", resp.StatusCode)
	}
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 403 {
		t.Fatalf("request after a declined upgrade: %d, want the guard's 403", resp.StatusCode)
	}
	for _, tc := range []struct{ path, hdr string }{
		{"/public/other", "Connection: Upgrade\r\nUpgrade: websocket\r\n"},
		{"/public/unasked", ""},
	} {
		c, br := dial(t, x)
		io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: svc\r\n"+tc.hdr+"\r\nGET /admin HTTP/1.1\r\nHost: svc\r\n\r\n")
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 502 || !resp.Close {
			t.Fatalf("%s: 101 for an unasked protocol: %d close=%v", tc.path, resp.StatusCode, resp.Close)
		}
	}
	for _, s := range app.list() {
		if strings.HasPrefix(s, "tunnel") || s == "/admin" {
			t.Errorf("app: %q", s)
		}
	}
}

// A refused request's body is never parsed as a request, with or without
// Expect: 100-continue (and no 100 is sent before the refusal); a refused
// request without a body leaves the connection usable.
func TestH1AttackRefusalNeverParsesTheBody(t *testing.T) {
	app := &seen{}
	x := newGuardedFwd(t, "  - name: public\n    callers: ['*']\n    paths: ['/public/*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		app.add(r.URL.Path)
		io.WriteString(w, r.URL.Path)
	}))
	inner := "GET /public/smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"
	c, br := dial(t, x)
	fmt.Fprintf(c, "POST /admin HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)
	if resps := readAllResps(br); len(resps) != 1 || resps[0].code != 403 || !resps[0].close {
		t.Fatalf("denied upload: %+v", resps)
	}

	c, br = dial(t, x)
	fmt.Fprintf(c, "POST /admin HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(inner))
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 403") {
		t.Fatalf("denied 100-continue upload: first line %q", line)
	}

	c, br = dial(t, x)
	io.WriteString(c, "GET /admin HTTP/1.1\r\nHost: svc\r\n\r\nGET /public/after HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 403 {
		t.Fatalf("denied GET: %d", resp.StatusCode)
	}
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "/public/after" {
		t.Fatalf("after a denied GET: %d %q", resp.StatusCode, body)
	}
	if got := app.list(); !slices.Equal(got, []string{"/public/after"}) {
		t.Fatalf("app saw %v", got)
	}
}

// Whitespace between a field name and the colon (RFC 9112 5.1: MUST be
// refused; textproto accepts it, keeping "Name " as a name): refused, as
// net/http's server does, instead of the field being silently dropped.
func TestH1AttackWhitespaceBeforeColon(t *testing.T) {
	var reached seen
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.add(r.URL.Path) }))
	for _, tc := range []struct{ name, req string }{
		{"plain field", "GET /a HTTP/1.1\r\nHost: svc\r\nX-Foo : bar\r\n\r\n"},
		{"Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"},
		{"Content-Length", "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length : 5\r\n\r\nhello"},
		{"tab before colon", "GET /a HTTP/1.1\r\nHost: svc\r\nX-Foo\t: bar\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			io.WriteString(c, tc.req)
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != 400 {
				t.Errorf("got %d, want 400", resp.StatusCode)
			}
		})
	}
	if got := reached.list(); len(got) != 0 {
		t.Errorf("requests with a space before a colon reached the app: %v", got)
	}
}

// The upstream's reason phrase is never copied: a bare CR in it would reach
// the client, which a lenient parser takes for a line end (a header injected
// by the upstream, which outbound is a remote service).
func TestH1AttackStatusLineInjection(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\rSet-Cookie: session=attacker\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		brw.Flush()
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(strings.TrimSuffix(line, "\r\n"), "\r\n\x00") {
		t.Fatalf("status line with a bare CR reached the client: %q", line)
	}
}

// Response heads from the upstream are bounded (maxHeaderBytes, as request
// heads are), so an upstream cannot make the proxy buffer any amount.
func TestH1AttackUnboundedResponseHead(t *testing.T) {
	const size = 11 << 20
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\n")
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		for n := 0; n < size; n += len(line) {
			if _, err := brw.WriteString(line); err != nil {
				return
			}
		}
		brw.WriteString("Content-Length: 0\r\nConnection: close\r\n\r\n")
		brw.Flush()
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 502 {
		t.Fatalf("an %d MiB response head was forwarded (%d, %d X-Pad fields)", size>>20, resp.StatusCode, len(resp.Header["X-Pad"]))
	}
}

// Bytes the upstream sent after a complete response must never be read as
// the response to the client's next request (responses would be off by
// one): the upstream connection is dropped instead.
func TestH1AttackStrayUpstreamBytesAnswerNextRequest(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		if r.URL.Path == "/first" {
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" +
				"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
		} else {
			body := "real " + r.URL.Path
			fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		brw.Flush()
		for {
			req, err := http.ReadRequest(brw.Reader)
			if err != nil {
				return
			}
			body := "real " + req.URL.Path
			fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			brw.Flush()
		}
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "first" {
		t.Fatalf("first: %q", body)
	}
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "real /second" {
		t.Fatalf("second request answered with %q, want the app's answer to it", body)
	}
}

// Resource bounds on the request side: a head of many small fields is cut
// at maxHeaderBytes, an endless chunk extension or trailer section fails
// instead of being buffered, and neither hangs.
func TestH1AttackRequestResourceBounds(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			w.WriteHeader(400)
		}
	}))
	var many strings.Builder
	for many.Len() < maxHeaderBytes+8<<10 {
		fmt.Fprintf(&many, "X-%d: v\r\n", many.Len())
	}
	for _, tc := range []struct {
		name, head string
		body       io.Reader
		ok         func(int) bool
	}{
		{"many header fields", "GET / HTTP/1.1\r\nHost: svc\r\n" + many.String() + "\r\n", nil, func(c int) bool { return c == 431 }},
		{"endless chunk extension", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n",
			io.MultiReader(strings.NewReader("1;"), strings.NewReader(strings.Repeat("a", 1<<20))), func(c int) bool { return c >= 400 }},
		{"endless trailer", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n",
			io.MultiReader(strings.NewReader("1\r\na\r\n0\r\n"), strings.NewReader(strings.Repeat("X-T: aaaaaaaa\r\n", 1<<16))), func(c int) bool { return c >= 400 }},
		{"many tiny chunks of extension only", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n",
			strings.NewReader(strings.Repeat("1;"+strings.Repeat("e", 3000)+"\r\na\r\n", 2000)), func(c int) bool { return c >= 400 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, x)
			go func() {
				io.WriteString(c, tc.head)
				if tc.body != nil {
					io.Copy(c, tc.body)
				}
			}()
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer and no close within the client's deadline: %v", err)
			}
			if err != nil {
				return // the proxy closed the connection: bounded too
			}
			if !tc.ok(resp.StatusCode) {
				t.Fatalf("got %d", resp.StatusCode)
			}
		})
	}
}

// An absolute-form target's authority replaces the Host line (RFC 9112
// 3.2.2), and http.ReadRequest removes Host from req.Header, so no condition
// can judge a Host line the app is not sent: a rule on
// request.headers["host"] never matches, on either form.
func TestH1AttackAbsoluteFormHostNotJudgedApart(t *testing.T) {
	hosts := make(chan string, 1)
	x := newGuardedFwd(t, "  - name: public-vhost\n    callers: ['*']\n    when: 'request.headers[\"host\"] == \"public.svc\"'\n",
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host }))
	for _, req := range []string{
		"GET http://admin.svc/x HTTP/1.1\r\nHost: public.svc\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: public.svc\r\n\r\n",
	} {
		c, br := dial(t, x)
		io.WriteString(c, req)
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode == 200 {
			if h := <-hosts; h != "public.svc" {
				t.Errorf("%q: the policy judged Host public.svc, the app was sent Host %s", req, h)
			}
		}
	}
}

// Headers that make app stacks act on another method or path than the
// request line's (X-HTTP-Method-Override: POST judged, DELETE run;
// X-Original-URL: /public judged, /admin routed) never reach the app.
func TestH1AttackOverrideHeadersReachApp(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: no-delete\n    action: deny\n    callers: ['*']\n    methods: [DELETE]\n"+
		"  - name: public\n    callers: ['*']\n    paths: ['/public/*']\n",
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hdrs <- r.Header.Clone() }))
	for _, tc := range []struct{ req, field string }{
		{"POST /public/x HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nX-HTTP-Method-Override: DELETE\r\n\r\n", "X-Http-Method-Override"},
		{"POST /public/x HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nX-HTTP-Method: DELETE\r\n\r\n", "X-Http-Method"},
		{"POST /public/x HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nX-Method-Override: DELETE\r\n\r\n", "X-Method-Override"},
		{"GET /public/x HTTP/1.1\r\nHost: svc\r\nX-Original-URL: /admin\r\n\r\n", "X-Original-Url"},
		{"GET /public/x HTTP/1.1\r\nHost: svc\r\nX-Rewrite-URL: /admin\r\n\r\n", "X-Rewrite-Url"},
		{"GET /public/x HTTP/1.1\r\nHost: svc\r\nX_Forwarded_For: 127.0.0.1\r\n\r\n", "X_forwarded_for"},
	} {
		c, br := dial(t, x)
		io.WriteString(c, tc.req)
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
			continue // refused: fine
		}
		if v := (<-hdrs).Values(tc.field); len(v) > 0 {
			t.Errorf("%s: %q reached the app after the guard judged the request line", tc.field, v)
		}
	}
}

// Informational responses are not passed on to HTTP/1.0 clients, which
// cannot tell them from the final response (RFC 9110 15.2).
func TestH1AttackInformationalToHTTP10Client(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	}))
	c, br := dial(t, x)
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 client got %d %q first", resp.StatusCode, body)
	}
}

// A connection outlives the handshake that checked its certificate: a
// caller whose SVID expires, or is revoked, on a keep-alive connection is
// refused at its next request and the connection closed. A client that
// plays by the rules never gets there: past three quarters of its
// certificate's life its answers come with Connection: close, so it
// reconnects with its newer SVID (agents rotate at 40-50% of the life).
func TestH1AttackExpiredOrRevokedCallerOnOpenConnection(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	var mu sync.Mutex
	now := t0.Add(10 * time.Minute)
	setNow := func(d time.Duration) { mu.Lock(); now = t0.Add(d); mu.Unlock() }
	revs := &mtls.Revocations{}
	u, _ := url.Parse(attackCaller)
	leaf := &x509.Certificate{URIs: []*url.URL{u}, SerialNumber: big.NewInt(0x9a), NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	var reached atomic.Int64
	x := newGuardedFwdWith(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }),
		authz.GuardConfig{Revocations: revs, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}, leaf)
	get := func(c net.Conn, br *bufio.Reader) (*http.Response, string) {
		t.Helper()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		return readResp(t, br, "GET")
	}

	c, br := dial(t, x)
	if resp, _ := get(c, br); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("fresh certificate: %d close=%v", resp.StatusCode, resp.Close)
	}
	setNow(46 * time.Minute) // past three quarters of the hour
	if resp, _ := get(c, br); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("ageing certificate: %d close=%v, want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("the connection stayed open after Connection: close: %v", err)
	}

	// A client that ignores Connection: close keeps its connection open
	// past expiry, or past its revocation: the same connection is refused.
	for _, tc := range []struct {
		name, want string
		change     func()
	}{
		{"expired", "expired", func() { setNow(61 * time.Minute) }},
		{"revoked", "revoked", func() { revs.Set([]string{"9a"}) }},
	} {
		setNow(10 * time.Minute)
		c, br = dial(t, x)
		if resp, _ := get(c, br); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("%s: before: %d close=%v", tc.name, resp.StatusCode, resp.Close)
		}
		before := reached.Load()
		tc.change()
		resp, body := get(c, br)
		if resp.StatusCode != 401 || !resp.Close || !strings.Contains(body, tc.want) {
			t.Fatalf("%s certificate on an open connection: %d close=%v %s", tc.name, resp.StatusCode, resp.Close, body)
		}
		if n := reached.Load() - before; n != 0 {
			t.Fatalf("%s: %d requests reached the app", tc.name, n)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("%s: the connection stayed open after the refusal: %v", tc.name, err)
		}
	}
}

// An upstream cannot keep a request waiting with an endless run of 1xx
// responses: up to maxInformational are relayed, one more and the client
// gets 502.
func TestH1AttackEndlessInformationalResponses(t *testing.T) {
	for _, n := range []int{maxInformational, maxInformational + 1} {
		x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			for range n {
				brw.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			}
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfinal")
			brw.Flush()
		}))
		c, br := dial(t, x)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		relayed := 0
		for {
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("%d informational: %v", n, err)
			}
			if resp.StatusCode == http.StatusEarlyHints {
				relayed++
				continue
			}
			want := 200
			if n > maxInformational {
				want = 502
			}
			if resp.StatusCode != want || relayed > maxInformational {
				t.Fatalf("%d informational from the upstream: %d relayed, then %d; want at most %d, then %d", n, relayed, resp.StatusCode, maxInformational, want)
			}
			break
		}
	}
}

// A tunnel (after an upgrade) carries no more requests to check the caller
// at: it is closed when the caller's certificate is revoked or expires,
// instead of living on as long as the client keeps it open.
func TestH1AttackTunnelOutlivesRevocationOrExpiry(t *testing.T) {
	echo := echoUpgradeApp()
	u, _ := url.Parse(attackCaller)
	for _, tc := range []struct {
		name string
		life time.Duration
		end  func(*mtls.Revocations)
	}{
		{"revoked", time.Hour, func(r *mtls.Revocations) { r.Set([]string{"7b"}) }},
		{"expired", 1500 * time.Millisecond, func(*mtls.Revocations) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			revs := &mtls.Revocations{}
			leaf := &x509.Certificate{URIs: []*url.URL{u}, SerialNumber: big.NewInt(0x7b), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(tc.life)}
			x := newGuardedFwdWith(t, "  - name: all\n    callers: ['*']\n", echo, authz.GuardConfig{Revocations: revs}, leaf)
			c, br := dial(t, x)
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello\n")
			if resp, err := http.ReadResponse(br, &http.Request{Method: "GET"}); err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			if line, err := br.ReadString('\n'); line != "echo: hello\n" {
				t.Fatalf("through the tunnel: %q %v", line, err)
			}
			tc.end(revs)
			// dial's 10 s deadline: a tunnel left open fails with a timeout.
			if _, err := br.ReadString('\n'); err != io.EOF {
				t.Fatalf("the tunnel stayed open after the certificate was %s: %v", tc.name, err)
			}
		})
	}
}
