package authz

import (
	"context"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

func TestDecisionEntry(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		ev      Event
		outcome string
		reason  string
		details map[string]string
	}{
		{"allowed", Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Method: "GET", Path: "/x", Rule: "r1", Version: "v1", Allowed: true},
			audit.OutcomeSuccess, "", map[string]string{"method": "GET", "path": "/x", "rule": "r1", "policy_version": "v1"}},
		{"denied by the policy", Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Method: "DELETE", Path: "/x", Version: "v1"},
			audit.OutcomeDenied, "no rule allows it", map[string]string{"method": "DELETE", "rule": ""}},
		{"no policy", Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b"},
			audit.OutcomeDenied, "no policy for this service", nil},
		{"bad path", Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Reason: "ambiguous path", Version: "v1"},
			audit.OutcomeDenied, "ambiguous path", nil},
		{"dry run", Event{Time: at, Caller: "spiffe://example.org/a", Target: "spiffe://example.org/b", Version: "v1", Allowed: true, DryRun: true},
			audit.OutcomeSuccess, "", map[string]string{"dry_run_denied": "true"}},
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
	if e := DecisionEntry(Event{Time: at, Target: "spiffe://example.org/b"}); e.Validate() != nil || e.Actor.User != "unauthenticated" {
		t.Fatalf("no caller: %+v", e)
	}
}

type recorder struct{ got []*audit.Entry }

func (r *recorder) Record(_ context.Context, e *audit.Entry) error {
	r.got = append(r.got, e)
	return nil
}

func TestSinksFanOut(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	Sinks{AuditSink{Recorder: a}, AuditSink{Recorder: b}}.Decision(context.Background(), Event{Time: time.Now(), Caller: "spiffe://example.org/a", Allowed: true})
	if len(a.got) != 1 || len(b.got) != 1 {
		t.Fatalf("fan-out: %d %d", len(a.got), len(b.got))
	}
}
