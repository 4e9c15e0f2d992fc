package detect

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/store"
)

// fakeSinks delivers to "slow", which hangs until the test ends, and to
// "fast", whose every delivery is announced on started and then waits for
// one step, so the test sees the order of deliveries without timing.
type fakeSinks struct {
	started chan store.Alert // fast: a delivery began
	step    chan struct{}    // fast: let one delivery finish
	hang    chan struct{}    // slow: closed at the end
	once    sync.Once
}

func newFakeSinks(t *testing.T) *fakeSinks {
	f := &fakeSinks{started: make(chan store.Alert, 16), step: make(chan struct{}), hang: make(chan struct{})}
	t.Cleanup(f.release)
	return f
}

func (f *fakeSinks) release() {
	f.once.Do(func() { close(f.hang); close(f.step) })
}

func (f *fakeSinks) deliver(s Sink, a store.Alert) error {
	switch s.Name {
	case "slow":
		<-f.hang
	case "fast":
		select {
		case f.started <- a:
		case <-f.hang: // the test has ended
			return nil
		}
		<-f.step
	}
	return nil
}

// next is the alert whose delivery to fast begins next.
func (f *fakeSinks) next(t *testing.T) store.Alert {
	t.Helper()
	select {
	case a := <-f.started:
		return a
	case <-time.After(30 * time.Second): // a hang, not a timing assertion
		t.Fatal("no delivery to the fast sink began")
	}
	return store.Alert{}
}

var twoSinks = []Sink{{Name: "slow", Type: "smtp", MinSeverity: "info"}, {Name: "fast", Type: "webhook", MinSeverity: "info"}}

func alert(i int, rule, severity string) store.Alert {
	return store.Alert{ID: fmt.Sprintf("alr_%d", i), Rule: rule, Severity: severity, FirstSeen: t0}
}

// Red team finding 4: one goroutine sent each alert to each sink in turn
// from one queue of 1,000: a flood of low alerts dropped 522 notifications
// and a critical alert reached a 200 ms webhook 3.5 minutes late, and a
// hanging SMTP server (30 s × 3 attempts) would have stalled every sink.
// Now each sink has its own worker and serves higher severities first.
func TestCriticalAlertNotHeldBehindFloodOrHangingSink(t *testing.T) {
	f := newFakeSinks(t)
	clk := fakeclock.New(t0)
	n := NewNotifier(NotifierConfig{Sinks: twoSinks, Deliver: f.deliver, Now: clk.Now, QueueSize: 5000, RuleBurst: 10_000, Retry: []time.Duration{}})
	defer func() { f.release(); n.Close() }()
	n.Notify(context.Background(), alert(0, "new-service-edge", "low"))
	if a := f.next(t); a.ID != "alr_0" {
		t.Fatalf("first delivery %s", a.ID)
	}
	// The slow sink now hangs on alr_0; the fast one is delivering it.
	for i := 1; i <= 5000; i++ {
		n.Notify(context.Background(), alert(i, "new-service-edge", "low"))
	}
	n.Notify(context.Background(), alert(9999, "refresh-token-reuse", "critical"))
	f.step <- struct{}{} // alr_0 delivered to fast
	if a := f.next(t); a.ID != "alr_9999" {
		t.Fatalf("after the critical alert was queued behind 5,000 low ones, fast delivered %s %s next, want the critical alr_9999", a.Severity, a.ID)
	}
	// Then the low ones, in order; and nothing was dropped.
	f.step <- struct{}{}
	if a := f.next(t); a.ID != "alr_1" {
		t.Fatalf("then %s, want alr_1", a.ID)
	}
	if d := n.TakeDrops(); len(d) != 0 {
		t.Fatalf("dropped %v, want none (5,000 fit the queue)", d)
	}
}

