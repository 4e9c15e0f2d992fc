package workload

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

// Listen creates the Workload API socket at path for an agent running as
// uid, replacing a stale socket of its own. The socket gets mode 0666: any
// local process may ask, and attestation decides what it gets. What keeps
// another local user from putting a fake Workload API in its place is the
// directory, so Listen creates it (0755) if it is missing and refuses to
// listen unless
//
//   - the socket's directory is owned by uid and not writable by group or
//     others, and
//   - every directory above it is owned by root or uid, and writable by
//     group or others only with the sticky bit (as /tmp: there, nobody
//     but its owner can rename or remove the agent's directory).
//
// Symbolic links in path are resolved first and the socket is created at
// the resolved place, so a link nobody checked cannot redirect it later.
func Listen(path string, uid int) (net.Listener, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("workload: socket path %q: %w", path, err)
	}
	dir, err := makeSocketDir(filepath.Dir(abs), uid)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, filepath.Base(abs))
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("workload: %s exists and is not a socket; refusing to replace it", sock)
		}
		os.Remove(sock)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("workload: listen %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workload: %w", err)
	}
	return ln, nil
}

// makeSocketDir checks the existing part of dir's path, creates the rest,
// checks the whole, and returns dir with symbolic links resolved.
func makeSocketDir(dir string, uid int) (string, error) {
	existing, missing := dir, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("workload: socket directory: %w", err)
		}
		missing = filepath.Join(filepath.Base(existing), missing)
		existing = filepath.Dir(existing)
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", fmt.Errorf("workload: socket directory: %w", err)
	}
	if missing != "" {
		// Check before creating anything under it.
		if err := checkAncestors(real, uid); err != nil {
			return "", err
		}
		real = filepath.Join(real, missing)
		if err := os.MkdirAll(real, 0o755); err != nil {
			return "", fmt.Errorf("workload: %w", err)
		}
	}
	if err := checkSocketDir(real, uid); err != nil {
		return "", err
	}
	return real, checkAncestors(filepath.Dir(real), uid)
}

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

func checkSocketDir(dir string, uid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("workload: socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workload: socket directory %s is not a directory", dir)
	}
	if o := owner(fi); int64(o) != int64(uid) {
		return fmt.Errorf("workload: the socket directory %s is owned by uid %d, not by this agent (uid %d): "+
			"its owner can replace the socket with a fake Workload API; remove it (rm -r %s) and start again, or choose another --socket",
			dir, o, uid, dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("workload: the socket directory %s is writable by group or others (mode %v): they could replace the socket; chmod 755 %s",
			dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// checkAncestors checks dir and every directory above it as parents of
// the socket directory.
func checkAncestors(dir string, uid int) error {
	for d := dir; ; d = filepath.Dir(d) {
		if err := checkParent(d, uid); err != nil {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func checkParent(d string, uid int) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return fmt.Errorf("workload: socket directory: %w", err)
	}
	if o := owner(fi); o != 0 && int64(o) != int64(uid) {
		return fmt.Errorf("workload: %s, a parent of the socket directory, is owned by uid %d (neither root nor this agent, uid %d): "+
			"its owner can move the socket directory away and put their own in its place; choose a --socket under directories only root or the agent can change (default %s)",
			d, o, uid, endpoint.SystemDir)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("workload: %s, a parent of the socket directory, is writable by group or others without the sticky bit (mode %v): "+
			"anyone can move the socket directory away; choose a --socket under directories only root or the agent can change (default %s)",
			d, fi.Mode(), endpoint.SystemDir)
	}
	return nil
}
