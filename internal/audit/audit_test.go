package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const origin = "rampart.test/audit"

func keys(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

func entry(i int) *Entry {
	return &Entry{V: 1, Time: time.Date(2026, 1, 1, 0, 0, 0, i, time.UTC), Actor: Actor{SpiffeID: "spiffe://example.org/orders"},
		Action: "authz.decision", Target: "spiffe://example.org/payments", Outcome: OutcomeSuccess, Details: map[string]string{"n": fmt.Sprint(i)}}
}

func openLog(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := Open(dir, origin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func fill(t testing.TB, l *Log, from, n int) {
	t.Helper()
	es := make([]*Entry, n)
	for i := range es {
		es[i] = entry(from + i)
	}
	first, err := l.AppendEntries(context.Background(), es...)
	if err != nil {
		t.Fatal(err)
	}
	if first != int64(from) {
		t.Fatalf("first index %d, want %d", first, from)
	}
}

// rfc6962Root is an independent, recursive RFC 6962 MTH (section 2.1).
func rfc6962Root(leaves [][]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

func TestEntryEncoding(t *testing.T) {
	e := entry(7)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"time":"2026-01-01T00:00:00.000000007Z","actor":{"spiffe_id":"spiffe://example.org/orders"},"action":"authz.decision","target":"spiffe://example.org/payments","outcome":"success","details":{"n":"7"}}`
	if string(b) != want {
		t.Fatalf("canonical encoding changed:\n got %s\nwant %s", b, want)
	}
	back, err := ParseEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := back.Marshal(); !bytes.Equal(b, b2) {
		t.Fatal("round trip is not byte-identical")
	}
	for name, bad := range map[string]string{
		"unknown field":   strings.Replace(want, `"v":1`, `"v":1,"x":2`, 1),
		"not canonical":   strings.Replace(want, `{"v":1,`, `{ "v":1,`, 1),
		"bad action":      strings.Replace(want, "authz.decision", "AUTHZ", 1),
		"bad outcome":     strings.Replace(want, `"success"`, `"ok"`, 1),
		"wrong version":   strings.Replace(want, `"v":1`, `"v":2`, 1),
		"trailing data":   want + "{}",
		"no actor":        strings.Replace(want, `{"spiffe_id":"spiffe://example.org/orders"}`, `{}`, 1),
		"time not in UTC": strings.Replace(want, "00:00:00.000000007Z", "01:00:00.000000007+01:00", 1),
		"not json":        "garbage",
	} {
		if _, err := ParseEntry([]byte(bad)); err == nil {
			t.Errorf("%s: accepted %s", name, bad)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	b, _ := entry(1).Marshal()
	f.Add(b)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted %q but it re-encodes as %q (%v)", data, again, err)
		}
	})
}

// Proofs verify for random sizes, and the root matches an independent
// RFC 6962 computation.
func TestProofs(t *testing.T) {
	l := openLog(t, t.TempDir())
	rng := mrand.New(mrand.NewPCG(3, 4))
	var leaves [][]byte
	for _, n := range []int{1, 1, 2, 5, 27, 100, 128, 257, 300} {
		start := len(leaves)
		fill(t, l, start, n)
		for i := start; i < start+n; i++ {
			b, _ := l.Entry(int64(i))
			leaves = append(leaves, b)
		}
	}
	size := int64(len(leaves))
	for range 300 {
		n := 1 + rng.Int64N(size)
		th, err := l.TreeHash(n)
		if err != nil {
			t.Fatal(err)
		}
		if th != tlog.Hash(rfc6962Root(leaves[:n])) {
			t.Fatalf("tree hash of %d differs from RFC 6962", n)
		}
		i := rng.Int64N(n)
		p, err := l.ProveInclusion(i, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, n, th, i, tlog.RecordHash(leaves[i])); err != nil {
			t.Fatalf("inclusion of %d in %d: %v", i, n, err)
		}
		if tlog.CheckRecord(p, n, th, i, tlog.RecordHash([]byte("forged"))) == nil {
			t.Fatal("inclusion proof accepted a forged entry")
		}
		old := 1 + rng.Int64N(n)
		oh, _ := l.TreeHash(old)
		tp, err := l.ProveConsistency(old, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(tp, n, th, old, oh); err != nil {
			t.Fatalf("consistency %d -> %d: %v", old, n, err)
		}
	}
}

// Attacks on the stored log: each must be found by Verify, at the index.
func TestVerifyFindsTampering(t *testing.T) {
	signer, verifier := keys(t)
	const n = 300
	build := func(t *testing.T) (string, []byte) {
		dir := t.TempDir()
		l, err := Open(dir, origin)
		if err != nil {
			t.Fatal(err)
		}
		fill(t, l, 0, 150)
		if _, err := l.Checkpoint(signer); err != nil {
			t.Fatal(err)
		}
		fill(t, l, 150, n-150)
		cp, err := l.Checkpoint(signer)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		return dir, cp
	}
	// offsets of each record in entries.log, for surgical edits
	records := func(t *testing.T, dir string) ([]byte, []int) {
		b, _ := os.ReadFile(filepath.Join(dir, "entries.log"))
		var offs []int
		for p := 0; p < len(b); {
			offs = append(offs, p)
			ln, k := binary.Uvarint(b[p:])
			p += k + int(ln)
		}
		return b, append(offs, len(b))
	}
	write := func(dir string, b []byte) { os.WriteFile(filepath.Join(dir, "entries.log"), b, 0o600) }

	t.Run("clean", func(t *testing.T) {
		dir, _ := build(t)
		rep, err := Verify(dir, verifier)
		if err != nil || !rep.OK() || rep.Entries != n || rep.Checkpoints != 2 {
			t.Fatalf("clean log: %v %+v", err, rep)
		}
	})
	tests := []struct {
		name      string
		mutate    func(b []byte, offs []int) []byte
		wantIndex int64
		wantKind  string
	}{
		{"single byte edit", func(b []byte, offs []int) []byte { b[offs[42]+30] ^= 1; return b }, 42, "edited"},
		{"edit in the last entry", func(b []byte, offs []int) []byte { b[offs[n-1]+20] ^= 0x20; return b }, n - 1, "edited"},
		{"deletion", func(b []byte, offs []int) []byte { return append(b[:offs[77]:offs[77]], b[offs[78]:]...) }, 77, "edited"},
		{"insertion", func(b []byte, offs []int) []byte {
			ins := b[offs[5]:offs[6]]
			return append(append(b[:offs[200]:offs[200]], ins...), b[offs[200]:]...)
		}, 200, "edited"},
		{"swap", func(b []byte, offs []int) []byte {
			a, c := bytes.Clone(b[offs[10]:offs[11]]), bytes.Clone(b[offs[11]:offs[12]])
			out := append(b[:offs[10]:offs[10]], c...)
			out = append(out, a...)
			return append(out, b[offs[12]:]...)
		}, 10, "edited"},
		{"truncation", func(b []byte, offs []int) []byte { return b[:offs[250]] }, 250, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := build(t)
			b, offs := records(t, dir)
			write(dir, tt.mutate(b, offs))
			rep, err := Verify(dir, verifier)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatal("tampering not detected")
			}
			first := rep.Problems[0]
			for _, p := range rep.Problems {
				if p.Index >= 0 && p.Kind != "checkpoint" {
					first = p
					break
				}
			}
			if first.Index != tt.wantIndex || first.Kind != tt.wantKind {
				t.Fatalf("first problem %v, want %s at %d; all: %v", first, tt.wantKind, tt.wantIndex, rep.Problems)
			}
		})
	}
	// A whole rewrite by someone holding the key: consistent with itself,
	// caught only by a checkpoint a witness kept.
	t.Run("rewrite caught by witness", func(t *testing.T) {
		dir, witnessed := build(t)
		os.RemoveAll(dir)
		l, _ := Open(dir, origin)
		for i := range n { // entries differ from the original ones
			if _, err := l.AppendEntries(context.Background(), entry(i+1000)); err != nil {
				t.Fatal(err)
			}
		}
		l.Checkpoint(signer)
		l.Close()
		if rep, _ := Verify(dir, verifier); !rep.OK() {
			t.Fatalf("a consistent rewrite looks inconsistent by itself: %v", rep.Problems)
		}
		rep, err := Verify(dir, verifier, witnessed)
		if err != nil || rep.OK() || rep.Problems[0].Kind != "checkpoint" || rep.Problems[0].Index != n {
			t.Fatalf("the witness's checkpoint did not expose the rewrite: %v %+v", err, rep)
		}
	})
	t.Run("forged checkpoint signature", func(t *testing.T) {
		dir, cp := build(t)
		bad := bytes.Replace(cp, []byte("\n300\n"), []byte("\n299\n"), 1)
		rep, _ := Verify(dir, verifier, bad)
		if rep.OK() {
			t.Fatal("an altered checkpoint was accepted")
		}
	})
}

// What a crash can leave behind is repaired on open, and nothing
// acknowledged is lost; the torn write that is cut off is kept, logged and
// recorded in the log.
func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	fill(t, l, 0, 1000)
	root, _ := l.TreeHash(1000)
	l.Close()
	// A torn record at the end, and hashes cut short.
	torn := []byte{0xc8, 0x01, '{', '"'}
	f, _ := os.OpenFile(filepath.Join(dir, "entries.log"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(torn)
	f.Close()
	hp := filepath.Join(dir, "hashes.bin")
	fi, _ := os.Stat(hp)
	os.Truncate(hp, fi.Size()-700)
	os.Truncate(filepath.Join(dir, "offsets.bin"), 100)

	var logged bytes.Buffer
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	l2, err := OpenWith(dir, origin, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil)), Actor: Actor{SpiffeID: "spiffe://example.org/server"},
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if got, _ := l2.TreeHash(1000); got != root {
		t.Fatal("tree changed across recovery")
	}
	if e, err := l2.Entry(999); err != nil || !strings.Contains(string(e), `"n":"999"`) {
		t.Fatalf("entry 999 after recovery: %s %v", e, err)
	}
	// The cut is an entry of the log, a log line, and a kept copy.
	if l2.Size() != 1001 {
		t.Fatalf("size after recovery %d, want 1000 and the entry recording the cut", l2.Size())
	}
	raw, _ := l2.Entry(1000)
	e, err := ParseEntry(raw)
	if err != nil || e.Action != "audit.recover" || e.Actor.SpiffeID != "spiffe://example.org/server" || !e.Time.Equal(now) ||
		e.Details["offset"] == "" || e.Details["bytes"] != "4" || e.Details["entries"] != "none (never acknowledged)" {
		t.Fatalf("entry 1000: %s %v", raw, err)
	}
	kept, err := os.ReadFile(filepath.Join(dir, e.Details["quarantine"], quarantineTail))
	if err != nil || !bytes.Equal(kept, torn) {
		t.Fatalf("the torn bytes were not kept: %q %v", kept, err)
	}
	if !strings.Contains(logged.String(), "torn write") || !strings.Contains(logged.String(), "offset="+e.Details["offset"]) {
		t.Fatalf("the cut was not logged: %s", logged.String())
	}
	fill(t, l2, 1001, 5)
	signer, verifier := keys(t)
	l2.Checkpoint(signer)
	rep, err := Verify(dir, verifier)
	if err != nil || !rep.OK() || rep.Entries != 1006 || len(rep.Quarantined) != 1 || rep.Quarantined[0].RecordedAs != 1000 {
		t.Fatalf("after recovery: %v %+v", err, rep)
	}
	// Listed, but nothing acknowledged was lost: no warning.
	if !rep.Clean() || !strings.Contains(rep.Quarantined[0].Summary, "4 bytes of a torn write") {
		t.Fatalf("verify of a log that cut a torn write: %+v", rep)
	}
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	l := openLog(t, t.TempDir())
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]bool{}
	for g := range 8 {
		wg.Go(func() {
			for k := range 20 {
				es := make([][]byte, 10)
				for i := range es {
					es[i], _ = entry(g*1000 + k*10 + i).Marshal()
				}
				first, err := l.Append(context.Background(), es...)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for i := range int64(10) {
					if seen[first+i] {
						t.Errorf("index %d handed out twice", first+i)
					}
					seen[first+i] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if l.Size() != 1600 || len(seen) != 1600 {
		t.Fatalf("size %d, %d distinct indices, want 1600", l.Size(), len(seen))
	}
	l.Close()
	if _, err := l.Append(context.Background(), []byte("x")); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

func TestTiles(t *testing.T) {
	for _, tt := range []struct {
		kind string
		n    int64
		w    int
		want string
	}{
		{"0", 0, 256, "tile/0/000"},
		{"0", 1234067, 256, "tile/0/x001/x234/067"},
		{"1", 5, 3, "tile/1/005.p/3"},
		{"entries", 1000, 256, "tile/entries/x001/000"},
	} {
		if got := tilePath(tt.kind, tt.n, tt.w); got != tt.want {
			t.Errorf("tilePath(%s, %d, %d) = %s, want %s", tt.kind, tt.n, tt.w, got, tt.want)
		}
	}
	dir := t.TempDir()
	l := openLog(t, dir)
	signer, _ := keys(t)
	fill(t, l, 0, 300)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(filepath.Join(dir, "tile", "0", "000"))
	if err != nil || len(full) != 256*32 {
		t.Fatalf("full level-0 tile: %d bytes, %v", len(full), err)
	}
	e0, _ := l.Entry(0)
	if h := tlog.RecordHash(e0); !bytes.Equal(full[:32], h[:]) {
		t.Fatal("tile's first hash is not entry 0's leaf hash")
	}
	if p, err := os.ReadFile(filepath.Join(dir, "tile", "0", "001.p", "44")); err != nil || len(p) != 44*32 {
		t.Fatalf("partial tile: %d bytes, %v", len(p), err)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "tile", "entries", "000"))
	if err != nil {
		t.Fatal(err)
	}
	n := int(bundle[0])<<8 | int(bundle[1])
	if !bytes.Equal(bundle[2:2+n], e0) {
		t.Fatal("entry bundle does not start with entry 0")
	}
}

func BenchmarkAppendDurable(b *testing.B) {
	l := openLog(b, b.TempDir())
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i], _ = entry(i).Marshal()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	l := openLog(b, dir)
	const n = 100000
	for i := 0; i < n; i += 1000 {
		fill(b, l, i, 1000)
	}
	signer, verifier := keys(b)
	l.Checkpoint(signer)
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(dir, verifier)
		if err != nil || !rep.OK() {
			b.Fatal(err, rep)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkProveInclusion: build and check an inclusion proof for a random
// entry of a 100,000-entry log (hashes read from disk).
func BenchmarkProveInclusion(b *testing.B) {
	l := openLog(b, b.TempDir())
	const n = 100000
	for i := 0; i < n; i += 1000 {
		fill(b, l, i, 1000)
	}
	root, err := l.TreeHash(n)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		i := mrand.Int64N(n)
		p, err := l.ProveInclusion(i, n)
		if err != nil {
			b.Fatal(err)
		}
		data, _ := l.Entry(i)
		if err := tlog.CheckRecord(p, n, root, i, tlog.RecordHash(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlainFileCeiling writes the same batches of 100 entries to a
// plain file, length-prefixed, one fsync per batch, with no tree: the
// ceiling BenchmarkAppendDurable is compared with.
func BenchmarkPlainFileCeiling(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "plain.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var buf []byte
	for i := range 100 {
		e, _ := entry(i).Marshal()
		buf = binary.AppendUvarint(buf, uint64(len(e)))
		buf = append(buf, e...)
	}
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "entries/s")
}

// TestRecoveryDistrustsUnsyncedHashes: stored hashes past the last
// checkpoint are synced lazily, so after a power loss they may hold
// garbage; Open recomputes them from the entries (which are durable
// before any append is acknowledged) instead of trusting them.
func TestRecoveryDistrustsUnsyncedHashes(t *testing.T) {
	dir := t.TempDir()
	signer, verifier := keys(t)
	l := openLog(t, dir)
	fill(t, l, 0, 500)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 500, 300)
	root, _ := l.TreeHash(800)
	l.Close()
	// Garbage where the hashes of entries 500-799 were written but, in
	// this scenario, never reached the disk.
	hp := filepath.Join(dir, "hashes.bin")
	f, _ := os.OpenFile(hp, os.O_WRONLY, 0)
	start := tlog.StoredHashCount(500) * tlog.HashSize
	fi, _ := f.Stat()
	f.WriteAt(bytes.Repeat([]byte{0xee}, int(fi.Size()-start)), start)
	f.Close()

	l2 := openLog(t, dir)
	if got, _ := l2.TreeHash(800); got != root {
		t.Fatal("the tree after recovery differs: garbage hashes were trusted")
	}
	fill(t, l2, 800, 10)
	if _, err := l2.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir, verifier); err != nil || !rep.OK() || rep.Entries != 810 {
		t.Fatalf("verify after recovery: %v %+v", err, rep)
	}
}

// A running server writes an entry before its leaf: Verify reading the log
// in between must wait for the leaf, not report the entry as inserted
// (a CI run of "rampart audit verify" beside a live server did). An entry
// whose leaf never comes is still extra.
func TestVerifyEntryAppendedDuringThePass(t *testing.T) {
	signer, verifier := keys(t)
	dir := t.TempDir()
	l := openLog(t, dir)
	fill(t, l, 0, 10)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 10, 1)
	l.Close()
	hp := filepath.Join(dir, "hashes.bin")
	full, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	short := full[:tlog.StoredHashCount(10)*tlog.HashSize]

	t.Run("leaf written during the pass", func(t *testing.T) {
		if err := os.WriteFile(hp, short, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(hp, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		done := make(chan *Report)
		go func() {
			rep, err := Verify(dir, verifier)
			if err != nil {
				t.Error(err)
			}
			done <- rep
		}()
		// The writer's leaf lands while Verify waits for it (Verify reads
		// 11 entries in far less than this; had it not finished, nothing
		// would be wrong either).
		time.Sleep(100 * time.Millisecond)
		if _, err := f.Write(full[len(short):]); err != nil {
			t.Fatal(err)
		}
		rep := <-done
		if rep == nil || !rep.OK() || rep.Entries != 11 || rep.Leaves != 11 {
			t.Fatalf("an entry whose leaf came during the pass: %+v", rep)
		}
	})
	t.Run("leaf never written", func(t *testing.T) {
		if err := os.WriteFile(hp, short, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(dir, verifier)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != "extra" || rep.Problems[0].Index != 10 {
			t.Fatalf("an entry without a leaf: %+v", rep.Problems)
		}
	})
	t.Run("wrong leaf written during the pass", func(t *testing.T) {
		if err := os.WriteFile(hp, short, 0o600); err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(full[len(short):])
		bad[0] ^= 1 // the leaf comes first among the new stored hashes
		f, err := os.OpenFile(hp, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Write(bad)
		rep, err := Verify(dir, verifier)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || rep.Problems[0].Kind != "edited" || rep.Problems[0].Index != 10 {
			t.Fatalf("an entry with a wrong leaf: %+v", rep.Problems)
		}
	})
}
