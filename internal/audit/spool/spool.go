package spool

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit/auditentry"
	"github.com/rampartsec/rampart/internal/safedir"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("spool: closed")

// ErrDropped is returned by Record when the spool holds MaxBytes of entries
// the server has not acknowledged: the entry was dropped, and counted in an
// audit.entries_dropped entry written as soon as there is room.
var ErrDropped = errors.New("spool: full (the server has not acknowledged MaxBytes of entries); entry dropped and counted")

// Sender delivers a batch of entries (consecutive sequence numbers of one
// stream) and returns the highest sequence number of the stream that the
// receiver holds durably.
type Sender interface {
	Send(ctx context.Context, batch []*auditentry.Entry) (ackedThrough uint64, err error)
}

// Config configures a Spool.
type Config struct {
	// Dir is required; created 0700. It must be owned by this process's
	// uid, not writable by group or others, under directories only root or
	// this uid can change (package safedir): Open refuses any other.
	Dir    string
	Sender Sender // required
	Log    *slog.Logger
	// MaxBytes bounds the unacknowledged entries kept on disk (default
	// 1 GiB); beyond it Record drops entries and counts them (see Record).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment starts (default 8 MiB).
	SegmentBytes int64
	// BatchSize is the most entries sent in one request (default 500).
	BatchSize int
	// Linger is how long the sender waits for a batch to fill before
	// sending a partial one (default 0: send at once). A proxy recording
	// a decision per request sets it: one request per 250 ms carries
	// hundreds of entries, where sending at once costs a request (TLS
	// records, a handler, a group commit) per handful.
	Linger time.Duration
	// WriteLinger is how long the writer waits for more entries before
	// writing (and fsyncing) a partial batch (default 0: at once). At a
	// thousand decisions a second, 50 ms makes 20 fsyncs a second instead
	// of a thousand; a crash may lose what waited (it was not yet durable
	// either way: Record never waits for the disk).
	WriteLinger time.Duration
	// Backoff returns the wait before retry n (from 1) after a failed send
	// (default: 0.5 s doubling to 30 s, with jitter).
	Backoff func(n int) time.Duration
	// Registry receives the spool's metrics when set.
	Registry *prometheus.Registry
	// BeforeClose, if set, runs at the start of Close while Record still
	// accepts entries: a front end that holds entries back (the decision
	// aggregator) hands them over there.
	BeforeClose func()
	// Now is the clock for entries the spool writes itself (default time.Now).
	Now func() time.Time
}

// Spool is a durable queue of audit entries on their way to the server.
type Spool struct {
	cfg    Config
	stream string

	in      chan *auditentry.Entry
	kick    chan struct{}      // wakes the writer to write a pending drop count
	lockReq chan chan struct{} // asks the writer to let go of wmu until the channel is closed
	closing chan struct{}
	done    chan struct{} // writer and sender have stopped
	cancel  context.CancelFunc

	recorded atomic.Uint64 // entries accepted by Record since Open
	base     uint64        // the last sequence number on disk at Open

	mu       sync.Mutex
	cond     *sync.Cond    // signalled when acked or written moves, or on close
	written  uint64        // highest sequence number durably in a segment
	acked    uint64        // highest sequence number the server holds
	segments []segment     // in order; the last is being appended to
	bytes    int64         // total size of the segments
	wake     chan struct{} // tells the sender there is more to send
	closed   bool
	// Entries accepted by Record since Open that are on disk (the spool's
	// own entries, drop counts and losses, take numbers too).
	writtenRecorded uint64
	// Entries dropped while the spool was full, not yet counted in an
	// audit.entries_dropped entry on disk.
	dropped             uint64
	firstDrop, lastDrop time.Time
	droppedTotal        atomic.Uint64

	// wmu serialises writes to the segments: the writer goroutine's, and
	// Record's own when the queue is full. It guards f and buf.
	wmu sync.Mutex
	f   *os.File
	buf []byte

	sent, failures, dropCounter prometheus.Counter
}

type segment struct {
	first uint64 // sequence number of the first record
	size  int64
}

func (sg segment) name() string { return fmt.Sprintf("%020d.seg", sg.first) }

// Memory bounds: entries waiting for the writer, and entries it writes at once.
const (
	queueLen   = 1024
	writeBatch = 256
)

