package audit

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// punchHole frees the disk blocks of [off, off+n) in f without changing
// its size or the offsets of what follows. File systems that cannot do it
// keep the bytes: nothing is lost, only space is not returned.
func punchHole(f *os.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}
