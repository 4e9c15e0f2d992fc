package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/scan/scantest"
)

// buildScanWorkload builds testdata/scanworkload with golang.org/x/text
// v0.3.7 (vulnerable, GO-2022-1059, called) or v0.3.8 (patched).
func buildScanWorkload(t *testing.T, dir string, patched bool) string {
	t.Helper()
	out := filepath.Join(dir, "orders-vulnerable")
	args := []string{"build", "-o", out}
	if patched {
		out = filepath.Join(dir, "orders-patched")
		args = []string{"build", "-modfile=go.patched.mod", "-o", out}
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = filepath.Join("testdata", "scanworkload")
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the scan workload: %v\n%s", err, b)
	}
	return out
}

// runWorkload runs a workload binary against the agent and returns what it
// printed: "svid: ID" or "refused: ...".
func runWorkload(t *testing.T, a *agent, bin string) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET="+a.socket)
	out, _ := cmd.CombinedOutput()
	return strings.TrimSpace(string(out))
}

func osvDir(t *testing.T, vulndb string, ids ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := scantest.CopyRecords(vulndb, dir, ids...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSupplyChainInventoryAlertAndGate: a workload built against a
// vulnerable x/text gets its SVID and shows up in the inventory with its
// hash and modules; a database import that names its flaw raises the
// vulnerable-workload-running alert; with the gate on, the vulnerable
// binary is refused an SVID (reason in the agent's log and the audit log)
// and the patched one gets one; dry run and an exception let it through.
func TestSupplyChainInventoryAlertAndGate(t *testing.T) {
	vulndb, err := scantest.VulnDB()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	root := t.TempDir()
	vuln, patched := buildScanWorkload(t, root, false), buildScanWorkload(t, root, true)
	s := startServer(t, filepath.Join(root, "server"))
	env := s.adminEnv()
	tok := mustCLI(t, env, "token", "create", "--agent-name", "node-1")
	agentDir := filepath.Join(root, "agent")
	os.MkdirAll(agentDir, 0o700)
	os.WriteFile(filepath.Join(agentDir, "join-token"), []byte(tok), 0o600)
	a := startAgentWith(t, s, agentDir, []string{"RAMPART_JOIN_TOKEN_FILE=" + filepath.Join(agentDir, "join-token"), "RAMPART_INVENTORY_INTERVAL=500ms"})
	const orders = "spiffe://example.org/orders"
	mustCLI(t, env, "entry", "create", "--spiffe-id", orders, "--parent", agentID, "--selector", myUID())

	// A database that does not name the workload's flaw (GO-2021-0113 is
	// fixed in x/text v0.3.7).
	mustCLI(t, env, "scan", "db", "import", "--remote", "--source", "clean", osvDir(t, vulndb, "GO-2021-0113"))
	eventually(t, 30*time.Second, "the workload gets its SVID", func() error {
		if out := runWorkload(t, a, vuln); out != "svid: "+orders {
			return errorf("workload: %s", out)
		}
		return nil
	})
	sum := sha256File(t, vuln)
	eventually(t, 30*time.Second, "the workload is in the inventory", func() error {
		var items []api.InventoryItem
		out, err := cli(t, env, "inventory", "list", "--service", orders, "--json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			return err
		}
		for _, it := range items {
			if it.SHA256 == sum && it.Host == agentID && it.GoVersion != "" && hasModule(it.Modules, "golang.org/x/text", "v0.3.7") && len(it.Findings) == 0 {
				return nil
			}
		}
		return errorf("inventory: %s", out)
	})

	// The database now names it: the running workload is re-matched and
	// the default rule raises an alert.
	mustCLI(t, env, "scan", "db", "import", "--remote", "--source", "vulndb", osvDir(t, vulndb, "GO-2021-0113", "GO-2022-1059"))
	eventually(t, 30*time.Second, "vulnerable-workload-running fires", func() error {
		out, err := cli(t, env, "alert", "list", "--json", "--rule", "vulnerable-workload-running")
		if err != nil {
			return err
		}
		if !strings.Contains(out, orders) {
			return errorf("alerts: %s", out)
		}
		return nil
	})
	if out := mustCLI(t, env, "inventory", "show", sum); !strings.Contains(out, "GO-2022-1059 called") {
		t.Errorf("inventory show: %s", out)
	}

	// The gate: the vulnerable binary is refused, the patched one served.
	mustCLI(t, env, "scan", "gate", "set", "--default", "--severity", "HIGH")
	eventually(t, 30*time.Second, "the gate refuses the vulnerable binary", func() error {
		if out := runWorkload(t, a, vuln); !strings.HasPrefix(out, "refused:") || !strings.Contains(out, "scan gate") {
			return errorf("workload: %s", out)
		}
		return nil
	})
	if log := a.out.String(); !strings.Contains(log, "scan gate: SVID refused") || !strings.Contains(log, "GO-2022-1059") {
		t.Errorf("the agent's log does not say why:\n%s", log)
	}
	if out := runWorkload(t, a, patched); out != "svid: "+orders {
		t.Errorf("the patched binary: %s", out)
	}
	eventually(t, 30*time.Second, "the refusal is in the audit log", func() error {
		out, err := cli(t, nil, "audit", "query", "--data", s.dir, "--action", "workload.attest", "--json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "GO-2022-1059") || !strings.Contains(out, `"scan_gate":"refused"`) || !strings.Contains(out, `"denied"`) {
			return errorf("audit: %s", out)
		}
		return nil
	})

	// Dry run: reported, not refused.
	mustCLI(t, env, "scan", "gate", "set", "--default", "--severity", "HIGH", "--dry-run")
	eventually(t, 30*time.Second, "dry run lets it through", func() error {
		if out := runWorkload(t, a, vuln); out != "svid: "+orders {
			return errorf("workload: %s", out)
		}
		return nil
	})
	if !strings.Contains(a.out.String(), "scan gate (dry run): would refuse") {
		t.Error("dry run: the agent's log does not say what it would refuse")
	}

	// An exception (by CVE alias, for this service) lets it through the
	// real gate until it expires.
	mustCLI(t, env, "scan", "gate", "set", "--default", "--severity", "HIGH")
	eventually(t, 30*time.Second, "the gate is back", func() error {
		if out := runWorkload(t, a, vuln); !strings.HasPrefix(out, "refused:") {
			return errorf("workload: %s", out)
		}
		return nil
	})
	id := mustCLI(t, env, "scan", "exception", "add", "--vuln", "CVE-2022-32149", "--service", orders, "--reason", "fix ships Monday", "--expires", "72h")
	if out := mustCLI(t, env, "scan", "exception", "list"); !strings.Contains(out, id) || !strings.Contains(out, "fix ships Monday") {
		t.Errorf("exception list: %s", out)
	}
	eventually(t, 30*time.Second, "the exception lets it through", func() error {
		if out := runWorkload(t, a, vuln); out != "svid: "+orders {
			return errorf("workload: %s", out)
		}
		return nil
	})
	mustCLI(t, env, "scan", "exception", "remove", id)
	eventually(t, 30*time.Second, "removing the exception refuses it again", func() error {
		if out := runWorkload(t, a, vuln); !strings.HasPrefix(out, "refused:") {
			return errorf("workload: %s", out)
		}
		return nil
	})
}

func hasModule(ms []api.GoModule, path, version string) bool {
	for _, m := range ms {
		if m.Path == path && m.Version == version {
			return true
		}
	}
	return false
}

func sha256File(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
