package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Another local user created the server's data directory first: they could
// later swap admin.token, the keys or the audit log. The server refuses.
func TestNewRefusesDataDirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-server-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	data := filepath.Join(tmp, "rampart-data")
	mk := exec.Command("/bin/mkdir", "-m", "0777", data)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	srv, err := New(context.Background(), Config{DataDir: data, TrustDomain: td, Listen: "127.0.0.1:0"})
	if err == nil {
		srv.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
		t.Fatalf("server.New in a data directory uid 65534 made: %v", err)
	}
}
