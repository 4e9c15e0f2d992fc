// Package safedir makes and checks directories that no other local user
// can change: where the agent's Workload API socket lives, where the agent
// and the server keep their keys and state.
//
// Owning a directory is not enough. Whoever can write to its parent can
// rename it away and put their own in its place (the sticky bit, as on
// /tmp, limits that to the entry's owner), so every directory above must
// be owned by root or the user too, and be writable by others only with
// the sticky bit. A directory that fails is refused with an error naming
// it, its owner or mode, and the fix; nothing is chowned or chmodded
// behind the operator's back.
package safedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Check verifies that dir (what, in messages: "the agent's data
// directory") can be changed only by root and uid: dir is owned by uid and
// not writable by group or others, and every directory above it is owned
// by root or uid and writable by others only with the sticky bit. Symbolic
// links in dir are resolved first, and the resolved path is returned: use
// it, since a link could be changed later.
func Check(dir, what string, uid int) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("safedir: %s: %w", what, err)
	}
	if real, err = filepath.Abs(real); err != nil {
		return "", fmt.Errorf("safedir: %s: %w", what, err)
	}
	if err := checkOwn(real, what, uid); err != nil {
		return "", err
	}
	return real, checkAncestors(filepath.Dir(real), real, uid)
}

// Make creates dir (mode perm, each missing component) unless it exists,
// after checking that the directories it would be created in are safe, and
// then checks it as Check does.
func Make(dir, what string, uid int, perm os.FileMode) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("safedir: %s: %w", what, err)
	}
	existing, missing := abs, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("safedir: %s: %w", what, err)
		}
		missing = filepath.Join(filepath.Base(existing), missing)
		existing = filepath.Dir(existing)
	}
	if missing != "" {
		real, err := filepath.EvalSymlinks(existing)
		if err != nil {
			return "", fmt.Errorf("safedir: %s: %w", what, err)
		}
		// Nothing is created under a directory someone else controls.
		if err := checkAncestors(real, abs, uid); err != nil {
			return "", err
		}
		abs = filepath.Join(real, missing)
		if err := os.MkdirAll(abs, perm); err != nil {
			return "", fmt.Errorf("safedir: %s: %w", what, err)
		}
	}
	return Check(abs, what, uid)
}

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

func checkOwn(dir, what string, uid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("safedir: %s: %w", what, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("safedir: %s %s is not a directory", what, dir)
	}
	if o := owner(fi); int64(o) != int64(uid) {
		return fmt.Errorf("safedir: %s %s is owned by uid %d, not by this process (uid %d): its owner could replace what is kept there; "+
			"remove it (rm -r %s) and start again, or choose another directory", what, dir, o, uid, dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("safedir: %s %s is writable by group or others (mode %v): they could replace what is kept there; chmod go-w %s",
			what, dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// checkAncestors checks from and every directory above it as parents of
// dir.
func checkAncestors(from, dir string, uid int) error {
	for d := from; ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("safedir: %s: %w", d, err)
		}
		if o := owner(fi); o != 0 && int64(o) != int64(uid) {
			return fmt.Errorf("safedir: %s, a parent of %s, is owned by uid %d (neither root nor this process, uid %d): "+
				"its owner could move what is below it away and put their own in its place; choose a directory under ones only root or uid %d can change",
				d, dir, o, uid, uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("safedir: %s, a parent of %s, is writable by group or others without the sticky bit (mode %v): "+
				"anyone could move what is below it away; choose a directory under ones only root or uid %d can change", d, dir, fi.Mode(), uid)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
