package proxy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 26 ("directories others control"): the proxy's --data directory
// holds the cached policy it enforces after a restart while the server is
// down, and the audit spool. One another local user made first was used
// as it was. Run refuses it before anything else (here, before it would
// connect to the Workload API).
func TestRunRefusesADataDirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-proxy-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	theirs := filepath.Join(tmp, "proxy-data")
	mk := exec.Command("/bin/mkdir", "-m", "0777", theirs)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	// Without the check, Run would wait for a Workload API that is not there.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = Run(ctx, Config{WorkloadSocket: filepath.Join(t.TempDir(), "none.sock"), ServerAddr: "127.0.0.1:1", DataDir: theirs,
		Inbound: &Inbound{Listen: "127.0.0.1:0", App: "127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "the proxy's data directory (--data) "+theirs+" is owned by uid 65534") {
		t.Fatalf("Run with --data made by uid 65534: %v", err)
	}
}
