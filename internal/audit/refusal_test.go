package audit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"
)

func refusal(clk *fakeclock.Clock, actor Actor, reason string) *Entry {
	return &Entry{V: SchemaVersion, Time: clk.Now(), Actor: actor, Action: "admin.auth", Outcome: OutcomeDenied, Reason: reason,
		Details: map[string]string{"path": "/v1/entries"}}
}

// A refusal is recorded at once the first time, and its repeats in the
// interval as one entry with their count, so a caller who retries in a
// loop cannot grow the log by one entry a try.
func TestRefusalsAggregateRepeats(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := NewRefusals(clk.Now, nil)
	anon := Actor{User: "anonymous"}
	if got := a.Add(refusal(clk, anon, "wrong token"), "192.0.2.1:1000"); len(got) != 1 {
		t.Fatalf("first refusal: %d entries to record, want 1", len(got))
	}
	for i := range 999 {
		clk.Add(time.Millisecond)
		if got := a.Add(refusal(clk, anon, "wrong token"), fmt.Sprintf("192.0.2.1:%d", 1001+i)); len(got) != 0 {
			t.Fatalf("repeat %d: %d entries to record, want 0 (aggregated)", i, len(got))
		}
	}
	// Another address is another kind for anonymous callers.
	if got := a.Add(refusal(clk, anon, "wrong token"), "192.0.2.2:1000"); len(got) != 1 {
		t.Fatalf("another address: %d entries, want 1", len(got))
	}
	if got := a.Flush(false); len(got) != 0 {
		t.Fatalf("flush inside the interval: %d entries, want 0", len(got))
	}
	clk.Add(RefusalInterval)
	// One aggregate: the repeats of the first kind (the second kind was
	// recorded when it happened and never repeated).
	got := a.Flush(false)
	if len(got) != 1 {
		t.Fatalf("after the interval: %d aggregates, want 1", len(got))
	}
	if e := got[0]; e.Details["count"] != "999" || e.Details["path"] != "/v1/entries" || e.Actor != anon {
		t.Errorf("aggregate %+v: want count 999 with the sample's details and actor", e)
	}
	if got := a.Flush(true); len(got) != 0 {
		t.Errorf("a second flush: %d entries, want 0", len(got))
	}
}

// Past the bound, kinds merge per action and reason: a flood of distinct
// callers cannot grow the table without limit.
func TestRefusalsBounded(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := NewRefusals(clk.Now, nil)
	recorded := 0
	for i := range maxRefusalKinds + 500 {
		recorded += len(a.Add(refusal(clk, Actor{SpiffeID: fmt.Sprintf("spiffe://example.org/w%d", i)}, "revoked"), ""))
	}
	if recorded != maxRefusalKinds {
		t.Fatalf("recorded %d at once, want %d (the bound)", recorded, maxRefusalKinds)
	}
	var merged *Entry
	for _, e := range a.Flush(true) {
		if e.Actor.User == "many-callers" {
			merged = e
		}
	}
	if merged == nil || merged.Details["count"] != "500" {
		t.Fatalf("merged aggregate %+v, want actor many-callers with count 500", merged)
	}
}

// Run records each ended interval's aggregates and stops with its context.
func TestRefusalsRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	a := NewRefusals(time.Now, func(context.Context, ...*Entry) {})
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
