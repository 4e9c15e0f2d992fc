package spool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// syncBuffer is a log destination the spool's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// frames returns a segment file's bytes and the offsets of its records,
// read without the spool's code.
func frames(t *testing.T, path string) ([]byte, []int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := int64(0); off+recordHeader <= int64(len(b)); {
		offs = append(offs, off)
		off += recordHeader + int64(binary.BigEndian.Uint32(b[off:]))
	}
	return b, offs
}

// fillDown records entries 0..n-1 while the server is away, one write per
// entry (so segBytes decides where segments start), and closes the spool.
func fillDown(t *testing.T, dir string, n int, segBytes int64) {
	t.Helper()
	s := open(t, dir, &receiver{down: true}, func(c *Config) { c.SegmentBytes = segBytes })
	for i := range n {
		if err := s.Record(entry(i)); err != nil {
			t.Fatal(err)
		}
		waitWritten(t, s, uint64(i+1))
	}
	s.Close()
}

// until polls cond (the receiver is another goroutine's) for up to 30 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// repaired waits until the spool kept a copy of a damaged segment (it
// repaired it), while the server is away: a batch the sender read before
// the damage was done could otherwise still be delivered whole.
func repaired(t *testing.T, dir string) {
	t.Helper()
	until(t, "the damaged segment is repaired", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, damagedDir, "*"))
		return len(m) > 0
	})
}

// lost returns the audit.entry_lost entries the receiver holds.
func (r *receiver) lost() []*auditentry.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*auditentry.Entry
	for _, e := range r.got {
		if e.Action == "audit.entry_lost" {
			out = append(out, e)
		}
	}
	return out
}

// checkAfterDamage asserts what the receiver holds after a damaged spool
// was recovered: each of entries 0..n-1 but the lost ones exactly once (in
// order, under increasing numbers: none reused), the gap the lost ones
// leave, one audit.entry_lost naming them, and nothing else.
func (r *receiver) checkAfterDamage(t *testing.T, n int, lostI []int, from, to string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var got []int
	var lost []*auditentry.Entry
	for i, e := range r.got {
		if i > 0 && e.Seq <= r.got[i-1].Seq {
			t.Fatalf("seq %d after seq %d", e.Seq, r.got[i-1].Seq)
		}
		if e.Action == "audit.entry_lost" {
			lost = append(lost, e)
			continue
		}
		k, err := strconv.Atoi(e.Details["i"])
		if err != nil {
			t.Fatalf("entry %+v", e)
		}
		got = append(got, k)
	}
	var want []int
	for i := range n {
		if !slices.Contains(lostI, i) {
			want = append(want, i)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("receiver holds entries %v, want %v (each once, in order)", got, want)
	}
	if len(lost) != 1 || lost[0].Details["from"] != from || lost[0].Details["to"] != to {
		t.Fatalf("audit.entry_lost entries %+v, want one naming entries %s to %s", lost, from, to)
	}
	if d := lost[0].Details; d["segment"] == "" || d["offset"] == "" || d["bytes"] == "" || d["copy"] != "" && !strings.HasPrefix(d["copy"], "damaged/") {
		t.Fatalf("audit.entry_lost details %v: want the segment, offset, bytes and copy", d)
	}
	if len(lostI) > 0 {
		f, _ := strconv.ParseUint(from, 10, 64)
		if len(r.gaps) == 0 || r.gaps[0][0] != f {
			t.Fatalf("receiver saw gaps %v, want one from %s", r.gaps, from)
		}
	}
}

// checkKept asserts that the damaged segment's bytes are kept, 0600, in
// damaged/, and returns how many copies there are.
func checkKept(t *testing.T, dir string, damaged []byte) int {
	t.Helper()
	copies, _ := filepath.Glob(filepath.Join(dir, damagedDir, "*"))
	for _, c := range copies {
		b, _ := os.ReadFile(c)
		fi, _ := os.Stat(c)
		if bytes.Equal(b, damaged) && fi.Mode().Perm() == 0o600 {
			return len(copies)
		}
	}
	t.Fatalf("no 0600 copy of the damaged segment in %s (have %v)", damagedDir, copies)
	return 0
}

// Issue 25 ("truncation on recovery"): one damaged record in the middle of
// the last segment made Open cut the segment there. Every intact entry
// after it was lost, and new entries took their numbers, so the server,
// which had not seen them, recorded no gap: the loss left no trace.
func TestDamageInTheLastSegmentKeepsWhatFollows(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(b []byte, offs []int64)
		lostI    []int // entries lost (0-based; entry i has seq i+1)
		from, to string
	}{
		{"a flipped bit in an entry", func(b []byte, offs []int64) { b[offs[3]+recordHeader+30] ^= 0x01 }, []int{3}, "4", "4"},
		{"a record's header overwritten", func(b []byte, offs []int64) { copy(b[offs[3]:], []byte{0xff, 0xff, 0xff, 0xff}) }, []int{3}, "4", "4"},
		{"two records zeroed", func(b []byte, offs []int64) { clear(b[offs[3]:offs[5]]) }, []int{3, 4}, "4", "5"},
		{"the last record's entry damaged", func(b []byte, offs []int64) { b[len(b)-3] ^= 0x20 }, []int{9}, "10", "10"},
		{"the last record unreadable", func(b []byte, offs []int64) {
			for i := offs[9]; i < int64(len(b)); i++ {
				b[i] = 0xaa
			}
		}, []int{9}, "10", ""}, // how many is unknown: the next number is not reused all the same
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fillDown(t, dir, 10, 1<<20)
			seg := segments(t, dir)[0]
			b, offs := frames(t, seg)
			tt.damage(b, offs)
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			r := &receiver{}
			s := open(t, dir, r, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
			for i := 10; i < 12; i++ {
				if err := s.Record(entry(i)); err != nil {
					t.Fatal(err)
				}
			}
			flush(t, s)
			s.Close()
			r.checkAfterDamage(t, 12, tt.lostI, tt.from, tt.to)
			if lost := r.lost(); lost[0].Seq <= 10 {
				t.Fatalf("audit.entry_lost took seq %d: a number in use before", lost[0].Seq)
			}
			checkKept(t, dir, b)
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "damaged segment") {
				t.Fatalf("logs: %s\nwant an error naming the damaged segment", logs.String())
			}
			// Once repaired, the spool opens without finding damage again.
			s = open(t, dir, r, nil)
			s.Record(entry(12))
			flush(t, s)
			s.Close()
			if n := len(r.lost()); n != 1 {
				t.Fatalf("%d audit.entry_lost entries after another start, want 1", n)
			}
			if n := checkKept(t, dir, b); n != 1 {
				t.Fatalf("%d copies after another start, want 1", n)
			}
		})
	}
}

