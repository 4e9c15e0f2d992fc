package detect

import (
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// The backup rules fire on what the server records about its backups and
// drills (package backup's Runner), never on an entry another component
// shipped under the same action.
func TestBackupRules(t *testing.T) {
	server := audit.Actor{User: "rampart-backup"}
	be := func(at time.Duration, action, outcome, source string) *audit.Entry {
		e := ev(at, action, outcome, "", server, map[string]string{"seq": "3"})
		e.Source = source
		return e
	}
	for _, tc := range []struct {
		rule         string
		fires, quiet []*audit.Entry
	}{
		{"backup-failed",
			[]*audit.Entry{be(0, "backup.create", "failure", "server")},
			[]*audit.Entry{be(0, "backup.create", "success", "server"), be(time.Minute, "backup.create", "failure", "spiffe://example.org/rogue")}},
		{"backup-overdue",
			[]*audit.Entry{be(0, "backup.overdue", "failure", "server")},
			[]*audit.Entry{be(0, "backup.overdue", "failure", "spiffe://example.org/rogue")}},
		{"backup-drill-failed",
			[]*audit.Entry{be(0, "backup.drill", "failure", "server"), be(time.Hour, "backup.drill", "failure", "server")},
			[]*audit.Entry{be(0, "backup.drill", "success", "server"), be(time.Minute, "backup.drill", "failure", "spiffe://example.org/rogue")}},
		{"backup-drill-overdue",
			[]*audit.Entry{be(0, "backup.drill_overdue", "failure", "server")},
			[]*audit.Entry{be(0, "backup.drill", "success", "server")}},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			if n := fired(t, tc.fires)[tc.rule]; n != 1 {
				t.Errorf("fired %d alerts, want 1", n)
			}
			if n := fired(t, tc.quiet)[tc.rule]; n != 0 {
				t.Errorf("fired %d alerts on entries that must not fire it", n)
			}
		})
	}
}
