package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// TimeBlock is how many entries one time-index record summarises.
const TimeBlock = 4096

// timeIndexFile holds, for each complete block of TimeBlock entries, the
// earliest and latest entry time in it (Unix nanoseconds, big endian, 16
// bytes a block). It is derived data: rebuilt from the entries when
// missing or short, never trusted to say more than "no entry of this
// block is in that time range". Entries are not strictly in time order
// (agents and proxies deliver spooled entries late), which is why each
// block keeps a range rather than the index a time starts at.
const timeIndexFile = "index/time.bin"

// ScanTime is Scan restricted to entries whose time may fall in [since,
// until) (zero: open): blocks whose whole time range lies outside are
// skipped without being read. Years of log are searched for the last day
// by reading the index and the blocks of that day. The index is extended
// to every complete block first (when dir is writable; otherwise the scan
// reads every block); fn still sees every entry of a block it reads, and
// must filter on time itself.
func ScanTime(dir string, since, until time.Time, fn func(i int64, entry []byte) error) error {
	n, err := Count(dir)
	if err != nil {
		return err
	}
	idx, err := extendTimeIndex(dir, n)
	if err != nil {
		idx = nil // unreadable or read-only: scan everything
	}
	lo, hi := int64(-1<<63), int64(1<<63-1)
	if !since.IsZero() {
		lo = since.UnixNano()
	}
	if !until.IsZero() {
		hi = until.UnixNano()
	}
	for start := int64(0); start < n; start += TimeBlock {
		k := start / TimeBlock
		if k < int64(len(idx)) && (idx[k][1] < lo || idx[k][0] >= hi) {
			continue
		}
		end := min(start+TimeBlock, n)
		stopped := false
		err := Scan(dir, start, func(i int64, e []byte) error {
			if i >= end {
				return ErrStop
			}
			if err := fn(i, e); err != nil {
				stopped = errors.Is(err, ErrStop)
				return err
			}
			return nil
		})
		if err != nil || stopped {
			return err
		}
	}
	return nil
}

// extendTimeIndex returns the [min, max] times of every complete block,
// computing and appending those the index file lacks.
func extendTimeIndex(dir string, n int64) ([][2]int64, error) {
	path := filepath.Join(dir, timeIndexFile)
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	have := int64(len(raw) / 16)
	idx := make([][2]int64, 0, n/TimeBlock)
	for k := range have {
		idx = append(idx, [2]int64{int64(binary.BigEndian.Uint64(raw[16*k:])), int64(binary.BigEndian.Uint64(raw[16*k+8:]))})
	}
	complete := n / TimeBlock
	if have >= complete {
		return idx[:complete], nil
	}
	var add []byte
	cur := [2]int64{1<<63 - 1, -1 << 63}
	err = Scan(dir, have*TimeBlock, func(i int64, e []byte) error {
		if i >= complete*TimeBlock {
			return ErrStop
		}
		t, err := entryTime(e)
		if err != nil {
			return fmt.Errorf("audit: entry %d: %w", i, err)
		}
		cur[0], cur[1] = min(cur[0], t), max(cur[1], t)
		if (i+1)%TimeBlock == 0 {
			idx = append(idx, cur)
			add = binary.BigEndian.AppendUint64(add, uint64(cur[0]))
			add = binary.BigEndian.AppendUint64(add, uint64(cur[1]))
			cur = [2]int64{1<<63 - 1, -1 << 63}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Best effort: a reader without write access just recomputes next time.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
			f.WriteAt(add, 16*have)
			f.Close()
		}
	}
	return idx, nil
}

var timeKey = []byte(`"time":"`)

// entryTime reads an entry's time without decoding the rest: canonical
// entries start {"v":N,"time":"...".
func entryTime(e []byte) (int64, error) {
	if i := bytes.Index(e[:min(len(e), 32)], timeKey); i >= 0 {
		rest := e[i+len(timeKey):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
				return t.UnixNano(), nil
			}
		}
	}
	en, err := ParseEntry(e)
	if err != nil {
		return 0, err
	}
	return en.Time.UnixNano(), nil
}
