package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestAuditWitness: a witness on "another machine" keeps the server's
// checkpoints. An administrator then rewrites the whole log (deletes it
// and lets the server start a new one, signed with the same key, longer
// than before): every checkpoint on the server verifies, but the witness
// reports the rewrite, and verify with the witness's checkpoint finds it.
func TestAuditWitness(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "server")
	wdir := filepath.Join(root, "witness")
	s := startServer(t, dir)
	addr := s.addr
	tokens := func(n int) {
		for range n {
			mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-"+strconv.Itoa(n))
		}
	}
	witness := func() (string, error) {
		return cli(t, nil, "audit", "witness", "--once", "--server", addr, "--ca-bundle", filepath.Join(dir, "bundle.pem"),
			"--key", filepath.Join(dir, "audit.pub"), "--dir", wdir)
	}
	restart := func() { // stopping publishes a checkpoint of everything so far
		s.stop()
		s = startServerAt(t, dir, addr)
	}
	sizeRE := regexp.MustCompile(`(\d+) entries`)
	tokens(3)
	restart()
	out, err := witness()
	if err != nil {
		t.Fatalf("first witness run: %v\n%s", err, out)
	}
	first := sizeRE.FindStringSubmatch(out)
	tokens(3)
	restart()
	out, err = witness()
	if err != nil || !strings.Contains(out, "consistent: "+first[1]+" -> ") {
		t.Fatalf("second witness run: %v\n%s", err, out)
	}
	kept := sizeRE.FindAllStringSubmatch(out, -1)
	size, _ := strconv.Atoi(kept[len(kept)-1][1])

	// The rewrite: same keys, a fresh log, more entries than the witness saw.
	s.stop()
	if err := os.RemoveAll(filepath.Join(dir, "audit")); err != nil {
		t.Fatal(err)
	}
	s = startServerAt(t, dir, addr)
	tokens(size + 2)
	restart()
	if out, err := cli(t, nil, "audit", "verify", "--data", dir); err != nil {
		t.Fatalf("the rewritten log verifies against its own checkpoints, as a forger would make sure: %v\n%s", err, out)
	}
	out, err = witness()
	if err == nil || !strings.Contains(out, "ALERT") || !strings.Contains(out, "does not extend") {
		t.Fatalf("witness after the rewrite: %v\n%s", err, out)
	}
	ev, _ := os.ReadDir(filepath.Join(wdir, "evidence"))
	if len(ev) != 1 {
		t.Fatalf("%d evidence files, want 1", len(ev))
	}
	out, err = cli(t, nil, "audit", "verify", "--data", dir, "--witness", filepath.Join(wdir, "checkpoint"))
	if err == nil || !strings.Contains(out, "checkpoint") {
		t.Fatalf("verify with the witnessed checkpoint: %v\n%s", err, out)
	}
}
