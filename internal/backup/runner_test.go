package backup

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/store"
)

// storeBoot stands in for the server in this package's tests: it opens
// the restored store and counts its rows (package server's boot starts a
// whole server; see its tests and e2e).
func storeBoot(ctx context.Context, dir, _ string, m *Manifest) (*BootReport, error) {
	st, err := store.OpenSQLite(filepath.Join(dir, "rampart.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	info, err := st.(store.Snapshotter).Counts(ctx)
	if err != nil {
		return nil, err
	}
	return &BootReport{Tables: info.Tables, Checks: []Check{{Name: "store", OK: true}}}, nil
}

func (s *site) runner(t *testing.T, reg prometheus.Registerer) *Runner {
	kek := s.kekCopy(t)
	scratch := t.TempDir()
	return &Runner{Backuper: s.b, Every: 24 * time.Hour, DrillEvery: 7 * 24 * time.Hour, Now: s.clock.Now, Registry: reg,
		Retention: Retention{Daily: 3, Weekly: 2},
		Drill: func(ctx context.Context) *DrillReport {
			return Drill(ctx, DrillConfig{Source: s.source(t), Scratch: scratch, KEKFile: kek, Boot: storeBoot, Now: s.clock.Now})
		},
		Record: func(ctx context.Context, e *audit.Entry) {
			if _, err := s.log.AppendEntries(ctx, e); err != nil {
				t.Error(err)
			}
		}}
}

// alerts runs the default detection rules over the site's log and
// returns the alerts by rule, with the entries that raised them.
func (s *site) alerts(t *testing.T) map[string][]store.Alert {
	t.Helper()
	eng := detect.NewEngine(detect.Default())
	out := map[string][]store.Alert{}
	seen := map[string]bool{}
	err := audit.Scan(filepath.Join(s.dir, "audit"), 0, func(i int64, b []byte) error {
		e, err := audit.ParseEntry(b)
		if err != nil {
			return err
		}
		for _, a := range eng.Process(i, e) {
			if !seen[a.ID] {
				seen[a.ID] = true
				out[a.Rule] = append(out[a.Rule], a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func lastEntry(t *testing.T, s *site, action string) *audit.Entry {
	t.Helper()
	var found *audit.Entry
	audit.Scan(filepath.Join(s.dir, "audit"), 0, func(i int64, b []byte) error {
		if e, err := audit.ParseEntry(b); err == nil && e.Action == action {
			found = e
		}
		return nil
	})
	if found == nil {
		t.Fatalf("no %s entry in the log", action)
	}
	return found
}

func TestDrillSucceedsThenFailsOnACorruptedBackup(t *testing.T) {
	s := newSite(t)
	reg := prometheus.NewRegistry()
	r := s.runner(t, reg)
	ctx := context.Background()

	r.Step(ctx) // a backup and a drill are due
	ok := lastEntry(t, s, "backup.drill")
	if ok.Outcome != audit.OutcomeSuccess || ok.Details["seq"] != "1" || !strings.Contains(ok.Details["checks"], "restore=ok") || !strings.Contains(ok.Details["checks"], "store-counts=ok") {
		t.Fatalf("first drill: %+v", ok)
	}
	if lastEntry(t, s, "backup.create").Outcome != audit.OutcomeSuccess {
		t.Fatal("no backup made")
	}
	if n := testutil.ToFloat64(r.metrics.lastDrill); n != float64(t0.Unix()) {
		t.Fatalf("drill metric %v", n)
	}
	if a := s.alerts(t); len(a["backup-drill-failed"])+len(a["backup-failed"]) != 0 {
		t.Fatalf("alerts after a good drill: %v", a)
	}

	// Someone corrupts a stored segment; the next backup lists it again
	// (it reuses what the destinations hold), and the next drill finds it.
	m := latestManifest(t, s)
	for _, f := range m.Files {
		if f.Kind == KindSegment {
			for _, d := range s.dests {
				flipByte(t, d, f.Parts[0].Key())
			}
			break
		}
	}
	s.clock.Add(7 * 24 * time.Hour)
	r.Step(ctx)
	bad := lastEntry(t, s, "backup.drill")
	if bad.Outcome != audit.OutcomeFailure || !strings.Contains(bad.Reason, "does not match its SHA-256") || bad.Details["seq"] != "2" {
		t.Fatalf("drill of a corrupted backup: %+v", bad)
	}
	if n := testutil.ToFloat64(r.metrics.drillFailures); n != 1 {
		t.Fatalf("drill failures metric %v", n)
	}
	a := s.alerts(t)["backup-drill-failed"]
	if len(a) != 1 || a[0].Severity != "critical" || !strings.Contains(a[0].Summary, "does not match its SHA-256") {
		t.Fatalf("backup-drill-failed alerts: %+v", a)
	}
}

func TestMissingDrillRaisesItsAlert(t *testing.T) {
	s := newSite(t)
	r := s.runner(t, nil)
	r.DrillEvery, r.DrillMaxAge = 30*24*time.Hour, 2*24*time.Hour
	ctx := context.Background()
	r.Step(ctx)
	if lastEntry(t, s, "backup.drill").Outcome != audit.OutcomeSuccess {
		t.Fatal("the first drill failed")
	}
	// A day later: within the period, nothing to say.
	s.clock.Add(24 * time.Hour)
	r.Step(ctx)
	if a := s.alerts(t)["backup-drill-overdue"]; len(a) != 0 {
		t.Fatalf("overdue after a day: %+v", a)
	}
	// Three days without a successful drill: the runner records the
	// absence, once a day, and the default rule raises the alert.
	s.clock.Add(2 * 24 * time.Hour)
	r.Step(ctx)
	r.Step(ctx)
	e := lastEntry(t, s, "backup.drill_overdue")
	if e.Outcome != audit.OutcomeFailure || e.Details["last_success"] != t0.Format(time.RFC3339) {
		t.Fatalf("overdue entry %+v", e)
	}
	a := s.alerts(t)["backup-drill-overdue"]
	if len(a) != 1 {
		t.Fatalf("backup-drill-overdue alerts: %+v", a)
	}
}

func TestRetentionKeepsDailyAndWeekly(t *testing.T) {
	s := newSite(t)
	r := s.runner(t, nil)
	r.Drill = nil
	ctx := context.Background()
	for range 20 {
		r.Step(ctx)
		s.clock.Add(24 * time.Hour)
	}
	// Prune deletes unlisted objects one prune later; one more step.
	r.Step(ctx)
	seqs, err := listSeqs(ctx, s.dests[0])
	if err != nil {
		t.Fatal(err)
	}
	// 3 daily (19, 20, 21) and the newest of 2 ISO weeks.
	if len(seqs) > 5 || seqs[len(seqs)-1] != 21 {
		t.Fatalf("kept %v", seqs)
	}
	// What is kept still restores: every object it lists is there.
	if _, err := s.restore(t, RestoreConfig{}); err != nil {
		t.Fatalf("restore after pruning: %v", err)
	}
	if _, err := s.restore(t, RestoreConfig{Seq: seqs[0], AllowRollback: true}); err != nil {
		t.Fatalf("restore of the oldest kept after pruning: %v", err)
	}
}
