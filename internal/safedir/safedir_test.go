package safedir

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// asNobody runs a command as uid 65534: the other local user.
func asNobody(t *testing.T, name string, args ...string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v as uid 65534: %v %s", name, args, err, out)
	}
}

// tmpLike returns a directory like /tmp: world-writable and sticky.
func tmpLike(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rampart-safedir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, mode)
}

func TestMakeRefusesWhatOthersControl(t *testing.T) {
	uid := os.Geteuid()
	tests := []struct {
		name    string
		prepare func(t *testing.T, tmp string) string
		wantErr string
	}{
		{"made first by another user", func(t *testing.T, tmp string) string {
			asNobody(t, "/bin/mkdir", "-m", "0700", filepath.Join(tmp, "data"))
			return filepath.Join(tmp, "data")
		}, "is owned by uid 65534"},
		{"created under another user's directory", func(t *testing.T, tmp string) string {
			asNobody(t, "/bin/mkdir", filepath.Join(tmp, "evil"))
			return filepath.Join(tmp, "evil", "data", "agent")
		}, "evil, a parent of"},
		{"a parent writable by others, not sticky", func(t *testing.T, tmp string) string {
			mkdir(t, filepath.Join(tmp, "open"), 0o777)
			return filepath.Join(tmp, "open", "data")
		}, "without the sticky bit"},
		{"writable by group", func(t *testing.T, tmp string) string {
			mkdir(t, filepath.Join(tmp, "data"), 0o770)
			return filepath.Join(tmp, "data")
		}, "chmod go-w"},
		{"a symbolic link to another user's directory", func(t *testing.T, tmp string) string {
			asNobody(t, "/bin/mkdir", filepath.Join(tmp, "theirs"))
			os.Symlink(filepath.Join(tmp, "theirs"), filepath.Join(tmp, "link"))
			return filepath.Join(tmp, "link")
		}, "is owned by uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.prepare(t, tmpLike(t))
			_, err := Make(dir, "the test directory", uid, 0o700)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Make(%s) = %v, want an error saying %q", dir, err, tt.wantErr)
			}
		})
	}
	// Nothing was created under the other user's directory.
	tmp := tmpLike(t)
	if os.Getuid() == 0 {
		asNobody(t, "/bin/mkdir", filepath.Join(tmp, "evil"))
		Make(filepath.Join(tmp, "evil", "data"), "the test directory", uid, 0o700)
		if _, err := os.Lstat(filepath.Join(tmp, "evil", "data")); err == nil {
			t.Fatal("Make created a directory inside another user's directory")
		}
	}
}

func TestMakeCreatesAndResolves(t *testing.T) {
	tmp := tmpLike(t)
	dir := filepath.Join(tmp, "a", "b")
	got, err := Make(dir, "the test directory", os.Geteuid(), 0o700)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if got != dir || fi.Mode().Perm() != 0o700 {
		t.Fatalf("Make = %s mode %v, want %s 0700", got, fi.Mode().Perm(), dir)
	}
	// An existing 0755 directory of ours is fine: others may read, not write.
	mkdir(t, filepath.Join(tmp, "pub"), 0o755)
	if _, err := Make(filepath.Join(tmp, "pub"), "the test directory", os.Geteuid(), 0o700); err != nil {
		t.Fatal(err)
	}
	// A link is resolved: what is used is the checked place.
	os.Symlink(dir, filepath.Join(tmp, "link"))
	if got, err := Check(filepath.Join(tmp, "link"), "the test directory", os.Geteuid()); err != nil || got != dir {
		t.Fatalf("Check(link) = %s, %v; want %s", got, err, dir)
	}
}
