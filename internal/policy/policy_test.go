package policy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const example = `service: spiffe://example.org/payments
rules:
  - name: block-batch-admin
    action: deny
    callers: ["spiffe://example.org/batch/*"]
    paths: [/admin/*]
  - name: orders-reads
    callers: [spiffe://example.org/orders]
    methods: [GET, HEAD]
    paths: ["/payments/{id}", /health]
  - name: batch-everything
    callers: ["spiffe://example.org/batch/*"]
  - name: anyone-health
    callers: ["*"]
    methods: [GET]
    paths: [/health/]
  - name: owner-only
    callers: [spiffe://example.org/gateway]
    paths: ["/users/{uid}/payments/*"]
    when: 'request.params.uid == user.sub'
  - name: tenant-header
    callers: [spiffe://example.org/reports]
    when: 'request.headers["x-tenant"] == "a"'
`

func mustEngine(t testing.TB, src string) *Engine {
	t.Helper()
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func req(caller, method, path string) *Request {
	var id spiffeid.ID
	if caller != "" {
		id = spiffeid.RequireFromString(caller)
	}
	return &Request{Caller: id, Method: method, Path: path}
}

func TestDecide(t *testing.T) {
	e := mustEngine(t, example)
	tests := []struct {
		name     string
		r        *Request
		allow    bool
		wantRule string
	}{
		{"exact caller, param path", req("spiffe://example.org/orders", "GET", "/payments/42"), true, "orders-reads"},
		{"exact caller, literal path", req("spiffe://example.org/orders", "HEAD", "/health"), true, "orders-reads"},
		{"method not allowed", req("spiffe://example.org/orders", "POST", "/payments/42"), false, ""},
		{"param needs a segment", req("spiffe://example.org/orders", "GET", "/payments/"), false, ""},
		{"param is one segment", req("spiffe://example.org/orders", "GET", "/payments/42/refund"), false, ""},
		{"pattern caller", req("spiffe://example.org/batch/nightly", "DELETE", "/anything"), true, "batch-everything"},
		{"pattern needs a segment below", req("spiffe://example.org/batch", "GET", "/x"), false, ""},
		{"pattern is a path prefix, not a string prefix", req("spiffe://example.org/batchx/y", "GET", "/x"), false, ""},
		{"deny wins over a later allow", req("spiffe://example.org/batch/nightly", "GET", "/admin/users"), false, "block-batch-admin"},
		{"prefix covers the bare prefix", req("spiffe://example.org/batch/nightly", "GET", "/admin"), false, "block-batch-admin"},
		{"star: own trust domain", req("spiffe://example.org/anyone", "GET", "/health/"), true, "anyone-health"},
		{"star: never another trust domain", req("spiffe://evil.org/anyone", "GET", "/health/"), false, ""},
		{"trailing slash is distinct", req("spiffe://example.org/anyone", "GET", "/health"), false, ""},
		{"unauthenticated never matches", req("", "GET", "/health/"), false, ""},
		{"tcp connection: only rules without methods/paths", req("spiffe://example.org/batch/x", "", ""), true, "batch-everything"},
		{"tcp connection: method rules do not match", req("spiffe://example.org/orders", "", ""), false, ""},
		{"a GET rule covers HEAD", req("spiffe://example.org/anyone", "HEAD", "/health/"), true, "anyone-health"},
		{"HEAD is still not POST", req("spiffe://example.org/anyone", "POST", "/health/"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(tt.r)
			if d.Allowed != tt.allow || d.Rule != tt.wantRule || d.Version != e.Version() || d.DryRunDenied {
				t.Fatalf("Decide = %+v, want allowed=%v rule=%q", d, tt.allow, tt.wantRule)
			}
		})
	}
}

func TestConditions(t *testing.T) {
	e := mustEngine(t, example)
	gw := func(path string, user map[string]any) *Request {
		r := req("spiffe://example.org/gateway", "GET", path)
		r.User = user
		return r
	}
	if d := e.Decide(gw("/users/alice/payments/1", map[string]any{"sub": "alice"})); !d.Allowed {
		t.Fatalf("owner refused: %+v", d)
	}
	if d := e.Decide(gw("/users/bob/payments/1", map[string]any{"sub": "alice"})); d.Allowed {
		t.Fatal("confused deputy: alice's token read bob's payments")
	}
	if d := e.Decide(gw("/users/alice/payments/1", nil)); d.Allowed {
		t.Fatal("no user token, condition on user.sub: must fail closed")
	}
	r := req("spiffe://example.org/reports", "GET", "/r")
	r.Headers = http.Header{"X-Tenant": {"a"}}
	if !e.Decide(r).Allowed {
		t.Fatal("header condition")
	}
	r.Headers = http.Header{"X-Tenant": {"b"}}
	if e.Decide(r).Allowed {
		t.Fatal("wrong header allowed")
	}
	// The app may read any value of a repeated header: all are judged.
	r.Headers = http.Header{"X-Tenant": {"a", "b"}}
	if e.Decide(r).Allowed {
		t.Fatal("a second value of a judged header was let through")
	}
	// A deny rule about GET denies HEAD too.
	dh := mustEngine(t, "service: spiffe://example.org/p\nrules:\n  - name: no-reads\n    action: deny\n    callers: [\"*\"]\n    methods: [GET]\n  - name: all\n    callers: [\"*\"]\n")
	if got := dh.Decide(req("spiffe://example.org/x", "HEAD", "/")); got.Allowed || got.Rule != "no-reads" {
		t.Fatalf("HEAD under a GET deny rule: %+v", got)
	}
	// A deny rule whose condition errors denies (fail closed).
	d := mustEngine(t, `service: spiffe://example.org/p
rules:
  - name: deny-if-not-premium
    action: deny
    callers: ["*"]
    when: 'user.tier != "premium"'
  - name: all
    callers: ["*"]
`)
	if got := d.Decide(req("spiffe://example.org/x", "GET", "/")); got.Allowed || got.Rule != "deny-if-not-premium" {
		t.Fatalf("deny rule with failing condition: %+v", got)
	}
	r = req("spiffe://example.org/x", "GET", "/")
	r.User = map[string]any{"tier": "premium"}
	if got := d.Decide(r); !got.Allowed || got.Rule != "all" {
		t.Fatalf("premium user: %+v", got)
	}
}

func TestDryRun(t *testing.T) {
	e := mustEngine(t, strings.Replace(example, "rules:", "mode: dry-run\nrules:", 1))
	d := e.Decide(req("spiffe://example.org/orders", "DELETE", "/payments/1"))
	if !d.Allowed || !d.DryRunDenied {
		t.Fatalf("dry-run: %+v", d)
	}
	d = e.Decide(req("spiffe://example.org/orders", "GET", "/payments/1"))
	if !d.Allowed || d.DryRunDenied {
		t.Fatalf("dry-run allowed request: %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	head := "service: spiffe://example.org/p\nrules:\n"
	tests := []struct {
		name, src, want string
	}{
		{"unknown field", head + "  - name: a\n    callers: ['*']\n    pth: /x\n", `line 5: rules[0]: unknown field "pth"`},
		{"bad method", head + "  - name: a\n    callers: ['*']\n    methods: [GTE]\n", `line 5: rules[0].methods[0]: "GTE" is not an HTTP method`},
		{"lower-case method", head + "  - name: a\n    callers: ['*']\n    methods: [get]\n", `"get" is not an HTTP method`},
		{"no service", "rules:\n  - name: a\n    callers: ['*']\n", "service: required"},
		{"bad service", "service: http://x\nrules: []\n", "service:"},
		{"no rules", "service: spiffe://example.org/p\nrules: []\n", "at least one rule"},
		{"bad mode", "service: spiffe://example.org/p\nmode: audit\nrules:\n  - name: a\n    callers: ['*']\n", `"audit": want enforce or dry-run`},
		{"no name", head + "  - callers: ['*']\n", "rules[0].name: required"},
		{"duplicate name", head + "  - name: a\n    callers: ['*']\n  - name: a\n    callers: ['*']\n", `"a" used twice`},
		{"no callers", head + "  - name: a\n", "rules[0].callers: required"},
		{"empty callers", head + "  - name: a\n    callers: []\n", "at least one caller"},
		{"bad caller", head + "  - name: a\n    callers: [orders]\n", "rules[0].callers[0]"},
		{"star inside", head + "  - name: a\n    callers: ['spiffe://example.org/a*']\n", `"*" is only allowed`},
		{"bad action", head + "  - name: a\n    action: maybe\n    callers: ['*']\n", `"maybe": want allow or deny`},
		{"relative path", head + "  - name: a\n    callers: ['*']\n    paths: [x]\n", "must start with /"},
		{"dotdot path", head + "  - name: a\n    callers: ['*']\n    paths: [/a/../b]\n", `"." and ".."`},
		{"double slash", head + "  - name: a\n    callers: ['*']\n    paths: [//a]\n", "empty segment"},
		{"star not last", head + "  - name: a\n    callers: ['*']\n    paths: [/a/*/b]\n", `"*" is only allowed as the whole last segment`},
		{"mixed segment", head + "  - name: a\n    callers: ['*']\n    paths: ['/a{b}']\n", "mixes literal"},
		{"duplicate param", head + "  - name: a\n    callers: ['*']\n    paths: ['/{a}/{a}']\n", `parameter "a" used twice`},
		{"bad cel", head + "  - name: a\n    callers: ['*']\n    when: 'request.path =='\n", "rules[0].when: condition:"},
		{"non-bool cel", head + "  - name: a\n    callers: ['*']\n    when: '1 + 2'\n", "must be true or false"},
		{"unknown top field", "service: spiffe://example.org/p\npolicy: x\n", `unknown field "policy"`},
		{"not yaml", "service: [", "policy:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Fatalf("error %q does not start with the package name", err)
			}
		})
	}
}

func TestVersionIsContentHash(t *testing.T) {
	a, _ := Parse([]byte(example))
	b, _ := Parse([]byte(example))
	c, _ := Parse([]byte(example + "\n# a comment\n"))
	if a.Version != b.Version || a.Version == c.Version || len(a.Version) != 12 {
		t.Fatalf("versions %s %s %s", a.Version, b.Version, c.Version)
	}
	all, err := ParseAll([]byte(example + "---\n" + strings.Replace(example, "payments", "orders", 1)))
	if err != nil || len(all) != 2 || all[1].Service.String() != "spiffe://example.org/orders" {
		t.Fatalf("ParseAll: %v %v", all, err)
	}
}

func TestExplain(t *testing.T) {
	e := mustEngine(t, example)
	x := e.Explain(req("spiffe://example.org/orders", "POST", "/payments/42"))
	s := x.String()
	for _, want := range []string{"DENY", "default deny", "method POST is not allowed", "caller spiffe://example.org/orders is not listed"} {
		if !strings.Contains(s, want) {
			t.Errorf("explanation lacks %q:\n%s", want, s)
		}
	}
	x = e.Explain(req("spiffe://example.org/orders", "GET", "/payments/42"))
	if !strings.Contains(x.String(), `ALLOW by rule "orders-reads"`) {
		t.Fatalf("explanation:\n%s", x)
	}
	r := req("spiffe://example.org/gateway", "GET", "/users/a/payments/1")
	if s := e.Explain(r).String(); !strings.Contains(s, "condition error") {
		t.Fatalf("condition error not explained:\n%s", s)
	}
}

// Decisions without conditions allocate nothing.
func TestDecideAllocatesNothing(t *testing.T) {
	e := mustEngine(t, example)
	reqs := []*Request{
		req("spiffe://example.org/orders", "GET", "/payments/42"),
		req("spiffe://example.org/batch/x", "GET", "/admin/y"),
		req("spiffe://example.org/nobody", "GET", "/health/"),
		req("spiffe://evil.org/x", "POST", "/x"),
	}
	for _, r := range reqs {
		if n := testing.AllocsPerRun(100, func() { e.Decide(r) }); n != 0 {
			t.Errorf("Decide(%s %s %s) allocates %v times", r.Caller, r.Method, r.Path, n)
		}
	}
}

func TestPolicyTests(t *testing.T) {
	e := mustEngine(t, example)
	tf, err := ParseTests([]byte(`tests:
  - name: orders reads
    request: {caller: spiffe://example.org/orders, method: GET, path: /payments/1}
    expect: allow
    rule: orders-reads
  - name: wrong expectation
    request: {caller: spiffe://example.org/orders, method: POST, path: /payments/1}
    expect: allow
  - name: path trick refused
    request: {caller: spiffe://example.org/orders, path: "/payments/%2e%2e/admin"}
    expect: deny
  - name: owner
    request: {caller: spiffe://example.org/gateway, path: /users/al/payments/x, user: {sub: al}}
    expect: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	res := RunTests(e, tf)
	want := []bool{true, false, true, true}
	for i, r := range res {
		if r.Passed != want[i] {
			t.Errorf("%s: passed=%v (%s), want %v", r.Name, r.Passed, r.Message, want[i])
		}
	}
	if _, err := ParseTests([]byte("tests:\n  - name: x\n    expect: maybe\n    request: {caller: spiffe://example.org/a}\n")); err == nil {
		t.Fatal("bad expect accepted")
	}
	if _, err := ParseTests([]byte("tests:\n  - name: x\n    expekt: allow\n")); err == nil || !strings.Contains(err.Error(), "expekt") {
		t.Fatalf("unknown field accepted: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("service: spiffe://example.org/p\nrules:\n  - name: a\n    callers: ['*']\n"))
	f.Add([]byte("service: x"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(src)
		if err != nil {
			return
		}
		e, err := Compile(p)
		if err != nil {
			t.Fatalf("parsed but does not compile: %v", err)
		}
		e.Decide(req("spiffe://example.org/orders", "GET", "/payments/1"))
	})
}
