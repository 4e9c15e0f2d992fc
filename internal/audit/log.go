package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit: log closed")

// maxBatch bounds how many entries one group commit writes.
const maxBatch = 16384

// Log is an append-only, tamper-evident log in one directory.
type Log struct {
	dir    string
	origin string

	mu      sync.RWMutex // guards the files and size
	entries *os.File
	offsets *os.File
	hashes  *os.File
	end     int64 // size of entries.log
	size    int64 // number of entries
	nhashes int64 // number of stored hashes
	segs    []*segment

	segEntries int64
	sealMu     sync.Mutex // one Seal at a time
	smu        sync.Mutex // guards sread
	sread      *segmentReader

	reqs    chan *appendReq
	stop    chan struct{}
	stopped chan struct{}
}

type appendReq struct {
	data  [][]byte
	first int64
	err   error
	done  chan struct{}
}

// Options tune a Log.
type Options struct {
	// SegmentEntries is how many entries a sealed segment holds: a
	// positive multiple of 256 (DefaultSegmentEntries when zero). Each
	// segment records its own size, so a change applies to new segments.
	SegmentEntries int64
}

// Open opens (creating if needed) the log in dir. origin names the log in
// its checkpoints (C2SP: a schema-less URL such as "rampart.example.org/audit").
// Open repairs what a crash can leave: a torn final record (never
// acknowledged) is cut off, missing offsets and hashes are recomputed.
func Open(dir, origin string) (*Log, error) { return OpenWith(dir, origin, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir, origin string, opts Options) (*Log, error) {
	if origin == "" {
		return nil, errors.New("audit: an origin is required")
	}
	if opts.SegmentEntries == 0 {
		opts.SegmentEntries = DefaultSegmentEntries
	}
	if opts.SegmentEntries < 0 || opts.SegmentEntries%bundleEntries != 0 {
		return nil, fmt.Errorf("audit: segment size %d is not a positive multiple of %d", opts.SegmentEntries, bundleEntries)
	}
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	sread, err := newSegmentReader()
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, origin: origin, segEntries: opts.SegmentEntries, sread: sread,
		reqs: make(chan *appendReq, 1024), stop: make(chan struct{}), stopped: make(chan struct{})}
	l.segs, err = listSegments(dir)
	if err != nil {
		sread.Close()
		return nil, err
	}
	open := func(name string) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		return f
	}
	l.entries, l.offsets, l.hashes = open("entries.log"), open("offsets.bin"), open("hashes.bin")
	if err == nil {
		err = l.recover()
	}
	if err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("audit: open %s: %w", dir, err)
	}
	go l.writer()
	return l, nil
}

func (l *Log) closeFiles() {
	for _, f := range []*os.File{l.entries, l.offsets, l.hashes} {
		if f != nil {
			f.Close()
		}
	}
	l.smu.Lock()
	l.sread.Close()
	l.smu.Unlock()
}

