package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The compiled index decides exactly as the rule-by-rule evaluator, on
// random policies and requests drawn from one small vocabulary so that
// matches, overlaps and deny/allow conflicts are common.
func TestIndexMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	callers := []string{"spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/ns/x", "spiffe://example.org/ns/y/z", "spiffe://evil.org/a"}
	callerPats := append([]string{"*", "spiffe://example.org/ns/*", "spiffe://example.org/ns/y/*", "spiffe://evil.org/*"}, callers...)
	meths := []string{"GET", "HEAD", "POST", "DELETE", "PUT"}
	pathPats := []string{"/", "/a", "/a/{id}", "/a/*", "/a/{id}/b", "/b/", "/b/*", "/{x}/{y}"}
	paths := []string{"/", "/a", "/a/1", "/a/1/b", "/a/1/c", "/b", "/b/", "/b/x/y", "/c/d", ""}
	pick := func(from []string, max int) []string {
		n := rng.IntN(max + 1)
		var out []string
		for range n {
			out = append(out, from[rng.IntN(len(from))])
		}
		return out
	}
	quote := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	for n := range 60 {
		var b strings.Builder
		b.WriteString("service: spiffe://example.org/svc\n")
		if rng.IntN(5) == 0 {
			b.WriteString("mode: dry-run\n")
		}
		b.WriteString("rules:\n")
		for i := range 1 + rng.IntN(12) {
			fmt.Fprintf(&b, "  - name: r%d\n", i)
			if rng.IntN(4) == 0 {
				b.WriteString("    action: deny\n")
			}
			cs := pick(callerPats, 3)
			if len(cs) == 0 {
				cs = []string{"*"}
			}
			fmt.Fprintf(&b, "    callers: %s\n", quote(cs))
			if ms := pick(meths, 2); len(ms) > 0 {
				fmt.Fprintf(&b, "    methods: %s\n", quote(ms))
			}
			if ps := pick(pathPats, 2); len(ps) > 0 {
				fmt.Fprintf(&b, "    paths: %s\n", quote(ps))
			}
			if rng.IntN(8) == 0 {
				b.WriteString("    when: 'request.method == \"GET\"'\n")
			}
		}
		p, err := Parse([]byte(b.String()))
		if err != nil {
			t.Fatalf("policy %d: %v\n%s", n, err, b.String())
		}
		eng, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		naive := Naive(p)
		for range 1500 {
			r := &Request{Caller: spiffeid.RequireFromString(callers[rng.IntN(len(callers))]), Method: meths[rng.IntN(len(meths))], Path: paths[rng.IntN(len(paths))]}
			if rng.IntN(10) == 0 {
				r.Method, r.Path = "", "" // TCP
			}
			if got, want := eng.Decide(r), naive(r); got != want {
				t.Fatalf("policy %d:\n%s\nrequest %+v\nindex %+v, naive %+v", n, b.String(), r, got, want)
			}
		}
	}
}
