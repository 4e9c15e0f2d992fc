package workload

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Workload API socket's directory decides who can replace the socket.
// Another local user (uid 65534) prepares each trap below before the agent
// (root) starts; the agent must refuse to listen, and say why.
func TestListenRefusesDirectoryOthersControl(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, tmp string) string // returns the socket path
		wantErr string
	}{
		{"directory made first by another user in /tmp", func(t *testing.T, tmp string) string {
			runAs(t, "/bin/mkdir", filepath.Join(tmp, "rampart-agent"))
			return filepath.Join(tmp, "rampart-agent", "workload.sock")
		}, "is owned by uid 65534"},
		{"another user's fake socket already listening there", func(t *testing.T, tmp string) string {
			runAs(t, "/bin/mkdir", "-m", "0755", filepath.Join(tmp, "rampart-agent"))
			sock := filepath.Join(tmp, "rampart-agent", "workload.sock")
			plantSocket(t, sock)
			return sock
		}, "is owned by uid 65534"},
		{"a parent owned by another user", func(t *testing.T, tmp string) string {
			runAs(t, "/bin/mkdir", filepath.Join(tmp, "evil"))
			// root's own directory, but inside the other user's: they can
			// rename it away and put theirs in its place.
			mustMkdir(t, filepath.Join(tmp, "evil", "rampart"), 0o755)
			return filepath.Join(tmp, "evil", "rampart", "workload.sock")
		}, "evil, a parent of"},
		{"a parent writable by others without the sticky bit", func(t *testing.T, tmp string) string {
			mustMkdir(t, filepath.Join(tmp, "open"), 0o777)
			mustMkdir(t, filepath.Join(tmp, "open", "rampart"), 0o755)
			return filepath.Join(tmp, "open", "rampart", "workload.sock")
		}, "writable by group or others without the sticky bit"},
		{"the socket directory writable by others", func(t *testing.T, tmp string) string {
			mustMkdir(t, filepath.Join(tmp, "rampart"), 0o777)
			return filepath.Join(tmp, "rampart", "workload.sock")
		}, "chmod go-w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := tt.prepare(t, fakeTmp(t))
			ln, err := Listen(sock, os.Geteuid())
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%s) accepted a directory another user controls", sock)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not say %q", err, tt.wantErr)
			}
		})
	}
}

// What the agent creates itself, in /tmp or elsewhere, is safe to use.
func TestListenCreatesItsDirectory(t *testing.T) {
	tmp := fakeTmp(t)
	sock := filepath.Join(tmp, "rampart-agent", "workload.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("socket directory mode %v, want 0755", fi.Mode().Perm())
	}
	// A second start replaces the stale socket in its own directory.
	ln.Close()
	ln2, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	ln2.Close()
}

// fakeTmp returns a directory like /tmp: world-writable with the sticky bit.
func fakeTmp(t *testing.T) string {
	t.Helper()
	dir := sharedDir(t)
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustMkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}
