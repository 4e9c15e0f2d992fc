package opa

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

const n = 1000

// rampartPolicy is the policy of internal/policy's BenchmarkDecide1000Rules:
// exact callers (most), patterns and "*", each rule with GET/POST and a
// {param} path, a prefix path and an exact path.
func rampartPolicy() string {
	var b strings.Builder
	b.WriteString("service: spiffe://example.org/svc\nrules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: r%d\n", i)
		switch {
		case i%50 == 0:
			fmt.Fprintf(&b, "    callers: [\"spiffe://example.org/team%d/*\"]\n", i)
		case i%97 == 0:
			b.WriteString("    callers: [\"*\"]\n")
		default:
			fmt.Fprintf(&b, "    callers: [spiffe://example.org/svc%d]\n", i)
		}
		fmt.Fprintf(&b, "    methods: [GET, POST]\n    paths: [\"/api/v1/r%d/{id}\", \"/static%d/*\", /health]\n", i, i)
	}
	return b.String()
}

// regoPolicy is the same policy as OPA users would write it: one allow
// rule per (rule, path), callers compared by equality so OPA's rule
// indexer can pick candidate rules by input.caller, the {id} segment as a
// glob with "/" as delimiter, the prefix with startswith.
func regoPolicy() string {
	var b strings.Builder
	b.WriteString("package rampart\n\nimport rego.v1\n\ndefault allow := false\n\n")
	for i := range n {
		var caller string
		switch {
		case i%50 == 0:
			caller = fmt.Sprintf(`startswith(input.caller, "spiffe://example.org/team%d/")`, i)
		case i%97 == 0:
			caller = `startswith(input.caller, "spiffe://example.org/")`
		default:
			caller = fmt.Sprintf(`input.caller == "spiffe://example.org/svc%d"`, i)
		}
		for _, path := range []string{
			fmt.Sprintf(`glob.match("/api/v1/r%d/*", ["/"], input.path)`, i),
			fmt.Sprintf(`startswith(input.path, "/static%d/")`, i),
			`input.path == "/health"`,
		} {
			fmt.Fprintf(&b, "allow if {\n\t%s\n\tinput.method in {\"GET\", \"POST\"}\n\t%s\n}\n\n", caller, path)
		}
	}
	return b.String()
}

type req struct{ caller, method, path string }

var requests = []req{
	{"spiffe://example.org/svc517", "GET", "/api/v1/r517/42"},
	{"spiffe://example.org/svc517", "GET", "/api/v1/r518/42"},
	{"spiffe://example.org/team500/batch", "POST", "/static500/a/b"},
	{"spiffe://example.org/unknown", "GET", "/health"},
}

func engines(tb testing.TB) (*policy.Engine, rego.PreparedEvalQuery) {
	p, err := policy.Parse([]byte(rampartPolicy()))
	if err != nil {
		tb.Fatal(err)
	}
	e, err := policy.Compile(p)
	if err != nil {
		tb.Fatal(err)
	}
	pq, err := rego.New(rego.Query("data.rampart.allow"), rego.Module("rampart.rego", regoPolicy())).PrepareForEval(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return e, pq
}

func regoAllow(tb testing.TB, pq rego.PreparedEvalQuery, r req) bool {
	rs, err := pq.Eval(context.Background(), rego.EvalInput(map[string]any{"caller": r.caller, "method": r.method, "path": r.path}))
	if err != nil || len(rs) != 1 {
		tb.Fatalf("OPA eval: %v %v", rs, err)
	}
	return rs[0].Expressions[0].Value.(bool)
}

// TestSameDecisions: the two policies decide the benchmark requests (and
// a few more) the same way, so the comparison is like for like.
func TestSameDecisions(t *testing.T) {
	e, pq := engines(t)
	more := append(requests,
		req{"spiffe://example.org/svc517", "DELETE", "/api/v1/r517/42"},
		req{"spiffe://example.org/svc97", "GET", "/api/v1/r3/1"},
		req{"spiffe://example.org/svc3", "GET", "/api/v1/r3/1/2"},
		req{"spiffe://example.org/svc3", "GET", "/static3/x"},
	)
	for _, r := range more {
		got := e.Decide(&policy.Request{Caller: spiffeid.RequireFromString(r.caller), Method: r.method, Path: r.path}).Allowed
		if want := regoAllow(t, pq, r); got != want {
			t.Errorf("%+v: rampart %v, OPA %v", r, got, want)
		}
	}
}

func BenchmarkRampart1000Rules(b *testing.B) {
	e, _ := engines(b)
	reqs := make([]*policy.Request, len(requests))
	for i, r := range requests {
		reqs[i] = &policy.Request{Caller: spiffeid.RequireFromString(r.caller), Method: r.method, Path: r.path}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Decide(reqs[i%len(reqs)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkOPA1000Rules(b *testing.B) {
	_, pq := engines(b)
	inputs := make([]map[string]any, len(requests))
	for i, r := range requests {
		inputs[i] = map[string]any{"caller": r.caller, "method": r.method, "path": r.path}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := pq.Eval(ctx, rego.EvalInput(inputs[i%len(inputs)])); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
