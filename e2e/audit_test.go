package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every server action lands in the audit log; rampart audit verify finds a
// tampered entry at its index.
func TestServerAuditLog(t *testing.T) {
	s, _ := setup(t)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())
	cli(t, []string{"RAMPART_SERVER=" + s.addr, "RAMPART_ADMIN_TOKEN=wrong", "RAMPART_CA_BUNDLE=" + filepath.Join(s.dir, "bundle.pem")}, "entry", "list")
	s.stop() // publishes a final checkpoint

	out, err := cli(t, nil, "audit", "verify", "--data", s.dir, "--json")
	if err != nil {
		t.Fatalf("audit verify on an untouched log: %v\n%s", err, out)
	}
	var rep struct {
		Entries     int64
		Checkpoints int
	}
	json.Unmarshal([]byte(out), &rep)
	if rep.Entries < 5 || rep.Checkpoints < 1 {
		t.Fatalf("report %s", out)
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "audit", "entries.log"))
	for _, want := range []string{`"action":"join_token.create"`, `"action":"agent.attest"`, `"action":"svid.issue"`, `"action":"entry.create"`,
		`"action":"admin.auth","outcome":"denied"`} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	// Tamper: turn the denied admin call into a success.
	i := bytes.Index(log, []byte(`"outcome":"denied"`))
	if i < 0 {
		t.Fatal("no denied entry to tamper with")
	}
	edited := bytes.Replace(log, []byte(`"outcome":"denied"`), []byte(`"outcome":"succes"`), 1)
	os.WriteFile(filepath.Join(s.dir, "audit", "entries.log"), edited, 0o600)
	out, err = cli(t, nil, "audit", "verify", "--data", s.dir)
	if err == nil || !strings.Contains(out, "PROBLEM edited at ") {
		t.Fatalf("tampered entry not reported: %v\n%s", err, out)
	}
}