// Issue 25: a damaged record in a segment before the last made every read
// fail, so the sender retried forever and nothing after it was delivered.
func TestDamageInAnEarlierSegmentDoesNotStopDelivery(t *testing.T) {
	tests := []struct {
		name     string
		record   func(offs []int64) int // which record of the first segment
		lostI    func(offs []int64) []int
		from, to func(offs []int64) string
	}{
		{"in the middle", func([]int64) int { return 2 }, func([]int64) []int { return []int{2} },
			func([]int64) string { return "3" }, func([]int64) string { return "3" }},
		// The next segment's first number bounds what was lost.
		{"its last record", func(offs []int64) int { return len(offs) - 1 }, func(offs []int64) []int { return []int{len(offs) - 1} },
			func(offs []int64) string { return strconv.Itoa(len(offs)) }, func(offs []int64) string { return strconv.Itoa(len(offs)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fillDown(t, dir, 60, 4096)
			segs := segments(t, dir)
			if len(segs) < 3 {
				t.Fatalf("want several segments, got %v", segs)
			}
			b, offs := frames(t, segs[0])
			k := tt.record(offs)
			for i := offs[k] + recordHeader; i < offs[k]+recordHeader+20; i++ {
				b[i] = 'x' // the start of the entry: its checksum fails
			}
			if err := os.WriteFile(segs[0], b, 0o600); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			r := &receiver{}
			s := open(t, dir, r, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
			defer s.Close()
			until(t, "the loss reaches the server", func() bool { return len(r.lost()) > 0 })
			s.Record(entry(60))
			flush(t, s)
			r.checkAfterDamage(t, 61, tt.lostI(offs), tt.from(offs), tt.to(offs))
			checkKept(t, dir, b)
			if !strings.Contains(logs.String(), "level=ERROR") {
				t.Fatalf("logs: %s\nwant an error naming the damaged segment", logs.String())
			}
		})
	}
}

// Damage that appears while the spool runs, in the segment the writer
// appends to: reading repairs it, and writing goes on after it.
func TestDamageWhileRunning(t *testing.T) {
	dir := t.TempDir()
	r := &receiver{down: true}
	s := open(t, dir, r, func(c *Config) { c.SegmentBytes = 1 << 20 })
	defer s.Close()
	for i := range 10 {
		s.Record(entry(i))
	}
	waitWritten(t, s, 10)
	seg := segments(t, dir)[0]
	b, offs := frames(t, seg)
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff}, offs[3]) // the header of seq 4
	f.Close()
	copy(b[offs[3]:], []byte{0xff, 0xff})
	repaired(t, dir)
	r.setDown(false)
	until(t, "the loss reaches the server", func() bool { return len(r.lost()) > 0 })
	for i := 10; i < 12; i++ {
		s.Record(entry(i))
	}
	flush(t, s)
	r.checkAfterDamage(t, 12, []int{3}, "4", "4")
	checkKept(t, dir, b)
	// What the writer appended after the repair reads back at the next start.
	s.Close()
	s = open(t, dir, r, nil)
	if w, a := s.Progress(); w != 13 || a != 13 {
		t.Fatalf("progress %d/%d after a restart, want 13/13", w, a)
	}
}

