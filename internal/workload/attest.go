package workload

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rampartsec/rampart/internal/selector"
)

// Attestor turns a caller into selectors by reading /proc.
type Attestor struct {
	// ProcDir is the proc file system; "/proc" when empty.
	ProcDir string
}

// Attest returns the caller's selectors: uid and gid from the kernel,
// supplementary groups, the executable's path, and its SHA-256 when
// withSHA256 is set (hashing a binary is not free, so it is done only when
// some entry asks for it). A process that has exited keeps only its uid and
// gid selectors: nothing is guessed.
func (a Attestor) Attest(c Caller, withSHA256 bool) selector.Set {
	proc := a.ProcDir
	if proc == "" {
		proc = "/proc"
	}
	set := selector.NewSet(
		selector.Selector{Type: selector.UnixUID, Value: strconv.FormatUint(uint64(c.UID), 10)},
		selector.Selector{Type: selector.UnixGID, Value: strconv.FormatUint(uint64(c.GID), 10)},
	)
	if c.PID <= 0 {
		return set
	}
	dir := filepath.Join(proc, strconv.Itoa(int(c.PID)))
	for _, g := range supplementaryGroups(filepath.Join(dir, "status")) {
		set[selector.Selector{Type: selector.UnixGID, Value: g}] = struct{}{}
	}
	exe, err := os.Readlink(filepath.Join(dir, "exe"))
	if err != nil || strings.HasSuffix(exe, " (deleted)") {
		return set
	}
	set[selector.Selector{Type: selector.UnixPath, Value: exe}] = struct{}{}
	if withSHA256 {
		// Hash through /proc/PID/exe, not the path: the path may have been
		// replaced since the process started; exe is what actually runs.
		if sum, err := hashFile(filepath.Join(dir, "exe")); err == nil {
			set[selector.Selector{Type: selector.UnixSHA256, Value: sum}] = struct{}{}
		}
	}
	return set
}

func supplementaryGroups(statusFile string) []string {
	f, err := os.Open(statusFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Groups:"); ok {
			var out []string
			for _, g := range strings.Fields(rest) {
				if _, err := strconv.ParseUint(g, 10, 32); err == nil {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("workload: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