// recover scans entries.log, cuts a torn tail, and rebuilds offsets and
// hashes that a crash left out.
func (l *Log) recover() error {
	// Hashes cover a prefix of the entries; only entries past it need
	// their data kept for recomputation.
	fi, err := l.hashes.Stat()
	if err != nil {
		return err
	}
	have := fi.Size() / tlog.HashSize
	var covered int64
	for tlog.StoredHashCount(covered+1) <= have {
		covered++
	}
	// Hashes past the last checkpoint may not have reached the disk
	// before a crash (they are synced before each checkpoint): trust only
	// those a checkpoint covered, recompute the rest.
	covered = min(covered, l.checkpointedSize())
	// Sealed entries live in their segments; entries.log is read from
	// where the last segment ends. Their offsets were synced before the
	// checkpoint that let them be sealed.
	sealed := sealedCount(l.segs)
	var pos int64
	if sealed > 0 {
		pos = l.segs[len(l.segs)-1].end
	}
	offs := make([]int64, sealed)
	if sealed > 0 {
		ob := make([]byte, 8*sealed)
		if _, err := l.offsets.ReadAt(ob, 0); err != nil {
			return fmt.Errorf("offsets.bin is shorter than the sealed segments: %w", err)
		}
		for i := range offs {
			offs[i] = int64(binary.BigEndian.Uint64(ob[8*i:]))
		}
	}
	var datas [][]byte
	for i := covered; i < sealed; i++ {
		e, err := l.sealedEntry(i)
		if err != nil {
			return err
		}
		datas = append(datas, e)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(l.entries, pos, 1<<62), 1<<20)
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			break
		}
		hdr := int64(uvarintLen(n))
		if n == 0 || n > MaxEntrySize {
			break // torn or garbage length: nothing valid follows
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			break
		}
		if int64(len(offs)) >= covered {
			datas = append(datas, buf)
		}
		offs = append(offs, pos)
		pos += hdr + int64(n)
	}
	if err := l.entries.Truncate(pos); err != nil {
		return err
	}
	l.end, l.size = pos, int64(len(offs))
	ob := make([]byte, 8*(len(offs)-int(sealed)))
	for i, o := range offs[sealed:] {
		binary.BigEndian.PutUint64(ob[8*i:], uint64(o))
	}
	if err := l.offsets.Truncate(8 * sealed); err != nil {
		return err
	}
	if _, err := l.offsets.WriteAt(ob, 8*sealed); err != nil {
		return err
	}
	// Keep the hashes of the prefix they cover; recompute the rest.
	k := min(covered, l.size)
	l.nhashes = tlog.StoredHashCount(k)
	if err := l.hashes.Truncate(l.nhashes * tlog.HashSize); err != nil {
		return err
	}
	var pending []tlog.Hash
	for i := k; i < l.size; i++ {
		hs, err := tlog.StoredHashes(i, datas[i-k], overlay{l, pending})
		if err != nil {
			return err
		}
		pending = append(pending, hs...)
	}
	if err := l.writeHashes(pending); err != nil {
		return err
	}
	for _, f := range []*os.File{l.entries, l.offsets, l.hashes} {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// checkpointedSize is the tree size of the last published checkpoint in
// the log's directory (0 without one).
func (l *Log) checkpointedSize() int64 { return checkpointSize(l.dir) }

// checkpointSize is the tree size of dir's latest checkpoint (0 without
// one). It is read unverified: the log's own file, written by this code.
func checkpointSize(dir string) int64 {
	raw, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		return 0
	}
	lines := strings.SplitN(string(raw), "\n", 3)
	if len(lines) < 3 {
		return 0
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// overlay reads stored hashes from hashes.bin and, past its end, from
// hashes computed but not yet written.
type overlay struct {
	l       *Log
	pending []tlog.Hash
}

func (o overlay) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx >= o.l.nhashes {
			j := idx - o.l.nhashes
			if j >= int64(len(o.pending)) {
				return nil, fmt.Errorf("audit: hash %d not stored", idx)
			}
			out[i] = o.pending[j]
			continue
		}
		if _, err := o.l.hashes.ReadAt(out[i][:], idx*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("audit: read hash %d: %w", idx, err)
		}
	}
	return out, nil
}

func (l *Log) writeHashes(hs []tlog.Hash) error {
	if len(hs) == 0 {
		return nil
	}
	b := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	if _, err := l.hashes.WriteAt(b, l.nhashes*tlog.HashSize); err != nil {
		return err
	}
	l.nhashes += int64(len(hs))
	return nil
}

// Append appends entries (canonical encodings, see Entry.Marshal) and
// returns the index of the first once all are durable. Concurrent calls are
// committed together with one fsync.
func (l *Log) Append(ctx context.Context, entries ...[]byte) (int64, error) {
	if len(entries) == 0 {
		return 0, errors.New("audit: nothing to append")
	}
	for i, e := range entries {
		if len(e) == 0 || len(e) > MaxEntrySize {
			return 0, fmt.Errorf("audit: entry %d: %d bytes, want 1 to %d", i, len(e), MaxEntrySize)
		}
	}
	req := &appendReq{data: entries, done: make(chan struct{})}
	select {
	case l.reqs <- req:
	case <-l.stop:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once queued the write happens; wait for it even if ctx ends, so the
	// caller never believes a durable entry was lost.
	select {
	case <-req.done:
	case <-l.stopped:
		select {
		case <-req.done:
		default:
			return 0, ErrClosed // queued after the writer's last drain: not written
		}
	}
	return req.first, req.err
}

// AppendEntries encodes and appends entries.
func (l *Log) AppendEntries(ctx context.Context, es ...*Entry) (int64, error) {
	data := make([][]byte, len(es))
	for i, e := range es {
		b, err := e.Marshal()
		if err != nil {
			return 0, err
		}
		data[i] = b
	}
	return l.Append(ctx, data...)
}

func (l *Log) writer() {
	defer close(l.stopped)
	for {
		var batch []*appendReq
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.stop:
			// Finish what was queued before Close.
			for {
				select {
				case r := <-l.reqs:
					l.commit([]*appendReq{r})
				default:
					return
				}
			}
		}
		n := len(batch[0].data)
	drain:
		for n < maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
				n += len(r.data)
			default:
				break drain
			}
		}
		l.commit(batch)
	}
}

