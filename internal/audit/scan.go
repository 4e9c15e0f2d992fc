package audit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrStop, returned by a Scan callback, ends the scan without an error.
var ErrStop = errors.New("audit: stop scanning")

// Scan calls fn with the index and canonical bytes of every entry in dir
// from index from on. It only reads (it is safe while a server appends to
// the log) and sees the entries whose offsets were recorded when it started,
// which are complete: entries are synced before their offsets are written.
func Scan(dir string, from int64, fn func(i int64, entry []byte) error) error {
	of, err := os.Open(filepath.Join(dir, "offsets.bin"))
	if err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	defer of.Close()
	fi, err := of.Stat()
	if err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	n := fi.Size() / 8
	if from < 0 {
		from = 0
	}
	if from >= n {
		return nil
	}
	var ob [8]byte
	if _, err := of.ReadAt(ob[:], 8*from); err != nil {
		return fmt.Errorf("audit: scan: offset %d: %w", from, err)
	}
	ef, err := os.Open(filepath.Join(dir, "entries.log"))
	if err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	defer ef.Close()
	if _, err := ef.Seek(int64(binary.BigEndian.Uint64(ob[:])), io.SeekStart); err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	r := bufio.NewReaderSize(ef, 1<<20)
	var buf []byte
	for i := from; i < n; i++ {
		size, err := binary.ReadUvarint(r)
		if err != nil || size == 0 || size > MaxEntrySize {
			return fmt.Errorf("audit: scan: entry %d unreadable (run rampart audit verify)", i)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("audit: scan: entry %d cut short (run rampart audit verify)", i)
		}
		if err := fn(i, buf); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// Count returns how many entries dir holds (as Scan would see them).
func Count(dir string) (int64, error) {
	fi, err := os.Stat(filepath.Join(dir, "offsets.bin"))
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	return fi.Size() / 8, nil
}
