package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's main job: rampart demo starts, serves, stops cleanly on
// SIGTERM, reuses its data dir, and every scripted attack is stopped.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	p := start(t, nil, "demo", "--data", dir)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.out.String(), "ready; press Ctrl-C to stop") {
		if time.Now().After(deadline) {
			t.Fatalf("demo not ready within 60s:\n%s", p.out.String())
		}
		select {
		case <-p.done:
			t.Fatalf("demo exited early:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	out := p.out.String()
	for _, want := range []string{"server    https://127.0.0.1:", "spiffe://demo.rampart.local/rampart/agent/demo-node", "chain verified against the bundle"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	socket := filepath.Join(dir, "agent", "workload.sock")
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("no Workload API socket while running: %v", err)
	}
	p.stop()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("demo exited with %d after SIGTERM:\n%s", code, p.out.String())
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after stop: %v", err)
	}

	// Second start reuses the data dir and runs every attack.
	out, err := cli(t, nil, "demo", "--data", dir, "--attacks")
	if err != nil {
		t.Fatalf("demo --attacks: %v\n%s", err, out)
	}
	for _, name := range []string{"admin-without-token", "join-token-replay", "foreign-ca-agent", "csr-for-another-id", "unregistered-workload", "revoked-agent"} {
		block := out[strings.Index(out, "attack "+name):]
		if i := strings.Index(block[1:], "\nattack "); i > 0 {
			block = block[:i]
		}
		if !strings.Contains(block, "result:  STOPPED") || !strings.Contains(block, "prevent: ") {
			t.Errorf("attack %s not reported stopped:\n%s", name, block)
		}
	}
	if !strings.Contains(out, "6 attacks, 6 stopped, 0 not stopped") {
		t.Fatalf("summary missing:\n%s", out)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatal("socket left behind after --attacks")
	}
}
