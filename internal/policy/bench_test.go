package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bigPolicy has n rules: exact callers (most), patterns and "*", with
// literal, {param} and prefix paths, no conditions.
func bigPolicy(n int) string {
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

func benchRequests() []*Request {
	return []*Request{
		{Caller: spiffeid.RequireFromString("spiffe://example.org/svc517"), Method: "GET", Path: "/api/v1/r517/42"},
		{Caller: spiffeid.RequireFromString("spiffe://example.org/svc517"), Method: "GET", Path: "/api/v1/r518/42"},
		{Caller: spiffeid.RequireFromString("spiffe://example.org/team500/batch"), Method: "POST", Path: "/static500/a/b"},
		{Caller: spiffeid.RequireFromString("spiffe://example.org/unknown"), Method: "GET", Path: "/health"},
	}
}

func BenchmarkDecide1000Rules(b *testing.B) {
	e := mustEngine(b, bigPolicy(1000))
	reqs := benchRequests()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e.Decide(reqs[i%len(reqs)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkNaive1000Rules(b *testing.B) {
	p, err := Parse([]byte(bigPolicy(1000)))
	if err != nil {
		b.Fatal(err)
	}
	naive := Naive(p)
	reqs := benchRequests()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		naive(reqs[i%len(reqs)])
	}
}

func BenchmarkDecideWithCEL(b *testing.B) {
	e := mustEngine(b, example)
	r := &Request{Caller: spiffeid.RequireFromString("spiffe://example.org/gateway"), Method: "GET", Path: "/users/alice/payments/1", User: map[string]any{"sub": "alice"}}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(r)
	}
}