// A crash can leave a torn write at the end of the last segment: an append
// whose fsync never returned. It is trimmed (and logged); nothing in it was
// acknowledged, so its number is reused and the server sees no gap.
func TestTornTailIsCutOff(t *testing.T) {
	tests := []struct {
		name string
		tail []byte
	}{
		{"a header cut short", []byte{0, 0, 1, 0, 0xde, 0xad}},
		{"a record cut short", []byte{0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, '{', '"', 'v'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &receiver{down: true}
			dir := t.TempDir()
			s := open(t, dir, r, nil)
			for i := range 10 {
				s.Record(entry(i))
			}
			s.Close()
			segs := segments(t, dir)
			last := segs[len(segs)-1]
			f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tt.tail)
			f.Close()
			r.setDown(false)
			var logs syncBuffer
			s = open(t, dir, r, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
			defer s.Close()
			s.Record(entry(10))
			flush(t, s)
			r.check(t, 11)
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "torn write") {
				t.Fatalf("logs: %s\nwant a warning about the torn write", logs.String())
			}
			if _, err := os.Stat(filepath.Join(dir, damagedDir)); err == nil {
				t.Fatal("a torn write was kept as damage")
			}
		})
	}
}

// A segment shorter than what was written while the spool runs (cut by
// someone): the loss is recorded, not waited on forever.
func TestSegmentCutWhileRunning(t *testing.T) {
	dir := t.TempDir()
	r := &receiver{down: true}
	s := open(t, dir, r, func(c *Config) { c.SegmentBytes = 1 << 20 })
	defer s.Close()
	for i := range 10 {
		s.Record(entry(i))
	}
	waitWritten(t, s, 10)
	seg := segments(t, dir)[0]
	_, offs := frames(t, seg)
	if err := os.Truncate(seg, offs[8]); err != nil {
		t.Fatal(err)
	}
	repaired(t, dir)
	r.setDown(false)
	until(t, "the loss reaches the server", func() bool { return len(r.lost()) > 0 })
	s.Record(entry(10))
	flush(t, s)
	r.checkAfterDamage(t, 11, []int{8, 9}, "9", "10")
}