// A full queue drops, and the drops are counted per sink, severity and
// reason (metric, TakeDrops) and recorded as an audit entry, never silently.
func TestNotificationDropsAreCountedAndRecorded(t *testing.T) {
	f := newFakeSinks(t)
	clk := fakeclock.New(t0)
	n := NewNotifier(NotifierConfig{Sinks: twoSinks[1:], Deliver: f.deliver, Now: clk.Now, QueueSize: 10, Retry: []time.Duration{}})
	defer func() { f.release(); n.Close() }()
	n.Notify(context.Background(), alert(0, "r0", "low"))
	f.next(t) // in delivery
	for i := 1; i <= 30; i++ {
		n.Notify(context.Background(), alert(i, fmt.Sprintf("r%d", i), "low")) // 10 fit
	}
	n.Notify(context.Background(), alert(100, "c", "critical")) // its own queue
	if got := testutil.ToFloat64(n.dropped.WithLabelValues("fast", "low", "queue_full")); got != 20 {
		t.Fatalf("metric: %v low notifications dropped for a full queue, want 20", got)
	}
	var recorded []*audit.Entry
	d := &Detector{notifier: n, cfg: DetectorConfig{Now: clk.Now, Append: func(_ context.Context, es ...*audit.Entry) error { recorded = append(recorded, es...); return nil }}}
	d.ReportDrops(context.Background())
	if len(recorded) != 1 {
		t.Fatalf("%d entries recorded, want one detect.notifications_dropped", len(recorded))
	}
	e := recorded[0]
	if e.Action != "detect.notifications_dropped" || e.Details["fast.low.queue_full"] != "20" || e.Details["total"] != "20" || e.Validate() != nil {
		t.Fatalf("entry %+v", e)
	}
	d.ReportDrops(context.Background())
	if len(recorded) != 1 {
		t.Fatal("a report with nothing dropped since the last one was recorded")
	}
	f.step <- struct{}{}
	if a := f.next(t); a.ID != "alr_100" {
		t.Fatalf("next delivery %s, want the critical alert", a.ID)
	}
}

// One rule flooding a sink cannot crowd out another rule's alerts of the
// same severity: each rule queues at most RuleBurst, refilled over time.
func TestOneRuleCannotStarveOthers(t *testing.T) {
	f := newFakeSinks(t)
	clk := fakeclock.New(t0)
	n := NewNotifier(NotifierConfig{Sinks: twoSinks[1:], Deliver: f.deliver, Now: clk.Now, RuleBurst: 20, RuleEvery: 30 * time.Second, Retry: []time.Duration{}})
	defer func() { f.release(); n.Close() }()
	for i := range 1000 {
		n.Notify(context.Background(), alert(i, "flood", "medium"))
	}
	n.Notify(context.Background(), alert(5000, "quiet", "medium"))
	if got := testutil.ToFloat64(n.dropped.WithLabelValues("fast", "medium", "rate_limited")); got != 980 {
		t.Fatalf("%v of the flooding rule's notifications rate-limited, want 980", got)
	}
	for i := range 21 {
		a := f.next(t)
		f.step <- struct{}{}
		if a.ID == "alr_5000" {
			break
		}
		if i == 20 {
			t.Fatal("the quiet rule's alert was not among the first 21 deliveries")
		}
	}
	// Half a minute later the flooding rule may queue one more.
	clk.Add(30 * time.Second)
	n.Notify(context.Background(), alert(6000, "flood", "medium"))
	if got := testutil.ToFloat64(n.dropped.WithLabelValues("fast", "medium", "rate_limited")); got != 980 {
		t.Fatalf("after the refill: %v rate-limited, want still 980", got)
	}
}

// Close waits for a hanging sink at most CloseGrace and counts what it
// still held as dropped.
func TestCloseDoesNotWaitForeverForAHangingSink(t *testing.T) {
	f := newFakeSinks(t)
	n := NewNotifier(NotifierConfig{Sinks: twoSinks[:1], Deliver: f.deliver, CloseGrace: time.Millisecond, Retry: []time.Duration{}})
	for i := range 3 {
		n.Notify(context.Background(), alert(i, "r", "high"))
	}
	n.Close() // returns although "slow" hangs
	drops := n.TakeDrops()
	if got := drops[DropKey{Sink: "slow", Severity: "high", Reason: "shutdown"}]; got < 2 {
		t.Fatalf("drops at close %v: want the 2 or 3 still queued counted", drops)
	}
}