const recordHeader = 8 // length and CRC-32C, both big-endian uint32

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Open opens (creating if needed) the spool in cfg.Dir and starts shipping
// what it holds.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" || cfg.Sender == nil {
		return nil, errors.New("spool: a directory and a sender are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = 8 << 20
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Backoff == nil {
		cfg.Backoff = defaultBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Whoever can change the directory could read the entries, put their
	// own in the stream, or remove some (issue 26).
	dir, err := safedir.Make(cfg.Dir, "the audit spool directory", os.Geteuid(), 0o700)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	cfg.Dir = dir
	s := &Spool{cfg: cfg, in: make(chan *auditentry.Entry, queueLen), closing: make(chan struct{}), done: make(chan struct{}),
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), lockReq: make(chan chan struct{}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_audit_spool_sent_total", Help: "Audit entries the server acknowledged.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_audit_spool_send_failures_total", Help: "Failed deliveries of a batch to the server (retried).",
		}),
		dropCounter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_audit_spool_dropped_total", Help: "Audit entries dropped because the spool held MaxBytes the server had not acknowledged (each drop is also counted in an audit.entries_dropped entry; alert on any).",
		}),
	}
	s.cond = sync.NewCond(&s.mu)
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", cfg.Dir, err)
	}
	s.base = s.written
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.sent, s.failures, s.dropCounter,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rampart_audit_spool_pending_entries", Help: "Audit entries on disk not yet acknowledged by the server.",
			}, func() float64 { w, a := s.Progress(); return float64(w - a) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rampart_audit_spool_bytes", Help: "Size of the spool's segments on disk.",
			}, func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(s.bytes) }))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.writer() }()
	go func() { defer wg.Done(); s.sender(ctx) }()
	go func() { wg.Wait(); close(s.done) }()
	return s, nil
}

