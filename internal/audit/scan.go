package audit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ErrStop, returned by a Scan callback, ends the scan without an error.
var ErrStop = errors.New("audit: stop scanning")

// Scan calls fn with the index and canonical bytes of every entry in dir
// from index from on. It only reads (it is safe while a server appends to
// the log and seals segments) and sees the entries whose offsets were
// recorded when it started, which are complete: entries are synced before
// their offsets are written. The bytes passed to fn are reused after it
// returns.
func Scan(dir string, from int64, fn func(i int64, entry []byte) error) error {
	err := scan(dir, from, fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func scan(dir string, from int64, fn func(i int64, entry []byte) error) error {
	n, err := Count(dir)
	if err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	// Every segment's index is read only when the scan starts among
	// them: the detection tailer, which reads the newest entries every
	// poll, looks at the last segment alone.
	sealed, err := sealedEnd(dir)
	if err != nil {
		return fmt.Errorf("audit: scan: %w", err)
	}
	var segs []*segment
	i := max(from, 0)
	for i < n {
		if i < sealed {
			if sealedCount(segs) < sealed {
				if segs, err = listSegments(dir); err != nil {
					return fmt.Errorf("audit: scan: %w", err)
				}
				sealed = sealedCount(segs)
			}
			if i, err = eachSealed(segs, i, n, fn); err != nil {
				return err
			}
			continue
		}
		next, err := scanLog(dir, i, n, sealed, fn)
		if !errors.Is(err, errUnreadable) {
			return err
		}
		// A segment sealed since the scan began takes its entries out of
		// entries.log: read them from there.
		if now, lerr := sealedEnd(dir); lerr == nil && now > next {
			sealed, i = now, next
			continue
		}
		return err
	}
	return nil
}

// sealedEnd is how many entries dir's segments hold, from the last
// segment's index alone (listSegments reads and checks every one).
func sealedEnd(dir string) (int64, error) {
	ents, err := os.ReadDir(filepath.Join(dir, segDir))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	last := ""
	for _, e := range ents { // sorted by name, which is log order
		if strings.HasSuffix(e.Name(), segSuffix) {
			last = e.Name()
		}
	}
	if last == "" {
		return 0, nil
	}
	sg, err := readSegment(filepath.Join(dir, segDir, last))
	if err != nil {
		return 0, err
	}
	return sg.last(), nil
}

// errUnreadable is an entry that entries.log does not hold (damaged, or
// sealed and removed while a scan ran).
var errUnreadable = errors.New("unreadable in entries.log (run rampart audit verify)")

// eachSealed calls fn for the sealed entries from index from (up to n) and
// returns the index after the last one it passed. Bundles are decompressed
// one step ahead, on another goroutine, while fn works on the last.
func eachSealed(segs []*segment, from, n int64, fn func(i int64, entry []byte) error) (int64, error) {
	n = min(n, sealedCount(segs))
	if from >= n {
		return from, nil
	}
	// Three readers in turn: one bundle being decoded, one waiting in the
	// channel, one in fn's hands; none reused before fn is done with it.
	var readers [3]*segmentReader
	for j := range readers {
		r, err := newSegmentReader()
		if err != nil {
			return from, err
		}
		defer r.Close()
		readers[j] = r
	}
	type decoded struct {
		k   int64
		es  [][]byte
		err error
	}
	ch := make(chan decoded, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(ch)
		j := 0
		for _, sg := range segs {
			for k := max(sg.first, from) / bundleEntries; k*bundleEntries < min(sg.last(), n); k++ {
				es, err := readers[j%len(readers)].bundle(sg, k)
				j++
				select {
				case ch <- decoded{k, es, err}:
				case <-done:
					return
				}
				if err != nil {
					return
				}
			}
		}
	}()
	i := from
	for d := range ch {
		if d.err != nil {
			return i, d.err
		}
		for end := min((d.k+1)*bundleEntries, n); i < end; i++ {
			if err := fn(i, d.es[i%bundleEntries]); err != nil {
				return i, err
			}
		}
	}
	return i, nil
}

// sealWatch reads entries.log and notices segments sealed meanwhile: after
// every read it looks for the segment that would follow the last one it
// knows. Sealing creates a segment before it punches its range out of
// entries.log, so bytes read while that segment did not exist yet are
// intact; entries below sealed must be taken from the segments instead.
type sealWatch struct {
	r      io.Reader
	dir    string
	sealed int64 // entries in segments, as last seen
}

func (w *sealWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	for {
		sg, serr := readSegment(filepath.Join(w.dir, segDir, segmentName(w.sealed)))
		if serr != nil || sg.first != w.sealed {
			break
		}
		w.sealed = sg.last()
	}
	return n, err
}

// scanLog reads entries [from, n) from entries.log (sealed: how many
// entries the segments held when the scan began); on failure, or when
// entry i was sealed while it was being read, it returns i and
// errUnreadable.
func scanLog(dir string, from, n, sealed int64, fn func(i int64, entry []byte) error) (int64, error) {
	of, err := os.Open(filepath.Join(dir, "offsets.bin"))
	if err != nil {
		return from, fmt.Errorf("audit: scan: %w", err)
	}
	defer of.Close()
	var ob [8]byte
	if _, err := of.ReadAt(ob[:], 8*from); err != nil {
		return from, fmt.Errorf("audit: scan: offset %d: %w", from, err)
	}
	ef, err := os.Open(filepath.Join(dir, "entries.log"))
	if err != nil {
		return from, fmt.Errorf("audit: scan: %w", err)
	}
	defer ef.Close()
	w := &sealWatch{r: io.NewSectionReader(ef, int64(binary.BigEndian.Uint64(ob[:])), 1<<62), dir: dir, sealed: sealed}
	r := bufio.NewReaderSize(w, 1<<20)
	var buf []byte
	for i := from; i < n; i++ {
		size, err := binary.ReadUvarint(r)
		if err != nil || size == 0 || size > MaxEntrySize {
			return i, fmt.Errorf("audit: scan: entry %d %w", i, errUnreadable)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return i, fmt.Errorf("audit: scan: entry %d cut short: %w", i, errUnreadable)
		}
		if i < w.sealed {
			return i, fmt.Errorf("audit: scan: entry %d sealed while read: %w", i, errUnreadable)
		}
		if err := fn(i, buf); err != nil {
			return i, err
		}
	}
	return n, nil
}

// Count returns how many entries dir holds (as Scan would see them). A
// directory fetched from an archive holds its sealed segments only.
func Count(dir string) (int64, error) {
	fi, err := os.Stat(filepath.Join(dir, "offsets.bin"))
	if errors.Is(err, os.ErrNotExist) {
		segs, serr := listSegments(dir)
		if serr == nil && len(segs) > 0 {
			return sealedCount(segs), nil
		}
	}
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	return fi.Size() / 8, nil
}
