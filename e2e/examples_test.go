package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The walkthrough of examples/README.md against a real server and agent:
// the two example services, built as a user builds them, get their SVIDs
// from the agent and payments' policy from the server; orders charges
// through payments over mutual TLS, payments' decision reaches the audit
// log, and a policy without the rule stops the next charge.
func TestExamples(t *testing.T) {
	m := newMesh(t)
	build := exec.Command("go", "build", "-o", m.binDir+"/", "../examples/payments", "../examples/orders")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the examples: %v\n%s", err, out)
	}
	for _, svc := range []string{"payments", "orders"} {
		mustCLI(t, m.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/examples/"+svc, "--parent", agentID,
			"--selector", myUID(), "--selector", "unix:path:"+filepath.Join(m.binDir, svc))
	}
	policy, err := os.ReadFile("../examples/payments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m.putPolicy(strings.ReplaceAll(string(policy), "demo.rampart.local", "example.org"))

	env := []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + m.a.socket, "RAMPART_SERVER=" + m.s.addr}
	payAddr, ordAddr := freeAddr(t), freeAddr(t)
	startBin(t, filepath.Join(m.binDir, "payments"), env, "-listen", payAddr, "-audit-spool", filepath.Join(m.binDir, "payments-spool"))
	startBin(t, filepath.Join(m.binDir, "orders"), env, "-listen", ordAddr, "-payments", payAddr)

	order := func() (int, string) {
		resp, err := http.Post("http://"+ordAddr+"/orders", "application/json", strings.NewReader(`{"amount_cents": 1250}`))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err.Error()
		}
		return resp.StatusCode, string(b)
	}
	eventually(t, 30*time.Second, "an order charged through payments", func() error {
		code, body := order()
		if code != http.StatusCreated {
			return fmt.Errorf("%d %s", code, body)
		}
		var got struct {
			Charge struct {
				Amount int    `json:"amount_cents"`
				Caller string `json:"caller"`
			} `json:"charge"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Charge.Amount != 1250 || got.Charge.Caller != "spiffe://example.org/examples/orders" {
			t.Fatalf("the charge: %s", body)
		}
		return nil
	})
	eventually(t, 20*time.Second, "payments' decision in the audit log", func() error {
		out := mustCLI(t, nil, "audit", "query", "--data", m.s.dir, "--action", "authz.decision", "--target", "spiffe://example.org/examples/payments", "--json")
		if !strings.Contains(out, `"source":"spiffe://example.org/examples/payments"`) || !strings.Contains(out, `"rule":"orders-charges"`) {
			return fmt.Errorf("not yet: %s", out)
		}
		return nil
	})

	// Without the rule, the next charge is refused by payments, no restart.
	var kept []string
	skip := 0
	for _, line := range strings.Split(strings.ReplaceAll(string(policy), "demo.rampart.local", "example.org"), "\n") {
		if strings.Contains(line, "name: orders-charges") {
			skip = 4
		}
		if skip > 0 {
			skip--
			continue
		}
		kept = append(kept, line)
	}
	m.putPolicy(strings.Join(kept, "\n"))
	eventually(t, 10*time.Second, "the charge refused under the new policy", func() error {
		if code, body := order(); code != http.StatusBadGateway || !strings.Contains(body, "payments answered 403") {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}
