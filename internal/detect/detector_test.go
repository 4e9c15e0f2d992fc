package detect

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// A new alert reaches the log itself as a detect.alert entry (rampart-detect
// its actor), with the rule, severity and the entry that raised it; bad
// rules are refused before anything runs.
func TestDetectorRecordsAlerts(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	burst := repeat(25, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") })
	if _, err := l.AppendEntries(ctx, burst...); err != nil {
		t.Fatal(err)
	}
	var recorded []*audit.Entry
	d, err := NewDetector(DetectorConfig{Dir: dir, Store: openStore(t),
		Append: func(_ context.Context, es ...*audit.Entry) error { recorded = append(recorded, es...); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.tailer.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 1 {
		t.Fatalf("recorded %d entries, want one detect.alert", len(recorded))
	}
	e := recorded[0]
	if e.Action != "detect.alert" || e.Actor.User != "rampart-detect" || e.Details["rule"] != "denied-burst" || e.Details["first_index"] != "19" || !strings.Contains(e.Target, rogue) {
		t.Fatalf("alert entry %+v", e)
	}

	if _, err := NewDetector(DetectorConfig{Dir: dir, Rules: []byte("rules:\n  - name: x\n    severity: dire\n")}); err == nil || !strings.Contains(err.Error(), "severity") {
		t.Fatalf("bad rules: %v, want an error naming the severity", err)
	}
}
