package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rampartsec/rampart/internal/identity"
)

// Another local user (uid 65534) created the agent's data directory first
// (in /tmp, or anywhere they can write): they could later swap cache.json,
// which holds the trust bundle and the keys. The agent refuses to start.
func TestNewRefusesDataDirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-agent-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	data := filepath.Join(tmp, "rampart-agent-data")
	mk := exec.Command("/bin/mkdir", "-m", "0777", data)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	os.WriteFile(bundle, identity.EncodePEM(testHeld(t).Chain), 0o644)

	_, err = New(Config{ServerAddr: "127.0.0.1:1", BundleFile: bundle, SocketPath: filepath.Join(t.TempDir(), "s", "api.sock"), DataDir: data})
	if err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
		t.Fatalf("agent.New in a data directory uid 65534 made: %v", err)
	}
	// Its own directory is fine.
	if _, err := New(Config{ServerAddr: "127.0.0.1:1", BundleFile: bundle, SocketPath: filepath.Join(t.TempDir(), "s", "api.sock"), DataDir: filepath.Join(t.TempDir(), "data")}); err != nil {
		t.Fatal(err)
	}
}

// Red team finding 6 (class): a cache.json group or others may read (the
// agent's key, the workloads' keys) was accepted. The agent refuses it,
// naming the chmod.
func TestNewRefusesReadableCache(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(data, "cache.json")
	if err := os.WriteFile(cache, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cache, 0o644) // past the umask
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	os.WriteFile(bundle, identity.EncodePEM(testHeld(t).Chain), 0o644)
	_, err := New(Config{ServerAddr: "127.0.0.1:1", BundleFile: bundle, SocketPath: filepath.Join(t.TempDir(), "s", "api.sock"), DataDir: data})
	if err == nil || !strings.Contains(err.Error(), "has mode 0644") || !strings.Contains(err.Error(), "chmod 600 "+cache) {
		t.Fatalf("agent.New with a cache.json of mode 0644: %v", err)
	}
}
