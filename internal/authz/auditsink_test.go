package authz

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
	"github.com/rampartsec/rampart/sdk/decision"
)

func TestDecisionEntry(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		ev      decision.Event
		outcome string
		reason  string
		details map[string]string
	}{
		{"allowed", decision.Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Method: "GET", Path: "/x", Rule: "r1", Version: "v1", Allowed: true},
			auditentry.OutcomeSuccess, "", map[string]string{"method": "GET", "path": "/x", "rule": "r1", "policy_version": "v1"}},
		{"denied by the policy", decision.Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Method: "DELETE", Path: "/x", Version: "v1"},
			auditentry.OutcomeDenied, "no rule allows it", map[string]string{"method": "DELETE", "rule": ""}},
		{"no policy", decision.Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b"},
			auditentry.OutcomeDenied, "no policy for this service", nil},
		{"bad path", decision.Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Reason: "ambiguous path", Version: "v1"},
			auditentry.OutcomeDenied, "ambiguous path", nil},
		{"dry run", decision.Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Version: "v1", Allowed: true, DryRun: true},
			auditentry.OutcomeSuccess, "", map[string]string{"dry_run_denied": "true"}},
	} {
		e := DecisionEntry(tc.ev)
		if err := e.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if e.Outcome != tc.outcome || e.Reason != tc.reason || e.Actor.SpiffeID != tc.ev.Caller || e.Target != tc.ev.Target || e.Action != "authz.decision" {
			t.Errorf("%s: %+v", tc.name, e)
		}
		for k, v := range tc.details {
			if got, ok := e.Details[k]; v == "" && ok || v != "" && got != v {
				t.Errorf("%s: details[%s] = %q (present %v), want %q", tc.name, k, got, ok, v)
			}
		}
	}
	// A decision without a verified caller still names an actor.
	if e := DecisionEntry(decision.Event{Time: at, Target: "spiffe://example.org/b"}); e.Validate() != nil || e.Actor.User != "unauthenticated" {
		t.Fatalf("no caller: %+v", e)
	}
}

type recorder struct {
	mu  sync.Mutex
	got []*auditentry.Entry
}

func (r *recorder) Record(e *auditentry.Entry) error {
	r.mu.Lock()
	r.got = append(r.got, e)
	r.mu.Unlock()
	return nil
}

// decisions sums what the recorded entries stand for (an entry without a
// count is one decision), per outcome.
func (r *recorder) decisions(t *testing.T) (entries int, byOutcome map[string]int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	byOutcome = map[string]int{}
	for _, e := range r.got {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		n := 1
		if c, ok := e.Details["count"]; ok {
			var err error
			if n, err = strconv.Atoi(c); err != nil || n < 1 {
				t.Fatalf("entry %+v: bad count", e)
			}
		}
		byOutcome[e.Outcome] += n
	}
	return len(r.got), byOutcome
}

func TestSinksFanOut(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	sa, sb := NewAuditSink(AuditSinkConfig{Recorder: a}), NewAuditSink(AuditSinkConfig{Recorder: b})
	defer sa.Close()
	defer sb.Close()
	Sinks{sa, sb}.Decision(context.Background(), decision.Event{Time: time.Now(), Caller: "spiffe://example.org/a", Allowed: true})
	if len(a.got) != 1 || len(b.got) != 1 {
		t.Fatalf("fan-out: %d %d", len(a.got), len(b.got))
	}
}