func defaultBackoff(n int) time.Duration {
	d := 500 * time.Millisecond << min(n-1, 6)
	d = min(d, 30*time.Second)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// load reads the stream ID, the cursor and the segments, and recovers the
// last segment from a crash or damage (see recover.go).
func (s *Spool) load() error {
	names, err := filepath.Glob(filepath.Join(s.cfg.Dir, "*.seg"))
	if err != nil {
		return err
	}
	for _, n := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".seg"), 10, 64)
		if err != nil || first == 0 { // numbers start at 1
			return fmt.Errorf("%s: not a segment name", n)
		}
		fi, err := os.Stat(n)
		if err != nil {
			return err
		}
		s.segments = append(s.segments, segment{first: first, size: fi.Size()})
	}
	slices.SortFunc(s.segments, func(a, b segment) int { return cmp.Compare(a.first, b.first) })
	idPath := filepath.Join(s.cfg.Dir, "stream")
	id, err := os.ReadFile(idPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new spool; or the file was lost, and the segments still name
		// the stream their entries belong to (a new one would make every
		// entry on disk look foreign, and be set aside as damage).
		if id = s.streamOfSegments(); id != nil {
			s.cfg.Log.Warn("audit spool: the stream ID file was missing; taken from the segments", "dir", s.cfg.Dir, "stream", string(id))
		} else {
			b := make([]byte, 16)
			rand.Read(b)
			id = []byte(hex.EncodeToString(b))
		}
		if err := atomicfile.Write(idPath, id, 0o600); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	s.stream = strings.TrimSpace(string(id))
	if len(s.stream) != 32 {
		return fmt.Errorf("%s: not a stream ID", idPath)
	}
	if b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "acked")); err == nil {
		if s.acked, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return fmt.Errorf("acked: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	s.written = s.acked
	for _, sg := range s.segments {
		s.bytes += sg.size
	}
	if len(s.segments) == 0 {
		return nil
	}
	// The last segment decides where the stream stands. Its frames are
	// checked and its last record read; at anything wrong, it is scanned
	// whole and repaired (recover.go): a torn write at the end is trimmed,
	// damage before intact records is kept aside and never cuts them off.
	last := s.segments[len(s.segments)-1]
	high, err := s.lastSeq(last)
	if err == nil {
		s.written = max(s.written, high)
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.repairLocked(last, true); err != nil {
		return fmt.Errorf("segment %s: %w", last.name(), err)
	}
	return nil
}

// lastSeq checks the frames of segment sg and returns the sequence number
// of its last record (the one before its first when it is empty), or an
// error at the first thing wrong.
func (s *Spool) lastSeq(sg segment) (uint64, error) {
	f, err := os.Open(filepath.Join(s.cfg.Dir, sg.name()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := &reader{br: bufio.NewReaderSize(f, 64<<10), limit: sg.size}
	var data []byte
	for {
		d, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		data = d
	}
	if data == nil {
		return sg.first - 1, nil
	}
	e, err := auditentry.Parse(data)
	if err != nil {
		return 0, err
	}
	if !belongs(e, s.stream, sg.first-1, 0) {
		return 0, fmt.Errorf("record of stream %s seq %d", e.Stream, e.Seq)
	}
	return e.Seq, nil
}

// Stream returns the spool's stream ID.
func (s *Spool) Stream() string { return s.stream }

// Record queues e for the server. It sets e's Stream and Seq, so e must not
// be reused.
//
// Record never waits on its caller, so no caller can choose what goes
// unrecorded by giving up (a cancelled request, a reset stream): when the
// in-memory queue is full, Record writes the queue and e to the segment
// file itself, paying one fsync for the lot (the back-pressure is the
// disk's). When the spool already holds MaxBytes of entries the server has
// not acknowledged (it has been away for long), e is dropped and counted
// (ErrDropped): the count becomes an audit.entries_dropped entry as soon as
// there is room again, and rampart_audit_spool_dropped_total.
func (s *Spool) Record(e *auditentry.Entry) error {
	auditentry.ClipFields(e)
	if err := e.Validate(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	select {
	case s.in <- e:
		s.recorded.Add(1)
		return nil
	default:
	}
	return s.writeDirect(e)
}

// writeDirect writes what the queue holds and e, in the caller's goroutine.
func (s *Spool) writeDirect(e *auditentry.Entry) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	closed, full := s.closed, s.fullLocked()
	if full && !closed {
		s.dropLocked(e.Time)
	}
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case full:
		return ErrDropped
	}
	// Everything queued was accepted before e: it goes first, in order.
	batch := make([]*auditentry.Entry, 0, len(s.in)+1)
drain:
	for {
		select {
		case q := <-s.in:
			batch = append(batch, q)
		default:
			break drain
		}
	}
	s.recorded.Add(1)
	s.writeLocked(append(batch, e), true)
	return nil
}

// fullLocked: the spool holds MaxBytes and the server has not caught up.
func (s *Spool) fullLocked() bool { return s.bytes >= s.cfg.MaxBytes && s.acked < s.written }

func (s *Spool) dropLocked(t time.Time) {
	if s.dropped == 0 || t.Before(s.firstDrop) {
		s.firstDrop = t
	}
	if t.After(s.lastDrop) {
		s.lastDrop = t
	}
	s.dropped++
	s.droppedTotal.Add(1)
	s.dropCounter.Inc()
}

// Dropped returns how many entries Record dropped since Open.
func (s *Spool) Dropped() uint64 { return s.droppedTotal.Load() }

// Progress returns the highest sequence number on disk and the highest the
// server acknowledged.
func (s *Spool) Progress() (written, acked uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written, s.acked
}

// Flush waits until every entry recorded before the call is acknowledged by
// the server.
func (s *Spool) Flush(ctx context.Context) error { return s.waitFor(ctx, true) }

// WaitWritten waits until every entry recorded before the call is on disk
// (fsync'd), where it survives a crash and is shipped after the next Open.
func (s *Spool) WaitWritten(ctx context.Context) error { return s.waitFor(ctx, false) }

// waitFor waits until every entry recorded before the call is on disk and,
// if acked, acknowledged. The spool's own entries take sequence numbers
// too, so the number to wait for is read once the entries are on disk.
func (s *Spool) waitFor(ctx context.Context, acked bool) error {
	n := s.recorded.Load()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writtenRecorded < n {
		if s.closed {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("spool: %d of %d entries on disk: %w", s.writtenRecorded, n, err)
		}
		s.cond.Wait()
	}
	target := s.written
	for acked && s.acked < target {
		if s.closed {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("spool: flush: acknowledged through %d of %d: %w", s.acked, target, err)
		}
		s.cond.Wait()
	}
	return nil
}

// Close writes the queued entries to disk and stops shipping; what the
// server has not acknowledged is sent after the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.cfg.BeforeClose != nil {
		s.cfg.BeforeClose()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	close(s.closing)
	s.cancel()
	<-s.done
	return nil
}

// writer appends queued entries to the current segment, one fsync per batch.
//
// It takes entries from the queue only while holding wmu, as Record's own
// write does, so entries reach the disk in the order Record accepted them
// (except around a full spool: a batch waiting for room may be overtaken).
func (s *Spool) writer() {
	defer func() {
		s.wmu.Lock()
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
		s.wmu.Unlock()
	}()
	batch := make([]*auditentry.Entry, 0, writeBatch)
	for {
		batch = batch[:0]
		s.wmu.Lock()
		select {
		case e := <-s.in:
			batch = append(batch, e)
		case <-s.kick:
			// Room again after drops: write their count.
		case release := <-s.lockReq:
			// The sender repairs a damaged segment (recover.go).
			s.wmu.Unlock()
			<-release
			continue
		case <-s.closing:
			// Drain what Record accepted before Close, and write a pending
			// drop count whatever the room.
			for {
				select {
				case e := <-s.in:
					batch = append(batch, e)
					continue
				default:
				}
				break
			}
			s.writeLocked(batch, true)
			s.wmu.Unlock()
			return
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case e := <-s.in:
				batch = append(batch, e)
			default:
				break drain
			}
		}
		if len(batch) < cap(batch) && len(batch) > 0 && s.cfg.WriteLinger > 0 {
			s.gather(&batch)
		}
		// Back-pressure: with MaxBytes on disk, wait until the server holds
		// everything written (then a new segment starts and the old ones
		// go). Record drops meanwhile, so wmu is let go.
		s.mu.Lock()
		if s.fullLocked() && !s.closed {
			s.wmu.Unlock()
			for s.fullLocked() && !s.closed {
				s.cond.Wait()
			}
			s.mu.Unlock()
			s.wmu.Lock()
		} else {
			s.mu.Unlock()
		}
		s.writeLocked(batch, true)
		s.wmu.Unlock()
	}
}

// gather adds entries to batch for up to WriteLinger, until it is full or
// the spool closes.
func (s *Spool) gather(batch *[]*auditentry.Entry) {
	t := time.NewTimer(s.cfg.WriteLinger)
	defer t.Stop()
	for len(*batch) < cap(*batch) {
		select {
		case e := <-s.in:
			*batch = append(*batch, e)
		case <-t.C:
			return
		case <-s.closing:
			return
		}
	}
}

// writeLocked stores one batch (with s.wmu held), preceded by the count of
// entries dropped since the last write, if any. Errors are retried: an
// entry accepted by Record is not given up on while the process lives.
// recorded: the batch is of entries Record accepted (else the spool's own).
func (s *Spool) writeLocked(batch []*auditentry.Entry, recorded bool) {
	nrec := uint64(0)
	if recorded {
		nrec = uint64(len(batch))
	}
	s.mu.Lock()
	if s.dropped > 0 {
		batch = append([]*auditentry.Entry{droppedEntry(s.dropped, s.firstDrop, s.lastDrop, s.cfg.Now(), s.cfg.MaxBytes)}, batch...)
		s.dropped = 0
	}
	seq := s.written
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	b := s.buf[:0]
	for _, e := range batch {
		seq++
		e.Stream, e.Seq = s.stream, seq
		data, err := e.Marshal()
		if err != nil { // Record validated it; only an oversized entry gets here
			s.cfg.Log.Error("audit spool: entry cannot be encoded; recording its loss instead", "action", e.Action, "err", err)
			lost := &auditentry.Entry{V: auditentry.SchemaVersion, Time: e.Time, Actor: e.Actor, Action: "audit.entry_lost",
				Outcome: auditentry.OutcomeFailure, Reason: auditentry.Clip(err.Error()), Stream: s.stream, Seq: seq}
			lost.Actor = auditentry.Actor{SpiffeID: auditentry.Clip(e.Actor.SpiffeID), User: auditentry.Clip(e.Actor.User)}
			if data, err = lost.Marshal(); err != nil {
				panic(err) // a small entry of clipped fields always encodes
			}
		}
		b = frame(b, data)
	}
	s.buf = b
	for attempt := 1; ; attempt++ {
		err := s.appendSegment(&s.f, b, seq-uint64(len(batch))+1)
		if err == nil {
			break
		}
		s.cfg.Log.Error("audit spool: write failed; retrying", "dir", s.cfg.Dir, "err", err)
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
		select {
		case <-time.After(s.cfg.Backoff(attempt)):
		case <-s.closing:
			if attempt > 3 {
				s.cfg.Log.Error("audit spool: giving up on entries at close", "entries", len(batch))
				return
			}
		}
	}
	s.mu.Lock()
	s.written = seq
	s.writtenRecorded += nrec
	s.cond.Broadcast()
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// droppedEntry says how many entries the spool dropped while it was full.
// The server names the shipper (actor, target and source) when it stores it.
func droppedEntry(n uint64, first, last, now time.Time, maxBytes int64) *auditentry.Entry {
	return &auditentry.Entry{V: auditentry.SchemaVersion, Time: now, Actor: auditentry.Actor{User: "rampart-spool"},
		Action: "audit.entries_dropped", Outcome: auditentry.OutcomeFailure,
		Reason: fmt.Sprintf("%d audit entries dropped: the spool held %d bytes the server had not acknowledged", n, maxBytes),
		Details: map[string]string{"count": strconv.FormatUint(n, 10),
			"first": first.UTC().Format(time.RFC3339Nano), "last": last.UTC().Format(time.RFC3339Nano)}}
}

// appendSegment writes b (records from sequence number first on) to the
// last segment, starting a new one when it is full, and fsyncs.
func (s *Spool) appendSegment(f **os.File, b []byte, first uint64) error {
	s.mu.Lock()
	// A new segment starts when the last is full, or when the server holds
	// all of it, so that it can be deleted at the next acknowledgement.
	newSeg := len(s.segments) == 0 || s.segments[len(s.segments)-1].size >= s.cfg.SegmentBytes ||
		(s.acked >= s.written && s.segments[len(s.segments)-1].size > 0)
	if newSeg {
		s.segments = append(s.segments, segment{first: first})
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
	last := s.segments[len(s.segments)-1]
	s.mu.Unlock()
	if *f == nil {
		nf, err := os.OpenFile(filepath.Join(s.cfg.Dir, last.name()), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		*f = nf
	}
	// Write at the recorded size: a failed earlier attempt may have left a
	// partial write behind it.
	if _, err := (*f).WriteAt(b, last.size); err != nil {
		return err
	}
	if err := (*f).Sync(); err != nil {
		return err
	}
	if newSeg {
		if d, err := os.Open(s.cfg.Dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
	s.mu.Lock()
	s.segments[len(s.segments)-1].size += int64(len(b))
	s.bytes += int64(len(b))
	s.mu.Unlock()
	return nil
}

// sender delivers what is on disk, in order, until ctx is done.
func (s *Spool) sender(ctx context.Context) {
	var rd *segReader
	defer func() { rd.close() }()
	failures := 0
	for {
		s.mu.Lock()
		written, acked := s.written, s.acked
		s.mu.Unlock()
		if acked >= written {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if written-acked < uint64(s.cfg.BatchSize) && s.cfg.Linger > 0 && failures == 0 {
			if !s.linger(ctx) {
				return
			}
			s.mu.Lock()
			written = s.written
			s.mu.Unlock()
		}
		batch, err := s.read(&rd, acked+1, min(written-acked, uint64(s.cfg.BatchSize)))
		if err == nil {
			var upTo uint64
			if upTo, err = s.cfg.Sender.Send(ctx, batch); err == nil {
				err = s.ack(min(upTo, written), batch)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			s.failures.Inc()
			d := s.cfg.Backoff(failures)
			s.cfg.Log.Warn("audit spool: delivery failed; will retry", "err", err, "pending", written-acked, "retry_in", d)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
			continue
		}
		failures = 0
	}
}

// linger waits up to Linger for a full batch; false if ctx ended. On Close
// it returns at once, so what is on disk is offered before the sender stops.
func (s *Spool) linger(ctx context.Context) bool {
	t := time.NewTimer(s.cfg.Linger)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-s.closing:
			return true
		case <-ctx.Done():
			return false
		case <-s.wake:
			s.mu.Lock()
			full := s.written-s.acked >= uint64(s.cfg.BatchSize)
			s.mu.Unlock()
			if full {
				return true
			}
		}
	}
}

// ack records that the server holds everything through upTo and deletes
// the segments that are wholly acknowledged.
func (s *Spool) ack(upTo uint64, batch []*auditentry.Entry) error {
	s.mu.Lock()
	old := s.acked
	s.mu.Unlock()
	if upTo <= old {
		return fmt.Errorf("server acknowledged through %d, no progress past %d", upTo, old)
	}
	if err := atomicfile.Write(filepath.Join(s.cfg.Dir, "acked"), []byte(strconv.FormatUint(upTo, 10)+"\n"), 0o600); err != nil {
		return err
	}
	var sent float64
	for _, e := range batch {
		if e.Seq <= upTo {
			sent++
		}
	}
	s.sent.Add(sent)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked = upTo
	if s.dropped > 0 && !s.fullLocked() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	// A segment is done when the next one starts at or below upTo+1. The
	// last segment is kept: the writer appends to it.
	for len(s.segments) > 1 && s.segments[1].first <= upTo+1 {
		if err := os.Remove(filepath.Join(s.cfg.Dir, s.segments[0].name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		s.bytes -= s.segments[0].size
		s.segments = s.segments[1:]
	}
	s.cond.Broadcast()
	return nil
}

// segReader reads records sequentially from one segment.
type segReader struct {
	seg   segment
	below uint64 // the next segment's first sequence number, 0 if none when opened
	f     *os.File
	r     *reader
	last  uint64            // sequence number of the last record read from the segment
	next  uint64            // the sequence number this reader goes on from
	held  *auditentry.Entry // read but not returned: it follows a gap
}

func (rd *segReader) close() {
	if rd != nil && rd.f != nil {
		rd.f.Close()
		rd.f = nil
	}
}

// openSegReader opens the segment that holds sequence number from (the last
// one starting at or before it), or the one after segment after when
// after is not nil; nil when there is none.
func (s *Spool) openSegReader(from uint64, after *segment) (*segReader, error) {
	s.mu.Lock()
	i := -1
	if after == nil {
		for i = len(s.segments) - 1; i > 0 && s.segments[i].first > from; i-- {
		}
	} else {
		for j := range s.segments {
			if s.segments[j].first > after.first {
				i = j
				break
			}
		}
	}
	if i < 0 || i >= len(s.segments) {
		s.mu.Unlock()
		return nil, nil
	}
	seg := s.segments[i]
	var below uint64
	if i+1 < len(s.segments) {
		below = s.segments[i+1].first
	}
	s.mu.Unlock()
	f, err := os.Open(filepath.Join(s.cfg.Dir, seg.name()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &damageAt{seg: seg, err: err} // removed by someone
	}
	if err != nil {
		return nil, err
	}
	return &segReader{seg: seg, below: below, f: f, r: &reader{br: bufio.NewReaderSize(f, 64<<10), limit: seg.size},
		last: seg.first - 1, next: from}, nil
}

// read returns up to n entries with consecutive sequence numbers, the
// first of them from from on (numbers lost to damage are skipped: the
// server records the gap). A damaged segment is repaired (recover.go) and
// reading goes on after the damage.
func (s *Spool) read(rdp **segReader, from, n uint64) ([]*auditentry.Entry, error) {
	for repaired := false; ; repaired = true {
		out, bad, err := s.readSome(rdp, from, n)
		if bad == nil {
			return out, err
		}
		(*rdp).close()
		*rdp = nil
		if repaired {
			return nil, fmt.Errorf("segment %s at offset %d: still damaged after its repair: %w", bad.seg.name(), bad.off, bad.err)
		}
		if err := s.repair(bad.seg); err != nil {
			return nil, fmt.Errorf("segment %s at offset %d: %w; repairing it: %w", bad.seg.name(), bad.off, bad.err, err)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
}

// repair repairs a segment found damaged while the spool runs.
func (s *Spool) repair(seg segment) error {
	unlock, err := s.lockWrites()
	if err != nil {
		return err
	}
	defer unlock()
	select {
	case <-s.closing:
		return ErrClosed // the writer may have stopped: no more writes
	default:
	}
	return s.repairLocked(seg, false)
}

// lockWrites takes wmu outside the writer goroutine and Record. The
// writer holds wmu while it waits for entries: it is asked to let go
// (lockReq). When it is busy instead (writing, or waiting for room with
// wmu let go), wmu is tried again shortly.
func (s *Spool) lockWrites() (unlock func(), err error) {
	for {
		if s.wmu.TryLock() {
			return s.wmu.Unlock, nil
		}
		release := make(chan struct{})
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case s.lockReq <- release:
			t.Stop()
			s.wmu.Lock()
			return func() { s.wmu.Unlock(); close(release) }, nil
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return nil, ErrClosed
		}
	}
}

// damageAt says where read found damage.
type damageAt struct {
	seg segment
	off int64
	err error
}

func (d *damageAt) Error() string {
	return fmt.Sprintf("segment %s at offset %d: %v", d.seg.name(), d.off, d.err)
}

func (s *Spool) readSome(rdp **segReader, from, n uint64) ([]*auditentry.Entry, *damageAt, error) {
	rd := *rdp
	if rd == nil || rd.next != from {
		rd.close()
		*rdp = nil
		var err error
		if rd, err = s.openSegReader(from, nil); err != nil || rd == nil {
			if d := (*damageAt)(nil); errors.As(err, &d) {
				return nil, d, nil
			}
			return nil, nil, cmp.Or(err, errors.New("no segment on disk"))
		}
		*rdp = rd
	}
	var out []*auditentry.Entry
	if e := rd.held; e != nil && e.Seq >= from {
		out = append(out, e)
	}
	rd.held = nil
	for uint64(len(out)) < n {
		data, err := rd.r.next()
		if errors.Is(err, io.EOF) {
			// The end of what is written of this segment: more of it,
			// or the next segment. Both are read under one lock: once a
			// next segment exists, nothing more goes into this one.
			s.mu.Lock()
			size := rd.r.limit
			for _, sg := range s.segments {
				if sg.first == rd.seg.first {
					size = sg.size
				}
			}
			s.mu.Unlock()
			if size > rd.r.limit {
				rd.r.limit = size
				continue
			}
			nrd, err := s.openSegReader(from, &rd.seg)
			if d := (*damageAt)(nil); errors.As(err, &d) {
				return out, d, nil
			}
			if err != nil {
				return nil, nil, err
			}
			if nrd == nil {
				break
			}
			rd.close()
			rd, *rdp = nrd, nrd
			continue
		}
		var e *auditentry.Entry
		if err == nil {
			if e, err = auditentry.Parse(data); err == nil && !belongs(e, s.stream, rd.last, rd.below) {
				err = fmt.Errorf("a record of stream %s seq %d after seq %d", e.Stream, e.Seq, rd.last)
			}
		}
		if err != nil {
			return out, &damageAt{seg: rd.seg, off: rd.r.off, err: err}, nil
		}
		rd.last = e.Seq
		if e.Seq < from {
			continue
		}
		if len(out) > 0 && e.Seq != out[len(out)-1].Seq+1 {
			rd.held = e // a batch holds consecutive numbers
			break
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		rd.close()
		*rdp = nil
		return nil, nil, fmt.Errorf("no entry from %d on disk", from)
	}
	rd.next = out[len(out)-1].Seq + 1
	return out, nil, nil
}

// reader decodes the records of a segment up to limit, the bytes known to
// be written (an append may be in progress past it).
type reader struct {
	br    *bufio.Reader
	off   int64 // offset after the last good record
	limit int64
	hdr   [recordHeader]byte
}

func (r *reader) next() ([]byte, error) {
	if r.off >= r.limit {
		return nil, io.EOF
	}
	if r.limit-r.off < recordHeader {
		return nil, errors.New("torn record header")
	}
	// Short reads below limit are damage (the file is shorter than what
	// was written), never the end: %v, so that they are not io.EOF.
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, fmt.Errorf("record header: %v", err)
	}
	n := int64(binary.BigEndian.Uint32(r.hdr[:4]))
	if n == 0 || n > auditentry.MaxSize {
		return nil, fmt.Errorf("record of %d bytes, want 1 to %d", n, auditentry.MaxSize)
	}
	if r.off+recordHeader+n > r.limit {
		return nil, errors.New("torn record")
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r.br, data); err != nil {
		return nil, fmt.Errorf("record: %v", err)
	}
	if crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(r.hdr[4:]) {
		return nil, errors.New("record checksum mismatch")
	}
	r.off += recordHeader + n
	return data, nil
}
