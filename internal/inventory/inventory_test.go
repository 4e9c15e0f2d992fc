package inventory_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/store/storetest"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/inventory"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/scantest"
	"github.com/rampartsec/rampart/internal/store"
)

var (
	bins     = map[string]string{}
	vulnDir  string
	setupErr error
)

func TestMain(m *testing.M) {
	dir, _ := os.MkdirTemp("", "inventory-test-")
	setupErr = func() error {
		for _, p := range []string{scantest.Called, scantest.Patched} {
			b, err := scantest.Build(dir, p)
			if err != nil {
				return err
			}
			bins[p] = b
		}
		var err error
		vulnDir, err = scantest.VulnDB()
		return err
	}()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func need(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(setupErr)
		}
		t.Skip(setupErr)
	}
}

func newInventory(t *testing.T) (*inventory.Inventory, *fakeclock.Clock) {
	st := storetest.SQLite(t, t.TempDir())
	ss, _ := store.Scan(st)
	c := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	return &inventory.Inventory{Store: ss, Now: c.Now, RunningWindow: 10 * time.Minute}, c
}

func report(t *testing.T, prog string) api.InventoryBinary {
	t.Helper()
	raw, err := os.ReadFile(bins[prog])
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(bins[prog])
	defer f.Close()
	g, err := gobin.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return inventory.FromGobin(hex.EncodeToString(sum[:]), int64(len(raw)), g)
}

func importIDs(t *testing.T, iv *inventory.Inventory, ids ...string) {
	t.Helper()
	dir := t.TempDir()
	if err := scantest.CopyRecords(vulnDir, dir, ids...); err != nil {
		t.Fatal(err)
	}
	es, err := osv.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iv.Import(t.Context(), "test:"+strings.Join(ids, ","), es); err != nil {
		t.Fatal(err)
	}
}

const svc = "spiffe://example.org/orders"

