package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

func testRespond(t *testing.T, h harness) {
	s := h.open(t)
	rs, ok := store.Respond(s)
	if !ok {
		t.Fatal("the store has no response tables")
	}
	ctx := t.Context()

	// Playbooks: versions count up; delete hides them from list and latest.
	p1, err := rs.PutPlaybook(ctx, store.Playbook{Name: "contain", Source: "v1", CreatedAt: at(0), CreatedBy: "alice"})
	must(t, err)
	p2, err := rs.PutPlaybook(ctx, store.Playbook{Name: "contain", Source: "v2", CreatedAt: at(1), CreatedBy: "bob"})
	must(t, err)
	if p1.Version != 1 || p2.Version != 2 {
		t.Fatalf("versions %d, %d", p1.Version, p2.Version)
	}
	got, err := rs.GetPlaybook(ctx, "contain", 0)
	must(t, err)
	wantEqual(t, "latest", got, p2)
	got, err = rs.GetPlaybook(ctx, "contain", 1)
	must(t, err)
	wantEqual(t, "version 1", got, p1)
	list, err := rs.ListPlaybooks(ctx)
	must(t, err)
	wantEqual(t, "list", list, []store.Playbook{p2})
	must(t, rs.DeletePlaybook(ctx, "contain"))
	wantErrIs(t, "deleted", func() error { _, err := rs.GetPlaybook(ctx, "contain", 0); return err }(), store.ErrNotFound)
	wantErrIs(t, "delete twice", rs.DeletePlaybook(ctx, "contain"), store.ErrNotFound)
	if _, err := rs.GetPlaybook(ctx, "contain", 1); err != nil {
		t.Errorf("a deleted playbook's versions stay for its runs: %v", err)
	}

	// Quarantines bump the revision; lifting needs one in force.
	rev := revision(t, s)
	q := store.Quarantine{ID: "q-1", Pattern: "spiffe://example.org/orders", Reason: "stolen", CreatedAt: at(2), CreatedBy: "alice"}
	must(t, rs.AddQuarantine(ctx, q))
	if revision(t, s) <= rev {
		t.Fatal("a quarantine did not bump the revision")
	}
	qs, err := rs.ListQuarantines(ctx, false)
	must(t, err)
	wantEqual(t, "in force", qs, []store.Quarantine{q})
	rev = revision(t, s)
	lifted, err := rs.LiftQuarantine(ctx, q.Pattern, "bob", "rebuilt", at(3))
	must(t, err)
	if len(lifted) != 1 || lifted[0].LiftedBy != "bob" || revision(t, s) <= rev {
		t.Fatalf("lift: %+v", lifted)
	}
	qs, err = rs.ListQuarantines(ctx, false)
	must(t, err)
	if len(qs) != 0 {
		t.Errorf("still in force: %+v", qs)
	}
	qs, err = rs.ListQuarantines(ctx, true)
	must(t, err)
	if len(qs) != 1 || qs[0].LiftReason != "rebuilt" || !qs[0].LiftedAt.Equal(at(3)) {
		t.Errorf("history: %+v", qs)
	}
	if _, err := rs.LiftQuarantine(ctx, q.Pattern, "bob", "again", at(4)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lifting what is not in force: %v", err)
	}

	// Incidents, their events in order, runs.
	in := store.Incident{ID: "inc-1", Title: "t", Status: "open", Severity: "high", OpenedAt: at(5), OpenedBy: "alice", UpdatedAt: at(5), Data: []byte(`{}`)}
	must(t, rs.CreateIncident(ctx, in))
	wantErrIs(t, "create twice", rs.CreateIncident(ctx, in), store.ErrConflict)
	in.Status, in.UpdatedAt = "contained", at(6)
	must(t, rs.UpdateIncident(ctx, in))
	gotIn, err := rs.GetIncident(ctx, "inc-1")
	must(t, err)
	wantEqual(t, "incident", gotIn, in)
	wantErrIs(t, "update missing", rs.UpdateIncident(ctx, store.Incident{ID: "inc-2", UpdatedAt: at(6)}), store.ErrNotFound)
	ins, err := rs.ListIncidents(ctx, "open")
	must(t, err)
	if len(ins) != 0 {
		t.Errorf("open incidents: %+v", ins)
	}
	for i, text := range []string{"a", "b"} {
		seq, err := rs.AppendIncidentEvent(ctx, store.IncidentEvent{Incident: "inc-1", Time: at(time.Duration(7 + i)), Kind: "note", Actor: "bob", Text: text})
		must(t, err)
		if seq != int64(i+1) {
			t.Errorf("seq %d, want %d", seq, i+1)
		}
	}
	evs, err := rs.IncidentEvents(ctx, "inc-1")
	must(t, err)
	if len(evs) != 2 || evs[0].Text != "a" || evs[1].Seq != 2 {
		t.Errorf("events %+v", evs)
	}
	r := store.PlaybookRun{ID: "run-1", Playbook: "contain", Version: 1, State: "running", StartedAt: at(8), UpdatedAt: at(8), Data: []byte(`{"a":1}`)}
	runRev, err := rs.PutRun(ctx, r)
	must(t, err)
	if _, err := rs.PutRun(ctx, r); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a second new run of the same ID: %v, want ErrConflict", err)
	}
	r.Revision = runRev
	stale := r
	r.State, r.Incident, r.UpdatedAt = "succeeded", "inc-1", at(9)
	runRev, err = rs.PutRun(ctx, r)
	must(t, err)
	// A writer that read the run before that write cannot write over it
	// (two approvals of one step, a run advanced elsewhere).
	stale.State = "failed"
	if _, err := rs.PutRun(ctx, stale); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a write at a stale revision: %v, want ErrConflict", err)
	}
	r.Revision = runRev
	gotRun, err := rs.GetRun(ctx, "run-1")
	must(t, err)
	wantEqual(t, "run", gotRun, r)
	runs, err := rs.ListRuns(ctx, "inc-1")
	must(t, err)
	wantEqual(t, "runs", runs, []store.PlaybookRun{r})
}
