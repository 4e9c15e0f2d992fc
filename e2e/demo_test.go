package e2e

import (
	"os"
	"os/exec"
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
	// Start-up steps are shown on a terminal only: not here.
	if strings.Contains(out, "demo: starting the server") {
		t.Fatalf("progress lines written to a pipe:\n%s", out)
	}
	// Its suggestions use rampart: without it on the PATH, it says how to get it.
	if _, err := exec.LookPath("rampart"); err != nil && !strings.Contains(out, "go install ./cmd/rampart") {
		t.Fatalf("rampart is not on the PATH and the demo does not say how to install it:\n%s", out)
	}
	socket := filepath.Join(dir, "agent", "workload.sock")
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("no Workload API socket while running: %v", err)
	}
	// The legitimate path: gateway -> orders -> payments, each hop mTLS.
	i := strings.Index(out, "curl http://")
	gw := strings.TrimSuffix(strings.Fields(out[i+len("curl "):])[0], "/orders/42")
	code, body := get(t, gw+"/orders/42", nil)
	if code != 200 || !strings.Contains(body, `"verified_caller":"spiffe://demo.rampart.local/orders"`) || !strings.Contains(body, `"status":"settled"`) {
		t.Fatalf("call through the demo system: %d %s", code, body)
	}
	// The customers service (SDK, encrypted fields) serves its record.
	if !strings.Contains(out, "customers mTLS on 127.0.0.1:") || !strings.Contains(out, "encrypted per field with key customers-pii") {
		t.Fatalf("demo output lacks the customers service:\n%s", out)
	}
	if n := countProcs(filepath.Join(dir, "bin")); n != 4 {
		t.Fatalf("%d service processes running, want 4 (three proxies and customers)", n)
	}
	p.stop()
	if n := countProcs(filepath.Join(dir, "bin")); n != 0 {
		t.Fatalf("%d proxy processes left after stop", n)
	}
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
	for _, name := range []string{"admin-without-token", "stolen-operator-token", "join-token-replay", "foreign-ca-agent", "csr-for-another-id", "unregistered-workload", "revoked-agent",
		"eavesdrop-plaintext", "no-client-certificate", "forged-identity-header", "forbidden-call", "path-tricks", "confused-deputy", "refresh-token-replay", "login-brute-force", "stolen-access-token", "stolen-database", "tampered-audit-entry"} {
		block := out[strings.Index(out, "attack "+name):]
		if i := strings.Index(block[1:], "\nattack "); i > 0 {
			block = block[:i]
		}
		if !strings.Contains(block, "result:  STOPPED") || !strings.Contains(block, "prevent: ") {
			t.Errorf("attack %s not reported stopped:\n%s", name, block)
		}
	}
	// Detect: the attacks that leave a pattern raise the matching alert.
	for name, rule := range map[string]string{"admin-without-token": "denied admin.auth entry in the audit log", "stolen-operator-token": "denied admin.auth entry", "foreign-ca-agent": "denied tls.client_auth entry",
		"csr-for-another-id": "denied svid.issue entry", "path-tricks": "denied authz.decision entry", "confused-deputy": "as user alice, act spiffe://demo.rampart.local/orders, GET /users/bob/card", "forbidden-call": "alert denied-burst", "revoked-agent": "alert revoked-credential-use", "tampered-audit-entry": "no longer hashes",
		"refresh-token-replay": "alert refresh-token-reuse", "login-brute-force": "alert login-failures",
		"stolen-database": "alert key-use-denied", "stolen-access-token": "denied oauth.userinfo entry",
		"unregistered-workload": "denied workload.attest entry", "partner-trust-domain": "denied authz.decision entry"} {
		block := out[strings.Index(out, "attack "+name):]
		if i := strings.Index(block[1:], "\nattack "); i > 0 {
			block = block[:i]
		}
		if !strings.Contains(block, "detect:  ") || !strings.Contains(block, rule) {
			t.Errorf("attack %s: detection not reported (want %q):\n%s", name, rule, block)
		}
	}
	if !strings.Contains(out, "20 attacks, 20 stopped, 0 not stopped") {
		t.Fatalf("summary missing:\n%s", out)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatal("socket left behind after --attacks")
	}
	if n := countProcs(filepath.Join(dir, "bin")); n != 0 {
		t.Fatalf("%d proxy processes left after --attacks", n)
	}
}

// countProcs counts running processes whose executable is under dir.
func countProcs(dir string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, dir+"/") {
			n++
		}
	}
	return n
}