// TestImportRematchesRunningWorkloads: a workload runs clean; a database
// import makes it vulnerable, which Rematch reports; a workload no longer
// seen and an excepted finding are not reported.
func TestImportRematchesRunningWorkloads(t *testing.T) {
	need(t)
	iv, c := newInventory(t)
	ctx := t.Context()
	importIDs(t, iv, "GO-2021-0113") // fixed in x/text 0.3.7: nothing for our binaries
	vuln, patched := report(t, scantest.Called), report(t, scantest.Patched)
	resp, alerts, err := iv.Report(ctx, "spiffe://example.org/agent/n1", api.InventoryReport{
		Binaries:  []api.InventoryBinary{vuln, patched},
		Sightings: []api.InventorySighting{{SHA256: vuln.SHA256, Service: svc, Exe: "/srv/orders", FirstSeen: c.Now(), LastSeen: c.Now()}, {SHA256: patched.SHA256, Service: svc + "-v2", Exe: "/srv/orders2", LastSeen: c.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 0 || len(resp.Verdicts) != 2 || len(resp.Verdicts[0].Findings)+len(resp.Verdicts[1].Findings) != 0 {
		t.Fatalf("before the import: alerts %v, verdicts %+v", alerts, resp.Verdicts)
	}
	// The inventory has it, with its modules.
	items, err := iv.List(ctx, store.SightingFilter{Service: svc}, false)
	if err != nil || len(items) != 1 || items[0].SHA256 != vuln.SHA256 || len(items[0].Modules) != 1 || items[0].Modules[0].Path != "golang.org/x/text" {
		t.Fatalf("inventory: %+v, %v", items, err)
	}
	c.Add(time.Minute)
	importIDs(t, iv, "GO-2022-1059")
	alerts, err = iv.Rematch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 || alerts[0].Service != svc || alerts[0].Finding.ID != "GO-2022-1059" || alerts[0].Finding.Reachability != "called" || alerts[0].Severity != osv.High {
		t.Fatalf("after the import: %+v, want GO-2022-1059 called on %s (unrated: HIGH)", alerts, svc)
	}
	if items, _ := iv.List(ctx, store.SightingFilter{}, true); len(items) != 1 || items[0].Service != svc {
		t.Errorf("vulnerable inventory: %+v", items)
	}
	// An exception silences it.
	if err := iv.Store.CreateScanException(ctx, store.ScanException{ID: "e1", Vuln: "CVE-2022-32149", Service: svc, Reason: "r", Expires: c.Now().Add(time.Hour), CreatedAt: c.Now()}); err != nil {
		t.Fatal(err)
	}
	if alerts, _ = iv.Rematch(ctx); len(alerts) != 0 {
		t.Errorf("excepted by its CVE alias, still alerted: %+v", alerts)
	}
	// Expired, and the workload stopped long ago: nothing either.
	c.Add(2 * time.Hour)
	if alerts, _ = iv.Rematch(ctx); len(alerts) != 0 {
		t.Errorf("a workload last seen 2h ago is not running: %+v", alerts)
	}
}

// TestAnotherHostCannotVouchForABinary: host B reports the same hash as
// host A with made-up clean modules; host A's verdict still comes from A's
// report.
func TestAnotherHostCannotVouchForABinary(t *testing.T) {
	need(t)
	iv, c := newInventory(t)
	ctx := t.Context()
	importIDs(t, iv, "GO-2022-1059")
	vuln := report(t, scantest.Called)
	lie := vuln
	lie.Modules = []api.GoModule{{Path: "golang.org/x/text", Version: "v0.3.8"}}
	// B reports first.
	if _, _, err := iv.Report(ctx, "spiffe://example.org/agent/b", api.InventoryReport{Binaries: []api.InventoryBinary{lie}}); err != nil {
		t.Fatal(err)
	}
	resp, alerts, err := iv.Report(ctx, "spiffe://example.org/agent/a", api.InventoryReport{Binaries: []api.InventoryBinary{vuln},
		Sightings: []api.InventorySighting{{SHA256: vuln.SHA256, Service: svc, LastSeen: c.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Verdicts) != 1 || !resp.Verdicts[0].Known || len(resp.Verdicts[0].Findings) != 1 || resp.Verdicts[0].Findings[0].ID != "GO-2022-1059" {
		t.Errorf("host A's verdict: %+v; host B's report decided it", resp.Verdicts)
	}
	if len(alerts) != 1 {
		t.Errorf("a newly reported running vulnerable binary: alerts %+v", alerts)
	}
	// B asking about the hash gets its own (clean) view, affecting only B.
	resp, _, _ = iv.Report(ctx, "spiffe://example.org/agent/b", api.InventoryReport{Want: []string{vuln.SHA256}})
	if len(resp.Verdicts) != 1 || len(resp.Verdicts[0].Findings) != 0 {
		t.Errorf("host B's verdict: %+v", resp.Verdicts)
	}
	// A host that never reported the hash has no verdict at all.
	resp, _, _ = iv.Report(ctx, "spiffe://example.org/agent/c", api.InventoryReport{Want: []string{vuln.SHA256}})
	if len(resp.Verdicts) != 1 || resp.Verdicts[0].Known {
		t.Errorf("host C's verdict: %+v, want unknown", resp.Verdicts)
	}
}

func TestReportRefusesBadInput(t *testing.T) {
	iv, c := newInventory(t)
	ctx := t.Context()
	for name, rep := range map[string]api.InventoryReport{
		"short hash":   {Binaries: []api.InventoryBinary{{SHA256: "abc"}}},
		"not hex":      {Binaries: []api.InventoryBinary{{SHA256: strings.Repeat("z", 64)}}},
		"no spiffe id": {Sightings: []api.InventorySighting{{SHA256: strings.Repeat("a", 64), Service: "orders", LastSeen: c.Now()}}},
		"too many":     {Want: make([]string, inventory.MaxWant+1)},
		"huge symbols": {Binaries: []api.InventoryBinary{{SHA256: strings.Repeat("a", 64), Symbols: map[string][]string{"p": make([]string, inventory.MaxSymbols+1)}}}},
	} {
		if _, _, err := iv.Report(ctx, "spiffe://example.org/agent/a", rep); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A sighting from the future is clamped to now.
	sha := strings.Repeat("a", 64)
	if _, _, err := iv.Report(ctx, "spiffe://example.org/agent/a", api.InventoryReport{Sightings: []api.InventorySighting{{SHA256: sha, Service: svc, LastSeen: c.Now().Add(1000 * time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	items, _ := iv.List(ctx, store.SightingFilter{}, false)
	if len(items) != 1 || !items[0].LastSeen.Equal(c.Now()) {
		t.Errorf("a sighting dated in the future: %+v", items)
	}
}

func TestGateDecide(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	sha := strings.Repeat("b", 64)
	called := api.InventoryFinding{ID: "GO-2022-1059", Aliases: []string{"CVE-2022-32149"}, Package: "golang.org/x/text", Version: "v0.3.7", Severity: "UNKNOWN", Reachability: "called"}
	notCalled := called
	notCalled.ID, notCalled.Reachability = "GO-2026-5970", "not-called"
	medium := called
	medium.ID, medium.Severity = "GHSA-x", "MEDIUM"
	v := &api.BinaryVerdict{SHA256: sha, Known: true, Findings: []api.InventoryFinding{called, notCalled, medium}}
	def := api.ScanGate{Severity: "HIGH"}
	for _, tc := range []struct {
		name   string
		pol    inventory.Policy
		entry  string
		v      *api.BinaryVerdict
		refuse bool
		reason string
	}{
		{"no gate", inventory.Policy{}, "e1", v, false, ""},
		{"default gate: unrated called counts HIGH", inventory.Policy{Gates: []api.ScanGate{def}}, "e1", v, true, "GO-2022-1059"},
		{"dry run reports, refuses nothing", inventory.Policy{Gates: []api.ScanGate{{Severity: "HIGH", DryRun: true}}}, "e1", v, false, "GO-2022-1059"},
		{"entry gate overrides the default", inventory.Policy{Gates: []api.ScanGate{def, {Entry: "e1", Severity: "CRITICAL"}}}, "e1", v, false, ""},
		{"unrated counted as LOW", inventory.Policy{Gates: []api.ScanGate{{Severity: "MEDIUM", Unknown: "LOW"}}}, "e1", v, true, "GHSA-x"},
		{"another entry's gate does not apply", inventory.Policy{Gates: []api.ScanGate{{Entry: "e2", Severity: "LOW"}}}, "e1", v, false, ""},
		{"exception by alias", inventory.Policy{Gates: []api.ScanGate{def}, Exceptions: []api.ScanException{{Vuln: "CVE-2022-32149", Expires: now.Add(time.Hour)}}}, "e1", v, false, ""},
		{"exception for another service", inventory.Policy{Gates: []api.ScanGate{def}, Exceptions: []api.ScanException{{Vuln: "GO-2022-1059", Service: "spiffe://example.org/other", Expires: now.Add(time.Hour)}}}, "e1", v, true, "GO-2022-1059"},
		{"exception for another binary", inventory.Policy{Gates: []api.ScanGate{def}, Exceptions: []api.ScanException{{Vuln: "GO-2022-1059", Binary: strings.Repeat("c", 64), Expires: now.Add(time.Hour)}}}, "e1", v, true, "GO-2022-1059"},
		{"expired exception", inventory.Policy{Gates: []api.ScanGate{def}, Exceptions: []api.ScanException{{Vuln: "GO-2022-1059", Expires: now}}}, "e1", v, true, "GO-2022-1059"},
		{"no verdict: fail closed", inventory.Policy{Gates: []api.ScanGate{def}}, "e1", nil, true, "no vulnerability verdict"},
		{"unknown binary: fail closed", inventory.Policy{Gates: []api.ScanGate{def}}, "e1", &api.BinaryVerdict{SHA256: sha}, true, "no vulnerability verdict"},
		{"clean binary", inventory.Policy{Gates: []api.ScanGate{def}}, "e1", &api.BinaryVerdict{SHA256: sha, Known: true, Findings: []api.InventoryFinding{notCalled}}, false, ""},
	} {
		d := tc.pol.Decide(tc.entry, svc, sha, tc.v, now)
		if d.Refuse != tc.refuse || !strings.Contains(d.Reason, tc.reason) || (tc.reason == "") != (d.Reason == "") {
			t.Errorf("%s: %+v, want refuse=%v with a reason naming %q", tc.name, d, tc.refuse, tc.reason)
		}
		if strings.Contains(d.Reason, "GO-2026-5970") {
			t.Errorf("%s: a not-called finding fails the gate: %s", tc.name, d.Reason)
		}
	}
}
