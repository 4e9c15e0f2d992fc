package workload

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
)

// Refusals of one process are rate limited per kind, and none is lost:
// the first of an interval is recorded at once, the others together when
// it ends, with their count and distinct reasons. A refusal of one kind
// does not hide one of another (a withheld bundle does not hide a refused
// SVID).
func TestRefusalsAggregated(t *testing.T) {
	clk := fakeclock.New(time.Now())
	rec := &rtfedRecorder{}
	var pending []func()
	a := &auditor{rec: rec, self: spiffeid.RequireFromString("spiffe://example.org/rampart/agent/n1"), now: clk.Now, last: map[string]*refusals{},
		after: func(d time.Duration, f func()) {
			if d <= 0 || d > refusalInterval {
				t.Errorf("flush scheduled in %v", d)
			}
			pending = append(pending, f)
		}}
	p := &process{Caller: Caller{PID: 42, UID: 1001, GID: 1001}, exe: exeID{path: "/usr/bin/x"}}
	ctx := context.Background()
	reasons := func() []string {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var out []string
		for _, e := range rec.es {
			out = append(out, e.Reason+" ["+e.Details["aggregated"]+"|"+e.Details["reasons"]+"]")
		}
		return out
	}

	a.refused(ctx, p, "StreamSecrets", sdsWithheld+"spiffe://b.example")         // recorded
	a.refused(ctx, p, "FetchSecrets", sdsNotEntitled+"spiffe://example.org/pay") // another kind: recorded
	clk.Add(time.Second)
	a.refused(ctx, p, "FetchSecrets", sdsNotEntitled+"spiffe://example.org/db") // held for the flush
	a.refused(ctx, p, "FetchSecrets", sdsNotEntitled+"spiffe://example.org/db") // same reason: counted
	a.refused(ctx, p, "FetchSecrets", sdsNotEntitled+"spiffe://example.org/kms")
	if got := reasons(); len(got) != 2 {
		t.Fatalf("recorded before the interval ended: %q", got)
	}
	if len(pending) != 1 {
		t.Fatalf("%d flushes scheduled, want 1", len(pending))
	}
	clk.Add(refusalInterval)
	pending[0]()
	got := reasons()
	if len(got) != 3 {
		t.Fatalf("after the flush: %q", got)
	}
	last := got[2]
	for _, want := range []string{"[3|", "spiffe://example.org/db", "spiffe://example.org/kms"} {
		if !strings.Contains(last, want) {
			t.Fatalf("aggregated entry %q lacks %q", last, want)
		}
	}
	if strings.Count(last, "spiffe://example.org/db") != 1 { // two attempts, one reason
		t.Fatalf("repeated reason not deduplicated: %q", last)
	}
	// Nothing suppressed: a flush records nothing.
	pending[0]()
	if n := len(reasons()); n != 3 {
		t.Fatalf("an empty flush recorded an entry (%d)", n)
	}
}
