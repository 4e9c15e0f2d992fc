package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/rampartsec/rampart/internal/selector"
)

// Attestor turns a caller into selectors by reading /proc.
type Attestor struct {
	// ProcDir is the proc file system; "/proc" when empty.
	ProcDir string
}

func (a Attestor) procDir() string {
	if a.ProcDir == "" {
		return "/proc"
	}
	return a.ProcDir
}

// errChanged says the caller is not what it was when it connected.
var errChanged = errors.New("the caller changed since it connected")

// Attest returns the caller's selectors: uid and gid from the kernel at
// connect (SO_PEERCRED), supplementary groups, the executable's path, and
// its SHA-256 when withSHA256 is set (hashing a binary is not free, so it
// is done only when some entry asks for it).
//
// Everything read from /proc is read through the directory pinned at
// accept, between two checks that the process is still the one that
// connected (alive, same start time). A caller that has exited, changed
// its effective uid or gid, or runs another executable than at accept is
// refused with an error saying which: nothing is guessed.
func (a Attestor) Attest(p *process, withSHA256 bool) (selector.Set, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.err != nil {
		return nil, p.err
	}
	if p.closed {
		return nil, errors.New("workload: the connection is closed")
	}
	if err := p.aliveLocked(); err != nil {
		return nil, err
	}
	before, err := p.checkStartLocked()
	if err != nil {
		return nil, err
	}
	set := selector.NewSet(
		selector.Selector{Type: selector.UnixUID, Value: strconv.FormatUint(uint64(p.UID), 10)},
		selector.Selector{Type: selector.UnixGID, Value: strconv.FormatUint(uint64(p.GID), 10)},
	)
	b, err := p.readLocked("status")
	if err != nil {
		return nil, fmt.Errorf("workload: pid %d: %w (%v)", p.PID, errGone, err)
	}
	status, err := parseStatus(b)
	if err != nil {
		return nil, fmt.Errorf("workload: pid %d: %w", p.PID, err)
	}
	if status.euid != p.UID || status.egid != p.GID {
		return nil, fmt.Errorf("workload: pid %d: %w: it connected as uid %d gid %d and now runs as uid %d gid %d",
			p.PID, errChanged, p.UID, p.GID, status.euid, status.egid)
	}
	for _, g := range status.groups {
		set[selector.Selector{Type: selector.UnixGID, Value: g}] = struct{}{}
	}
	exe, err := p.exeLocked()
	if err != nil {
		exe = exeID{}
	}
	if exe != p.exe {
		return nil, fmt.Errorf("workload: pid %d: %w: it ran %s when it connected and runs %s now", p.PID, errChanged, p.exe, exe)
	}
	if exe.path != "" && !strings.HasSuffix(exe.path, " (deleted)") {
		set[selector.Selector{Type: selector.UnixPath, Value: exe.path}] = struct{}{}
		if withSHA256 {
			// Hash through /proc/PID/exe, not the path: the path may have
			// been replaced since the process started; exe is what runs.
			sum, err := p.hashExeLocked()
			if err != nil {
				return nil, err
			}
			set[selector.Selector{Type: selector.UnixSHA256, Value: sum}] = struct{}{}
		}
	}
	after, err := p.checkStartLocked()
	if err != nil {
		return nil, err
	}
	if after != before {
		return nil, fmt.Errorf("workload: pid %d: %w", p.PID, errGone)
	}
	if err := p.aliveLocked(); err != nil {
		return nil, err
	}
	return set, nil
}

// checkStartLocked reads the start time and compares it with the one at
// accept: a different one is another process under the same PID.
func (p *process) checkStartLocked() (uint64, error) {
	st, err := p.statLocked()
	if err != nil {
		return 0, err
	}
	if st.start != p.start {
		return 0, fmt.Errorf("workload: pid %d: %w (start time %d, was %d)", p.PID, errGone, st.start, p.start)
	}
	return st.start, nil
}

func (p *process) hashExeLocked() (string, error) {
	f, err := p.openExeLocked()
	if err != nil {
		return "", fmt.Errorf("workload: pid %d: hash executable: %w", p.PID, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("workload: pid %d: hash executable: %w", p.PID, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
