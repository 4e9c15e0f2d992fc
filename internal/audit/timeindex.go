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
	complete := n / TimeBlock
	idx := make([][2]int64, 0, complete)
	// The file is written without fsync: after a crash its end may hold
	// zeros (a block that seems to span no time would be skipped by every
	// query). Records are trusted up to the first that cannot be right;
	// from there the index is rebuilt.
	have := min(int64(len(raw)/16), complete)
	for k := range have {
		r := [2]int64{int64(binary.BigEndian.Uint64(raw[16*k:])), int64(binary.BigEndian.Uint64(raw[16*k+8:]))}
		if !validTimeRecord(r) {
			have = k
			break
		}
		idx = append(idx, r)
	}
	if have >= complete {
		return idx, nil
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
			if f.Truncate(16*have) == nil {
				f.WriteAt(add, 16*have)
			}
			f.Close()
		}
	}
	return idx, nil
}

// validTimeRecord reports whether r can be a block's time range: entries
// have a time (Validate), so a zero is a record never written.
func validTimeRecord(r [2]int64) bool { return r[0] != 0 && r[1] != 0 && r[0] <= r[1] }

// timeBlocks accumulates the time range of each block of entries passed to
// add in order, to check index/time.bin (Verify).
type timeBlocks struct {
	cur    [2]int64
	bad    bool // an entry of the current block has no readable time
	blocks [][2]int64
}

func (b *timeBlocks) add(i int64, e []byte) {
	if i%TimeBlock == 0 {
		b.cur, b.bad = [2]int64{1<<63 - 1, -1 << 63}, false
	}
	if t, err := entryTime(e); err == nil {
		b.cur[0], b.cur[1] = min(b.cur[0], t), max(b.cur[1], t)
	} else {
		b.bad = true
	}
	if (i+1)%TimeBlock == 0 {
		if b.bad {
			b.cur = [2]int64{} // unknown: not compared
		}
		b.blocks = append(b.blocks, b.cur)
	}
}

// check compares index/time.bin with the blocks seen. A record that says
// a block spans other times than its entries do makes time-range queries
// skip entries (or read blocks for nothing); a record never written
// (zeros, after a crash) is rebuilt by the next query and not reported.
func (b *timeBlocks) check(dir string, rep *Report) {
	raw, err := os.ReadFile(filepath.Join(dir, timeIndexFile))
	if err != nil {
		return
	}
	for k := range min(int64(len(raw)/16), int64(len(b.blocks))) {
		r := [2]int64{int64(binary.BigEndian.Uint64(raw[16*k:])), int64(binary.BigEndian.Uint64(raw[16*k+8:]))}
		want := b.blocks[k]
		if r == want || want == [2]int64{} || r == [2]int64{} {
			continue
		}
		rep.Problems = append(rep.Problems, Problem{Index: k * TimeBlock, Kind: "index", Path: timeIndexFile,
			Detail: fmt.Sprintf("entries %d to %d span %s to %s, the index says %s to %s: time-range queries would skip entries of this block (remove %s; queries rebuild it)",
				k*TimeBlock, (k+1)*TimeBlock-1, unixNano(want[0]), unixNano(want[1]), unixNano(r[0]), unixNano(r[1]), timeIndexFile)})
	}
}

func unixNano(n int64) string { return time.Unix(0, n).UTC().Format(time.RFC3339Nano) }

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
