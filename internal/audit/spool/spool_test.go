package spool

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// receiver stands in for the server's ingestion: it keeps what it gets,
// drops what it already holds (by sequence number), notes gaps in the
// sequence as the server does (audit.ingest.gap), and can be made to fail
// or to lose its answer.
type receiver struct {
	mu       sync.Mutex
	last     uint64
	got      []*auditentry.Entry
	gaps     [][2]uint64 // from, to
	calls    int
	down     bool // refuse every batch
	loseNext int  // store the next n batches but report a failure
}

func (r *receiver) Send(ctx context.Context, batch []*auditentry.Entry) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.down {
		return 0, errors.New("server down")
	}
	for i, e := range batch {
		if i > 0 && e.Seq != batch[i-1].Seq+1 {
			return 0, errors.New("a batch with a gap at " + strconv.FormatUint(batch[i-1].Seq+1, 10)) // the server refuses it (400)
		}
		if e.Seq > r.last {
			if e.Seq != r.last+1 {
				r.gaps = append(r.gaps, [2]uint64{r.last + 1, e.Seq - 1})
			}
			r.got = append(r.got, e)
			r.last = e.Seq
		}
	}
	if r.loseNext > 0 {
		r.loseNext--
		return 0, errors.New("answer lost")
	}
	return r.last, nil
}

func (r *receiver) setDown(d bool) { r.mu.Lock(); r.down = d; r.mu.Unlock() }

func entry(i int) *auditentry.Entry {
	return &auditentry.Entry{V: auditentry.SchemaVersion, Time: time.Unix(1700000000, 0).Add(time.Duration(i)), Action: "authz.decision",
		Actor: auditentry.Actor{SpiffeID: "spiffe://example.org/a"}, Outcome: auditentry.OutcomeSuccess,
		Details: map[string]string{"i": strconv.Itoa(i)}}
}

