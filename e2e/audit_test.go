package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every server action lands in the audit log; rampart audit verify finds a
// tampered entry at its index.
func TestServerAuditLog(t *testing.T) {
	s, a := setup(t)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())
	// The agent mints the entry's SVID on its own time: wait for it, so
	// that its svid.issue entry is in the log before the server stops.
	mustCLI(t, nil, "svid", "fetch", "--socket", a.socket)
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

// auditDecisions returns the authz.decision entries in the server's log.
func auditDecisions(t *testing.T, dir string) []map[string]any {
	t.Helper()
	out, err := cli(t, nil, "audit", "query", "--data", dir, "--action", "authz.decision", "--limit", "10000000", "--json")
	if err != nil {
		t.Fatalf("audit query: %v\n%s", err, out)
	}
	var es []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit query line %q: %v", line, err)
		}
		es = append(es, e)
	}
	return es
}

// Proxies ship every decision to the server's audit log over mTLS; while
// the server is down they spool on disk, and afterwards every decision
// arrives exactly once.
func TestDecisionsReachAuditLogAcrossOutage(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.identity("rogue", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	outRogue := m.proxy("rogue", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	calls := func(n int, url string, want int) {
		for range n {
			if code, body := get(t, url, nil); code != want {
				t.Fatalf("GET %s: %d %s, want %d", url, code, body, want)
			}
		}
	}
	count := func(want int) func() error {
		return func() error {
			// An aggregate entry stands for details.count decisions.
			if n := decisionsIn(t, auditDecisions(t, m.s.dir), func(map[string]any) bool { return true }); n != want {
				return fmt.Errorf("%d decisions in the audit log, want %d", n, want)
			}
			return nil
		}
	}
	calls(5, "http://"+outA+"/payments/42", 200)
	calls(3, "http://"+outRogue+"/payments/42", 403)
	eventually(t, 20*time.Second, "decisions in the audit log", count(8))
	es := auditDecisions(t, m.s.dir)
	for _, e := range es {
		if e["source"] != "spiffe://example.org/payments" || e["target"] != "spiffe://example.org/payments" {
			t.Fatalf("decision entry with source %v target %v", e["source"], e["target"])
		}
		if e["outcome"] == "denied" && e["actor"].(map[string]any)["spiffe_id"] != "spiffe://example.org/rogue" {
			t.Fatalf("denied entry names actor %v", e["actor"])
		}
	}
	denied := decisionsIn(t, es, func(e map[string]any) bool { return e["outcome"] == "denied" })
	if denied != 3 {
		t.Fatalf("%d denied decisions, want 3", denied)
	}

	// The server goes away; the proxies keep deciding (cached policy) and
	// spool the decisions.
	m.s.kill()
	calls(20, "http://"+outA+"/payments/7", 200)
	s2 := startServerAt(t, m.s.dir, m.s.addr)
	eventually(t, 60*time.Second, "spooled decisions delivered after the outage", count(28))
	seen := map[string]bool{}
	for _, e := range auditDecisions(t, m.s.dir) {
		k := fmt.Sprint(e["stream"], "/", e["seq"])
		if seen[k] {
			t.Fatalf("decision %s stored twice", k)
		}
		seen[k] = true
	}
	s2.stop()
	if out, err := cli(t, nil, "audit", "verify", "--data", m.s.dir); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

// A burst of denied calls raises the denied-burst alert on the live server;
// the operator acknowledges it; rampart detect test finds the same in the
// exported log.
func TestDetectionOnLiveSystem(t *testing.T) {
	m := newMesh(t)
	m.identity("payments", "")
	m.identity("rogue", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]
	outRogue := m.proxy("rogue", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	for range 25 {
		if code, _ := get(t, "http://"+outRogue+"/payments/1", nil); code != 403 {
			t.Fatalf("rogue call: %d", code)
		}
	}
	var alerts []struct {
		ID, Rule, Status, Summary string
		FirstIndex                int64 `json:"first_index"`
	}
	eventually(t, 30*time.Second, "denied-burst alert", func() error {
		out, err := cli(t, m.s.adminEnv(), "alert", "list", "--json", "--rule", "denied-burst")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &alerts); err != nil {
			return err
		}
		if len(alerts) != 1 {
			return fmt.Errorf("%d denied-burst alerts", len(alerts))
		}
		return nil
	})
	if !strings.Contains(alerts[0].Summary, "spiffe://example.org/rogue") || alerts[0].Status != "open" {
		t.Fatalf("alert %+v", alerts[0])
	}
	out := mustCLI(t, m.s.adminEnv(), "alert", "ack", alerts[0].ID, "--note", "on it")
	if !strings.Contains(out, "acknowledged") {
		t.Fatalf("ack: %s", out)
	}
	// The alert and its acknowledgement are audit entries too.
	for _, action := range []string{"detect.alert", "alert.status"} {
		if out := mustCLI(t, nil, "audit", "query", "--data", m.s.dir, "--action", action, "--json"); !strings.Contains(out, alerts[0].ID) {
			t.Errorf("no %s entry for the alert: %s", action, out)
		}
	}
	// Users' CI: replay an export through the rules.
	export := filepath.Join(m.binDir, "export.jsonl")
	mustCLI(t, nil, "audit", "export", "--data", m.s.dir, "--format", "jsonl", "--out", export)
	out = mustCLI(t, nil, "detect", "test", "--log", export, "--fires", "denied-burst", "--quiet", "audit-ingestion-gap")
	if !strings.Contains(out, "denied-burst") {
		t.Fatalf("detect test: %s", out)
	}
	if out, err := cli(t, nil, "detect", "test", "--data", m.s.dir, "--fires", "login-failures"); err == nil || !strings.Contains(out, "FAIL rule login-failures raised no alert") {
		t.Fatalf("detect test passed a rule that did not fire: %v %s", err, out)
	}
}
