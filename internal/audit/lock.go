package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrInUse is returned by Open and Repair when another Log (a running
// server, or a repair) has the directory open for writing.
var ErrInUse = errors.New("audit: the log is open in another process (is the server running?)")

var errLocked = errors.New("locked")

// lockDir takes DIR/lock, held while a Log (or Repair) may write to dir:
// two writers would interleave their appends and each cut off what it
// takes for the other's torn write. Readers (Verify, Scan) take no lock.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, dir)
		}
		return nil, fmt.Errorf("audit: lock %s: %w", dir, err)
	}
	return f, nil
}
