package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
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
	opts   Options
	lock   *os.File // DIR/lock, flock'd while the log is open

	mu      sync.RWMutex // guards the files, size and closed
	closed  bool
	entries *os.File
	offsets *os.File
	hashes  *os.File
	end     int64 // size of entries.log
	size    int64 // number of entries
	nhashes int64 // number of stored hashes
	segs    []*segment

	segEntries int64
	// Lock order: sealMu, cpMu, mu. Close takes all three, so that it
	// never closes the files under a Seal or a Checkpoint.
	sealMu  sync.Mutex // one Seal at a time
	cpMu    sync.Mutex // one Checkpoint at a time: sizes only grow
	closeMu sync.Mutex // guards stop against a second close
	smu     sync.Mutex // guards sread
	sread   *segmentReader

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
	// Logger hears what Open repairs by itself (a torn write cut off);
	// nil discards.
	Logger *slog.Logger
	// Actor names who records the log's own maintenance entries
	// (audit.recover, audit.repair): the server's SPIFFE ID, or the
	// operator running a repair. Default: user "audit".
	Actor Actor
	// Now is the clock for those entries and quarantine names (default
	// time.Now).
	Now func() time.Time
}

func (o *Options) defaults() error {
	if o.SegmentEntries == 0 {
		o.SegmentEntries = DefaultSegmentEntries
	}
	if o.SegmentEntries < 0 || o.SegmentEntries%bundleEntries != 0 {
		return fmt.Errorf("audit: segment size %d is not a positive multiple of %d", o.SegmentEntries, bundleEntries)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Actor == (Actor{}) {
		o.Actor = Actor{User: "audit"}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Open opens (creating if needed) the log in dir. origin names the log in
// its checkpoints (C2SP: a schema-less URL such as "rampart.example.org/audit").
// Open repairs what a crash can leave: missing offsets and hashes are
// recomputed, and a torn write (bytes past the last whole record that no
// checkpoint covers and offsets.bin does not record: an append never
// acknowledged) is cut off, kept in a quarantine directory, logged and
// recorded as an audit.recover entry. Damage to anything that was
// acknowledged is never cut: Open changes nothing and returns a
// *DamageError (see Repair).
func Open(dir, origin string) (*Log, error) { return OpenWith(dir, origin, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir, origin string, opts Options) (*Log, error) {
	if origin == "" {
		return nil, errors.New("audit: an origin is required")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l, err := openLocked(dir, origin, opts, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return l, nil
}

// openLocked opens the log in dir, whose lock the caller holds; the Log
// releases it when it closes.
func openLocked(dir, origin string, opts Options, lock *os.File) (*Log, error) {
	sread, err := newSegmentReader()
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, origin: origin, opts: opts, segEntries: opts.SegmentEntries, sread: sread,
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
	var torn *Quarantine
	if err == nil {
		torn, err = l.recover()
	}
	if err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("audit: open %s: %w", dir, err)
	}
	l.lock = lock
	go l.writer()
	if torn != nil {
		// Logged and recorded: a cut, even of bytes never acknowledged,
		// is something an auditor must be able to see.
		opts.Logger.Warn("audit: cut off a torn write past the newest checkpoint; its bytes are kept",
			"file", filepath.Join(dir, "entries.log"), "offset", torn.Offset, "bytes", torn.Bytes,
			"at_entry", torn.First, "reason", torn.Reason, "quarantine", filepath.Join(dir, quarantineDir, torn.Name))
		if _, err := l.AppendEntries(context.Background(), torn.entry("audit.recover", opts.Actor, opts.Now())); err != nil {
			l.Close()
			return nil, fmt.Errorf("audit: open %s: record the torn write cut off: %w", dir, err)
		}
	}
	return l, nil
}

func (l *Log) closeFiles() {
	for _, f := range []*os.File{l.entries, l.offsets, l.hashes, l.lock} {
		if f != nil {
			f.Close()
		}
	}
	l.smu.Lock()
	l.sread.Close()
	l.smu.Unlock()
}

// recover scans entries.log, rebuilds the offsets and hashes that a crash
// left out, and cuts off a torn write past the newest checkpoint (keeping
// its bytes, see Quarantine). It never cuts below what was acknowledged:
// entries a checkpoint covers or offsets.bin records. Damage there is a
// *DamageError, and nothing is changed.
func (l *Log) recover() (*Quarantine, error) {
	// Hashes cover a prefix of the entries; only entries past it need
	// their data kept for recomputation.
	fi, err := l.hashes.Stat()
	if err != nil {
		return nil, err
	}
	covered := leafCount(fi.Size())
	// Hashes past the last checkpoint may not have reached the disk
	// before a crash (they are synced before each checkpoint): trust only
	// those a checkpoint covered, recompute the rest.
	cp := newestCheckpointSize(l.dir)
	covered = min(covered, cp)
	// Sealed entries live in their segments; entries.log is read from
	// where the last segment ends. Their offsets were synced before the
	// checkpoint that let them be sealed.
	sealed := sealedCount(l.segs)
	var pos int64
	if sealed > 0 {
		pos = l.segs[len(l.segs)-1].end
	}
	stored, err := storedOffsets(l.offsets, sealed, pos)
	if err != nil {
		return nil, err
	}
	acked := sealed + int64(len(stored))
	var datas [][]byte
	for i := covered; i < sealed; i++ {
		e, err := l.sealedEntry(i)
		if err != nil {
			return nil, err
		}
		datas = append(datas, e)
	}
	efi, err := l.entries.Stat()
	if err != nil {
		return nil, err
	}
	fileEnd := efi.Size()
	var offs []int64 // of the unsealed entries read
	sc, err := scanRecords(l.entries, pos, fileEnd, sealed, stored, func(i, off int64, e []byte) (string, error) {
		if i >= covered {
			datas = append(datas, e)
		}
		offs = append(offs, off)
		return "", nil
	})
	if err != nil {
		return nil, err
	}
	if sc.next < cp || sc.next < acked {
		return nil, &DamageError{Path: filepath.Join(l.dir, "entries.log"), Offset: sc.end, Index: sc.next, Reason: sc.damage,
			Covered: cp, Acked: acked, Tail: fileEnd - sc.end}
	}
	var torn *Quarantine
	if sc.end < fileEnd {
		// Past every checkpoint and every recorded offset: an append that
		// was never acknowledged, torn by a crash. Kept, then cut.
		torn = &Quarantine{Kind: QuarantineTornWrite, First: sc.next, Offset: sc.end, Bytes: fileEnd - sc.end,
			Reason: sc.damage, Covered: cp, Acked: acked}
		if err := newQuarantine(l.dir, torn, l.entries, nil, nil, l.opts.Now()); err != nil {
			return nil, err
		}
		if err := l.entries.Truncate(sc.end); err != nil {
			return nil, err
		}
	}
	l.end, l.size = sc.end, sc.next
	ob := make([]byte, 8*len(offs))
	for i, o := range offs {
		binary.BigEndian.PutUint64(ob[8*i:], uint64(o))
	}
	if err := l.offsets.Truncate(8 * sealed); err != nil {
		return nil, err
	}
	if _, err := l.offsets.WriteAt(ob, 8*sealed); err != nil {
		return nil, err
	}
	// Keep the hashes of the prefix they cover; recompute the rest.
	k := min(covered, l.size)
	l.nhashes = tlog.StoredHashCount(k)
	if err := l.hashes.Truncate(l.nhashes * tlog.HashSize); err != nil {
		return nil, err
	}
	var pending []tlog.Hash
	for i := k; i < l.size; i++ {
		hs, err := tlog.StoredHashes(i, datas[i-k], overlay{l, pending})
		if err != nil {
			return nil, err
		}
		pending = append(pending, hs...)
	}
	if err := l.writeHashes(pending); err != nil {
		return nil, err
	}
	for _, f := range []*os.File{l.entries, l.offsets, l.hashes} {
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return torn, nil
}

// leafCount is how many leaves a hashes.bin of size bytes holds whole.
func leafCount(size int64) int64 {
	have := size / tlog.HashSize
	// StoredHashCount grows with n: the largest n with count <= have.
	lo, hi := int64(0), have+1
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		if tlog.StoredHashCount(mid) <= have {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// storedOffsets reads offsets.bin from entry first on, as far as the
// offsets increase from start (where the segments end): past the newest
// checkpoint offsets.bin is not synced, and after a power loss its end may
// hold zeros, which record nothing.
func storedOffsets(f *os.File, first, start int64) ([]int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := fi.Size() / 8
	if n < first {
		return nil, fmt.Errorf("offsets.bin records %d entries, fewer than the %d in sealed segments", n, first)
	}
	b := make([]byte, 8*(n-first))
	if _, err := f.ReadAt(b, 8*first); err != nil {
		return nil, fmt.Errorf("read offsets.bin: %w", err)
	}
	out := make([]int64, 0, n-first)
	prev := start - 1
	for i := 0; i < len(b); i += 8 {
		o := int64(binary.BigEndian.Uint64(b[i:]))
		if o <= prev || (len(out) == 0 && o != start) {
			break
		}
		out = append(out, o)
		prev = o
	}
	return out, nil
}

// recordScan is where scanRecords stopped.
type recordScan struct {
	next   int64  // index of the first entry not read
	end    int64  // where it starts: the end of the last whole record
	damage string // why the scan stopped before the end of the file
}

// byteCounter counts the bytes a uvarint takes (a corrupted length may be
// encoded in more bytes than its value needs).
type byteCounter struct {
	r *bufio.Reader
	n int
}

func (c *byteCounter) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// scanRecords reads entries.log's records from offset pos (entry first)
// to fileEnd and passes each to fn with its index and offset. It stops at
// the first record that is not whole, or that does not end where
// offsets.bin (stored, from entry first on) says the next one starts, or
// for which fn returns a reason.
func scanRecords(f io.ReaderAt, pos, fileEnd, first int64, stored []int64, fn func(i, off int64, e []byte) (string, error)) (recordScan, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, pos, fileEnd-pos), 1<<20)
	i := first
	for pos < fileEnd {
		c := &byteCounter{r: r}
		n, err := binary.ReadUvarint(c)
		switch {
		case err != nil:
			return recordScan{i, pos, "the record's length is unreadable or cut short"}, nil
		case n == 0 || n > MaxEntrySize:
			return recordScan{i, pos, fmt.Sprintf("a record length of %d bytes, want 1 to %d", n, MaxEntrySize)}, nil
		case c.n != uvarintLen(n):
			return recordScan{i, pos, "a record length in a non-minimal encoding"}, nil
		case pos+int64(c.n)+int64(n) > fileEnd:
			return recordScan{i, pos, fmt.Sprintf("a record of %d bytes that the file ends inside", n)}, nil
		}
		next := pos + int64(c.n) + int64(n)
		if j := i + 1 - first; j < int64(len(stored)) && stored[j] != next {
			return recordScan{i, pos, fmt.Sprintf("a record ending at offset %d, where offsets.bin starts entry %d at %d", next, i+1, stored[j])}, nil
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return recordScan{}, fmt.Errorf("read entries.log at %d: %w", pos, err)
		}
		why, err := fn(i, pos, buf)
		if err != nil {
			return recordScan{}, err
		}
		if why != "" {
			return recordScan{i, pos, why}, nil
		}
		pos = next
		i++
	}
	return recordScan{next: i, end: pos}, nil
}

// DamageError is Open's refusal of a log whose entries.log cannot give
// back an entry that was acknowledged: a signed checkpoint covers it, or
// offsets.bin records it. Open changes nothing; Repair moves the damaged
// tail aside.
type DamageError struct {
	Path    string // entries.log
	Offset  int64  // where the first entry that cannot be read starts
	Index   int64  // that entry's index
	Reason  string // what is wrong there ("" when the file just ends)
	Covered int64  // the newest checkpoint's tree size
	Acked   int64  // entries offsets.bin records
	Tail    int64  // bytes from Offset to the end of the file
}

// ErrDamaged matches a *DamageError.
var ErrDamaged = errors.New("audit: damaged log")

func (e *DamageError) Is(target error) bool { return target == ErrDamaged }

// End is the index after the last entry at stake.
func (e *DamageError) End() int64 { return max(e.Covered, e.Acked) }

func (e *DamageError) Error() string {
	why := e.Reason
	if why == "" {
		why = "the file ends there"
	}
	var stake string
	switch {
	case e.Covered >= e.End():
		stake = fmt.Sprintf("covered by the signed checkpoint of tree size %d", e.Covered)
	case e.Covered > e.Index:
		stake = fmt.Sprintf("acknowledged (offsets.bin records %d entries; the signed checkpoint of tree size %d covers those before %d)", e.Acked, e.Covered, e.Covered)
	default:
		stake = fmt.Sprintf("acknowledged (offsets.bin records %d entries)", e.Acked)
	}
	data := filepath.Dir(filepath.Dir(e.Path))
	return fmt.Sprintf("%s is damaged at offset %d (entry %d: %s): entries %d to %d are %s; %d bytes follow from that offset. "+
		"Nothing was changed: the log is never cut below what was acknowledged. "+
		"See the damage with \"rampart audit verify --data %s\", then run \"rampart audit repair --data %s\" (server stopped): "+
		"it moves the damaged tail into %s and records that in the log (docs/audit.md, \"A damaged log\")",
		e.Path, e.Offset, e.Index, why, e.Index, e.End()-1, stake, e.Tail, data, data, filepath.Join(filepath.Dir(e.Path), quarantineDir))
}

// checkpointedSize is the tree size of the last published checkpoint in
// the log's directory (0 without one).
func (l *Log) checkpointedSize() int64 { return checkpointSize(l.dir) }

// checkpointSize is the tree size of dir's latest checkpoint (0 without
// one). It is read unverified: the log's own file, written by this code.
func checkpointSize(dir string) int64 {
	n, _ := readCheckpointSize(filepath.Join(dir, "checkpoint"))
	return n
}

func readCheckpointSize(path string) (int64, bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	lines := strings.SplitN(string(raw), "\n", 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// newestCheckpointSize is checkpointSize, or without a readable
// "checkpoint" file the largest tree size under checkpoints/: what the
// log must never be cut below.
func newestCheckpointSize(dir string) int64 {
	if n, ok := readCheckpointSize(filepath.Join(dir, "checkpoint")); ok {
		return n
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
	var newest int64
	for _, e := range ents {
		if n, err := strconv.ParseInt(e.Name(), 10, 64); err == nil {
			newest = max(newest, n)
		}
	}
	return newest
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

// AppendEntries encodes and appends entries. One entry that cannot be
// encoded never costs the others their place: it is clipped
// (ClipEntry) and, if it still does not encode, replaced by an
// audit.entry_unencodable entry saying why, so only a failure to write
// fails the call.
func (l *Log) AppendEntries(ctx context.Context, es ...*Entry) (int64, error) {
	data := make([][]byte, len(es))
	for i, e := range es {
		b, err := e.Marshal()
		if err != nil {
			b, err = l.unencodable(e)
		}
		if err != nil {
			return 0, err
		}
		data[i] = b
	}
	return l.Append(ctx, data...)
}

// unencodable encodes a clipped copy of e, which did not encode, or the
// entry recording that even that could not be encoded.
func (l *Log) unencodable(e *Entry) ([]byte, error) {
	c := *e
	c.Details = maps.Clone(e.Details)
	ClipEntry(&c)
	b, encErr := c.Marshal()
	if encErr == nil {
		return b, nil
	}
	l.opts.Logger.Error("audit: an entry could not be encoded; recording that instead", "action", Clip(e.Action), "err", encErr)
	t := e.Time
	if t.IsZero() {
		t = l.opts.Now()
	}
	r := &Entry{V: SchemaVersion, Time: t, Actor: l.opts.Actor, Action: "audit.entry_unencodable", Outcome: OutcomeFailure,
		Reason: Clip(encErr.Error()), Source: c.Source, Stream: c.Stream, Seq: c.Seq,
		Details: map[string]string{"action": c.Action, "actor.spiffe_id": c.Actor.SpiffeID, "actor.user": c.Actor.User,
			"target": c.Target, "outcome": c.Outcome}}
	ClipEntry(r)
	return r.Marshal()
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
	if !l.stopWriter() {
		return nil
	}
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	return l.closeLocked()
}

// CloseWithCheckpoint closes the log with a last signed checkpoint over
// every entry as its very last write: the log takes no entry once it is
// called (Append returns ErrClosed), so nothing can follow the checkpoint
// and be cut from the end of the log unnoticed. It returns the checkpoint,
// or nil when the newest one published already covers every entry.
func (l *Log) CloseWithCheckpoint(signer note.Signer) ([]byte, error) {
	if !l.stopWriter() {
		return nil, ErrClosed
	}
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	var cp []byte
	var err error
	if l.Size() != l.checkpointedSize() {
		cp, err = l.checkpointLocked(signer)
	}
	return cp, errors.Join(err, l.closeLocked())
}

// stopWriter stops taking entries and waits until the queued ones are
// written; false if the log was closed already.
func (l *Log) stopWriter() bool {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	select {
	case <-l.stop:
		return false
	default:
	}
	close(l.stop)
	<-l.stopped
	return true
}

// closeLocked closes the files; the caller holds sealMu and cpMu.
func (l *Log) closeLocked() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.syncDerived()
	l.closeFiles()
	l.closed = true
	return err
}