// Issue 27: a flood of identical decisions is a bounded number of entries
// whose counts add up to every decision; a cancelled request context
// changes nothing.
func TestAuditSinkAggregatesAFloodWithoutLosingDecisions(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	s := NewAuditSink(AuditSinkConfig{Recorder: rec, Interval: 5 * time.Second, Now: clk.Now})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	denied := decision.Event{Caller: "spiffe://example.org/rogue", Target: "spiffe://example.org/payments", Method: "GET", Path: "/admin", Version: "v1"}
	allowed := decision.Event{Caller: "spiffe://example.org/orders", Target: "spiffe://example.org/payments", Method: "GET", Path: "/payments/1", Version: "v1", Rule: "r", Allowed: true}
	const seconds, perSecond = 30, 1000
	for range seconds {
		for i := range perSecond {
			ev := denied
			if i%10 == 0 {
				ev = allowed
			}
			ev.Time = clk.Now()
			s.Decision(cancelled, ev)
		}
		clk.Add(time.Second)
	}
	s.Close()
	entries, got := rec.decisions(t)
	if got[auditentry.OutcomeDenied] != seconds*perSecond*9/10 || got[auditentry.OutcomeSuccess] != seconds*perSecond/10 {
		t.Fatalf("decisions counted %v, want %d denied and %d allowed", got, seconds*perSecond*9/10, seconds*perSecond/10)
	}
	// Two kinds, 6 intervals: an individual entry and an aggregate each.
	if entries > 2*2*(seconds/5+1) {
		t.Fatalf("%d entries for a flood of 2 kinds over %d s; want a bounded number", entries, seconds)
	}
	// The aggregate says what it counts.
	rec.mu.Lock()
	var agg *auditentry.Entry
	for _, e := range rec.got {
		if e.Details["count"] != "" && e.Outcome == auditentry.OutcomeDenied {
			agg = e
			break
		}
	}
	rec.mu.Unlock()
	if agg == nil || agg.Actor.SpiffeID != denied.Caller || agg.Details["path"] != "/admin" || agg.Details["method"] != "GET" ||
		agg.Details["first"] == "" || agg.Details["last"] == "" || agg.Reason != "no rule allows it" {
		t.Fatalf("aggregate entry %+v", agg)
	}
}

// A caller that varies its path cannot make the entries unbounded: past
// maxKeysPerCaller kinds its decisions are counted per service and outcome.
func TestAuditSinkBoundsDistinctPaths(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	s := NewAuditSink(AuditSinkConfig{Recorder: rec, Interval: 5 * time.Second, Now: clk.Now})
	const n = 20000
	for i := range n {
		s.Decision(context.Background(), decision.Event{Time: clk.Now(), Caller: "spiffe://example.org/rogue", Target: "spiffe://example.org/payments",
			Method: "GET", Path: "/x/" + strconv.Itoa(i) + "/" + strings.Repeat("a", 1000)})
	}
	s.Close()
	entries, got := rec.decisions(t)
	if got[auditentry.OutcomeDenied] != n {
		t.Fatalf("%d decisions counted, want %d", got[auditentry.OutcomeDenied], n)
	}
	if entries > maxKeysPerCaller+1 {
		t.Fatalf("%d entries, want at most %d", entries, maxKeysPerCaller+1)
	}
	for _, e := range rec.got {
		if len(e.Details["path"]) > auditentry.MaxField {
			t.Fatalf("path of %d bytes kept", len(e.Details["path"]))
		}
	}
}

// Decisions recorded after the interval ends without any new decision
// reach the recorder by the sink's own timer; here the clock moves and
// Flush stands in for the timer.
func TestAuditSinkIntervalRolls(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rec := &recorder{}
	s := NewAuditSink(AuditSinkConfig{Recorder: rec, Interval: 5 * time.Second, Now: clk.Now})
	defer s.Close()
	ev := decision.Event{Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Method: "GET", Path: "/", Allowed: true}
	for range 3 {
		ev.Time = clk.Now()
		s.Decision(context.Background(), ev)
	}
	if n, _ := rec.decisions(t); n != 1 {
		t.Fatalf("%d entries before the interval ends, want the first decision only", n)
	}
	clk.Add(5 * time.Second)
	ev.Time = clk.Now()
	s.Decision(context.Background(), ev) // ends the interval: aggregate of 2, then this one individually
	n, got := rec.decisions(t)
	if n != 3 || got[auditentry.OutcomeSuccess] != 4 {
		t.Fatalf("%d entries standing for %v, want 3 for 4 decisions", n, got)
	}
}