// segmentOf encodes entries of stream with the given numbers as a segment.
func segmentOf(stream string, seqs ...uint64) []byte {
	var b []byte
	for _, q := range seqs {
		e := entry(int(q))
		e.Stream, e.Seq = stream, q
		data, err := e.Marshal()
		if err != nil {
			panic(err)
		}
		b = frame(b, data)
	}
	return b
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

const fuzzStream = "0123456789abcdef0123456789abcdef"

// The resynchronising reader takes whatever is on disk: it must never
// panic, must account for every byte, must find the first intact record
// after damage, and what it keeps must read back whole, by scanSegment and
// by the sequential reader the sender uses.
func FuzzScanSegment(f *testing.F) {
	good := segmentOf(fuzzStream, 1, 2, 3, 4, 5)
	f.Add(good)
	f.Add(good[:len(good)-7]) // torn
	for _, at := range []int{0, 3, 9, 200, len(good) / 2} {
		b := slices.Clone(good)
		b[at] ^= 0x40
		f.Add(b)
	}
	f.Add(append(slices.Clone(good[:300]), good...))
	f.Add(segmentOf(fuzzStream, 1, 2, 7, 8))
	f.Add(segmentOf("ffffffffffffffffffffffffffffffff", 1, 2))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, allowTorn := range []bool{false, true} {
			sc := scanSegment(b, fuzzStream, 0, 0, allowTorn)
			// Intact records and damaged runs tile [0, torn).
			var off int64
			var last uint64
			ii, di := 0, 0
			for off < sc.torn {
				switch {
				case ii < len(sc.intact) && sc.intact[ii].off == off:
					sp := sc.intact[ii]
					end, seq, ok := frameAt(b, off, fuzzStream, last, 0)
					if !ok || end != sp.end || seq != sp.seq || seq <= last || sc.high < seq {
						t.Fatalf("intact record %+v is not one (after %d, high %d)", sp, last, sc.high)
					}
					last, off = seq, sp.end
					ii++
				case di < len(sc.damaged) && sc.damaged[di].off == off:
					run := sc.damaged[di]
					if run.end <= run.off || run.prev != last {
						t.Fatalf("damaged run %+v after seq %d", run, last)
					}
					for o := run.off; o < run.end; o++ {
						if _, _, ok := frameAt(b, o, fuzzStream, last, 0); ok {
							t.Fatalf("damaged run %+v hides an intact record at %d", run, o)
						}
					}
					if run.next == 0 && sc.high <= last {
						t.Fatalf("damage at the end after seq %d, but high is %d: its number could be reused", last, sc.high)
					}
					if from, to, _ := run.lostRange(0, 0); run.next > 0 && (from != last+1 || to != run.next-1) {
						t.Fatalf("run %+v loses %d to %d", run, from, to)
					}
					off = run.end
					di++
				default:
					t.Fatalf("offset %d is neither intact nor damaged: %+v", off, sc)
				}
			}
			if ii != len(sc.intact) || di != len(sc.damaged) || off != sc.torn || sc.torn > int64(len(b)) {
				t.Fatalf("scan does not tile the segment: %+v", sc)
			}
			if sc.torn < int64(len(b)) && (!allowTorn || !torn(b[sc.torn:])) {
				t.Fatalf("trimmed %d bytes that are not a torn write", int64(len(b))-sc.torn)
			}
			// What is kept reads back whole.
			kept := sc.intactBytes(b)
			again := scanSegment(kept, fuzzStream, 0, 0, false)
			if len(again.damaged) != 0 || len(again.intact) != len(sc.intact) {
				t.Fatalf("the repaired segment scans as %+v", again)
			}
			r := &reader{br: bufioReader(kept), limit: int64(len(kept))}
			var prev uint64
			for i := range sc.intact {
				data, err := r.next()
				if err != nil {
					t.Fatalf("reading the repaired segment: %v", err)
				}
				e, err := auditentry.Parse(data)
				if err != nil || !belongs(e, fuzzStream, prev, 0) || e.Seq != sc.intact[i].seq {
					t.Fatalf("record %d of the repaired segment: %v %+v", i, err, e)
				}
				prev = e.Seq
			}
			if _, err := r.next(); err == nil {
				t.Fatal("the repaired segment reads more records than were kept")
			}
		}
	})
}

func TestFlushWaitsForTheSpoolsOwnEntries(t *testing.T) {
	// The spool's own entries (here a loss) take numbers too: Flush still
	// waits for everything recorded before it.
	dir := t.TempDir()
	fillDown(t, dir, 3, 1<<20)
	seg := segments(t, dir)[0]
	b, offs := frames(t, seg)
	b[offs[1]+recordHeader+30] ^= 1
	os.WriteFile(seg, b, 0o600)
	r := &receiver{}
	s := open(t, dir, r, nil)
	defer s.Close()
	s.Record(entry(3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.checkAfterDamage(t, 4, []int{1}, "2", "2")
}

// A lost stream file is not a reason to set every entry on disk aside as
// foreign: the segments name their stream, and the spool goes on with it.
func TestLostStreamFileIsTakenFromTheSegments(t *testing.T) {
	dir := t.TempDir()
	fillDown(t, dir, 10, 1<<20)
	if err := os.Remove(filepath.Join(dir, "stream")); err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
	s := open(t, dir, r, nil)
	defer s.Close()
	s.Record(entry(10))
	flush(t, s)
	r.check(t, 11)
	if r.got[0].Stream != r.got[10].Stream || s.Stream() != r.got[0].Stream {
		t.Fatalf("stream %s on disk, %s after the restart", r.got[0].Stream, r.got[10].Stream)
	}
	if _, err := os.Stat(filepath.Join(dir, damagedDir)); err == nil {
		t.Fatal("entries of the spool's own stream were set aside as damage")
	}
}

// A segment removed while the spool runs: what it held is recorded as
// lost, and delivery goes on with the next one.
func TestSegmentRemovedWhileRunning(t *testing.T) {
	dir := t.TempDir()
	r := &receiver{down: true}
	s := open(t, dir, r, func(c *Config) { c.SegmentBytes = 4096 })
	defer s.Close()
	for i := range 60 {
		s.Record(entry(i))
		waitWritten(t, s, uint64(i+1))
	}
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %v", segs)
	}
	first, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(segs[1]), ".seg"))
	next, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(segs[2]), ".seg"))
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	until(t, "the loss is on disk", func() bool { w, _ := s.Progress(); return w == 61 })
	r.setDown(false)
	s.Record(entry(60))
	flush(t, s)
	var lostI []int
	for q := first; q < next; q++ {
		lostI = append(lostI, q-1)
	}
	r.checkAfterDamage(t, 61, lostI, strconv.Itoa(first), strconv.Itoa(next-1))
}