func open(t *testing.T, dir string, r Sender, mod func(*Config)) *Spool {
	t.Helper()
	cfg := Config{Dir: dir, Sender: r, SegmentBytes: 4096, BatchSize: 50, Backoff: func(int) time.Duration { return time.Millisecond }}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func flush(t *testing.T, s *Spool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// check asserts the receiver holds entries 0..n-1 of the test, in order, once.
func (r *receiver) check(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != n || len(r.gaps) != 0 {
		t.Fatalf("receiver holds %d entries and gaps %v, want %d entries and no gap", len(r.got), r.gaps, n)
	}
	for i, e := range r.got {
		if e.Seq != uint64(i+1) || e.Details["i"] != strconv.Itoa(i) {
			t.Fatalf("entry %d: seq %d i=%s", i, e.Seq, e.Details["i"])
		}
	}
}

func waitWritten(t *testing.T, s *Spool, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if w, _ := s.Progress(); w >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry %d never reached the disk", n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDeliversEverythingOnceDespiteFailures(t *testing.T) {
	r := &receiver{loseNext: 3}
	dir := t.TempDir()
	s := open(t, dir, r, nil)
	defer s.Close()
	for i := range 2000 {
		if err := s.Record(entry(i)); err != nil {
			t.Fatal(err)
		}
		if i == 500 {
			r.setDown(true)
		}
		if i == 900 {
			r.setDown(false)
		}
	}
	flush(t, s)
	r.check(t, 2000)
	// Acknowledged segments are deleted; the one being written stays.
	if n := len(segments(t, dir)); n != 1 {
		t.Fatalf("%d segments left after everything was acknowledged, want 1", n)
	}
	if w, a := s.Progress(); w != 2000 || a != 2000 {
		t.Fatalf("progress %d/%d", w, a)
	}
}

func TestServerAwayAcrossRestart(t *testing.T) {
	r := &receiver{down: true}
	dir := t.TempDir()
	s := open(t, dir, r, nil)
	for i := range 300 {
		if err := s.Record(entry(i)); err != nil {
			t.Fatal(err)
		}
		waitWritten(t, s, uint64(i+1)) // one write per entry: many segments
	}
	s.Close() // the proxy restarts while the server is still away
	if len(segments(t, dir)) < 2 {
		t.Fatalf("want the entries on disk in several segments, got %v", segments(t, dir))
	}
	r.setDown(false)
	s = open(t, dir, r, nil)
	defer s.Close()
	for i := 300; i < 400; i++ {
		if err := s.Record(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, s)
	r.check(t, 400)
	if s.Stream() != r.got[0].Stream || r.got[399].Stream != s.Stream() {
		t.Fatal("the stream ID changed across the restart")
	}
}

// holds returns how many of entries 0..n-1 the receiver holds (each once),
// and the audit.entries_dropped entries it got.
func (r *receiver) holds(t *testing.T, n int) (held int, drops []*auditentry.Entry) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range r.got {
		if e.Action == "audit.entries_dropped" {
			drops = append(drops, e)
			continue
		}
		k := e.Details["i"]
		if seen[k] {
			t.Fatalf("entry %s received twice", k)
		}
		seen[k] = true
	}
	return len(seen), drops
}

// Issue 27: Record used to wait on the caller's context when the queue was
// full, so a caller that cancelled (a reset HTTP/2 stream) erased its own
// record. Now a full queue goes to disk in the caller's goroutine.
func TestFullQueueIsWrittenToDiskNotLost(t *testing.T) {
	r := &receiver{down: true}
	s := open(t, t.TempDir(), r, nil)
	defer s.Close()
	const n = 3 * queueLen
	for i := range n {
		if err := s.Record(entry(i)); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitWritten(ctx); err != nil {
		t.Fatal(err)
	}
	r.setDown(false)
	flush(t, s)
	if held, drops := r.holds(t, n); held != n || len(drops) != 0 {
		t.Fatalf("receiver holds %d of %d entries and %d drop counts", held, n, len(drops))
	}
}

// With MaxBytes on disk and the server away, Record neither blocks nor
// forgets: it drops and counts, and the count reaches the server as an
// audit.entries_dropped entry (and a metric).
func TestFullSpoolDropsAndCounts(t *testing.T) {
	r := &receiver{down: true}
	s := open(t, t.TempDir(), r, func(c *Config) { c.MaxBytes = 2048 })
	defer s.Close()
	const n = 5000
	refused := 0
	for i := range n {
		switch err := s.Record(entry(i)); {
		case errors.Is(err, ErrDropped):
			refused++
		case err != nil:
			t.Fatal(err)
		}
	}
	if refused == 0 || uint64(refused) != s.Dropped() {
		t.Fatalf("%d entries refused as dropped, Dropped() = %d; want the same, above 0", refused, s.Dropped())
	}
	// Bounded: what was written before the spool reached 2 KiB (at most
	// one queue, drained by a caller when the writer goroutine had not run
	// yet, or one batch), then the queue and one batch in the writer's hands
	// waiting for the server. On a loaded machine the first case happens.
	if kept := n - refused; kept > 2*queueLen+writeBatch+16 {
		t.Fatalf("kept %d entries with 2 KiB of spool; memory is not bounded", kept)
	}
	if got := testutil.ToFloat64(s.dropCounter); got != float64(refused) {
		t.Fatalf("dropped metric %v, want %d", got, refused)
	}
	r.setDown(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		held, drops := r.holds(t, n)
		if held == n-refused && len(drops) == 1 {
			if drops[0].Details["count"] != strconv.Itoa(refused) {
				t.Fatalf("drop entry counts %s, want %d", drops[0].Details["count"], refused)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("receiver holds %d of %d kept entries and %d drop counts", held, n-refused, len(drops))
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRecordRefusesInvalidEntries(t *testing.T) {
	s := open(t, t.TempDir(), &receiver{}, nil)
	defer s.Close()
	e := entry(0)
	e.Action = "Bad Action"
	if err := s.Record(e); err == nil {
		t.Fatal("an invalid entry was accepted")
	}
	s.Close()
	if err := s.Record(entry(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
}

// Linger: partial batches wait for more (one request per batch, not per
// handful); full ones go at once.
func TestLingerSendsFullBatches(t *testing.T) {
	r := &receiver{}
	s := open(t, t.TempDir(), r, func(c *Config) { c.BatchSize = 10; c.Linger = time.Hour })
	defer s.Close()
	for i := range 25 {
		if err := s.Record(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		got, calls := len(r.got), r.calls
		r.mu.Unlock()
		if got >= 20 {
			if got != 20 || calls != 2 {
				t.Fatalf("%d entries in %d requests; want 20 in 2 (the last 5 wait for the batch to fill)", got, calls)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries delivered", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// Issue 26 ("directories others control"): a spool directory another local
// user made first (in /tmp, after a reboot) was used as it was: its owner
// could read every entry and put their own in the stream, which the server
// stores as this service's. Open refuses it, naming the directory and the
// fix, and writes nothing there.
func TestOpenRefusesADirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-spool-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	theirs := filepath.Join(tmp, "spool")
	mk := exec.Command("/bin/mkdir", "-m", "0777", theirs)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	groupWritable := filepath.Join(tmp, "group")
	os.Mkdir(groupWritable, 0o700)
	os.Chmod(groupWritable, 0o770)
	for dir, want := range map[string]string{
		theirs:                                "is owned by uid 65534",
		filepath.Join(theirs, "audit-spool"):  "a parent of",
		groupWritable:                         "chmod go-w " + groupWritable,
		filepath.Join(groupWritable, "spool"): "a parent of",
	} {
		_, err := Open(Config{Dir: dir, Sender: &receiver{}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Open(%s) = %v, want an error naming it and saying %q", dir, err, want)
		}
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Fatalf("the spool wrote %v into another user's directory", ents)
	}
	// Its own directory, made here, is fine.
	s, err := Open(Config{Dir: filepath.Join(tmp, "mine", "spool"), Sender: &receiver{}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}