// commit writes a batch: entries first (fsync), then offsets and hashes
// (fsync), then acknowledges. A crash in between is repaired by recover.
func (l *Log) commit(batch []*appendReq) {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.writeBatch(batch)
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

func (l *Log) writeBatch(batch []*appendReq) error {
	var buf, ob []byte
	var pending []tlog.Hash
	pos, n := l.end, l.size
	var tmp [binary.MaxVarintLen64]byte
	for _, r := range batch {
		r.first = n
		for _, d := range r.data {
			ob = binary.BigEndian.AppendUint64(ob, uint64(pos))
			k := binary.PutUvarint(tmp[:], uint64(len(d)))
			buf = append(buf, tmp[:k]...)
			buf = append(buf, d...)
			pos += int64(k + len(d))
			hs, err := tlog.StoredHashes(n, d, overlay{l, pending})
			if err != nil {
				return err
			}
			pending = append(pending, hs...)
			n++
		}
	}
	if _, err := l.entries.WriteAt(buf, l.end); err != nil {
		return fmt.Errorf("audit: write entries: %w", err)
	}
	if err := l.entries.Sync(); err != nil {
		return fmt.Errorf("audit: sync entries: %w", err)
	}
	if _, err := l.offsets.WriteAt(ob, 8*l.size); err != nil {
		return fmt.Errorf("audit: write offsets: %w", err)
	}
	if err := l.writeHashes(pending); err != nil {
		return fmt.Errorf("audit: write hashes: %w", err)
	}
	// offsets.bin and hashes.bin are derived from entries.log: they are
	// synced before each checkpoint and at Close, not here. After a crash,
	// Open trusts stored hashes only up to the last checkpoint and
	// recomputes the rest from the entries, which are durable.
	l.end, l.size = pos, n
	return nil
}

// syncDerived makes offsets.bin and hashes.bin durable (before a
// checkpoint vouches for the hashes, and at Close).
func (l *Log) syncDerived() error {
	if err := l.offsets.Sync(); err != nil {
		return fmt.Errorf("audit: sync offsets: %w", err)
	}
	if err := l.hashes.Sync(); err != nil {
		return fmt.Errorf("audit: sync hashes: %w", err)
	}
	return nil
}

// Size is the number of durable entries.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

// Sealed is how many entries are in sealed segments.
func (l *Log) Sealed() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return sealedCount(l.segs)
}

// Entry returns entry i's canonical bytes.
func (l *Log) Entry(i int64) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.entryLocked(i)
}

func (l *Log) entryLocked(i int64) ([]byte, error) {
	if i < 0 || i >= l.size {
		return nil, fmt.Errorf("audit: entry %d: log has %d entries", i, l.size)
	}
	if i < sealedCount(l.segs) {
		return l.sealedEntry(i)
	}
	off, err := l.offsetLocked(i)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(io.NewSectionReader(l.entries, off, l.end-off))
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

// sealedEntry reads entry i from the sealed segments.
func (l *Log) sealedEntry(i int64) ([]byte, error) {
	l.smu.Lock()
	defer l.smu.Unlock()
	e, err := l.sread.entry(l.segs, i)
	return bytes.Clone(e), err
}

// offsetLocked is entry i's offset in entries.log.
func (l *Log) offsetLocked(i int64) (int64, error) {
	var ob [8]byte
	if _, err := l.offsets.ReadAt(ob[:], 8*i); err != nil {
		return 0, fmt.Errorf("audit: offset of entry %d: %w", i, err)
	}
	return int64(binary.BigEndian.Uint64(ob[:])), nil
}

// endOffsetLocked is where the entries before index n end in entries.log.
func (l *Log) endOffsetLocked(n int64) (int64, error) {
	if n >= l.size {
		return l.end, nil
	}
	return l.offsetLocked(n)
}

// hashReader reads committed stored hashes.
func (l *Log) hashReader() tlog.HashReader { return overlay{l: l} }

// TreeHash returns the root hash of the first n entries.
func (l *Log) TreeHash(n int64) (tlog.Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n > l.size {
		return tlog.Hash{}, fmt.Errorf("audit: tree size %d > log size %d", n, l.size)
	}
	return tlog.TreeHash(n, l.hashReader())
}

// ProveInclusion proves that entry i is in the tree of size n.
func (l *Log) ProveInclusion(i, n int64) (tlog.RecordProof, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n > l.size || i >= n || i < 0 {
		return nil, fmt.Errorf("audit: no entry %d in a tree of %d (log size %d)", i, n, l.size)
	}
	return tlog.ProveRecord(n, i, l.hashReader())
}

// ProveConsistency proves that the tree of size older is a prefix of the
// tree of size newer.
func (l *Log) ProveConsistency(older, newer int64) (tlog.TreeProof, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if older < 1 || older > newer || newer > l.size {
		return nil, fmt.Errorf("audit: cannot prove %d -> %d (log size %d)", older, newer, l.size)
	}
	return tlog.ProveTree(newer, older, l.hashReader())
}

// Close commits what is queued and closes the files.
func (l *Log) Close() error {
	select {
	case <-l.stop:
		return nil
	default:
	}
	close(l.stop)
	<-l.stopped
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.syncDerived()
	l.closeFiles()
	return err
}
