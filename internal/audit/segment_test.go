package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// sealedLog is a log of n entries with 512-entry segments, checkpointed
// and sealed; it returns the entries as they were appended.
func sealedLog(t *testing.T, dir string, n int) (*Log, [][]byte, note.Verifier) {
	l, want, _, v := sealedLogKeys(t, dir, n)
	return l, want, v
}

func sealedLogKeys(t *testing.T, dir string, n int) (*Log, [][]byte, note.Signer, note.Verifier) {
	t.Helper()
	l, err := OpenWith(dir, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	fill(t, l, 0, n)
	want := make([][]byte, n)
	for i := range want {
		want[i], _ = l.Entry(int64(i))
	}
	if k, err := l.Seal(); err != nil || k != 0 {
		t.Fatalf("Seal before any checkpoint sealed %d (%v), want 0: only checkpointed entries may be sealed", k, err)
	}
	signer, verifier := keys(t)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	if k, err := l.Seal(); err != nil || k != n/512 {
		t.Fatalf("Seal sealed %d (%v), want %d", k, err, n/512)
	}
	return l, want, signer, verifier
}

func TestSealKeepsEveryEntryReadable(t *testing.T) {
	dir := t.TempDir()
	l, want, signer, verifier := sealedLogKeys(t, dir, 1300)
	for _, name := range []string{segmentName(0), segmentName(512)} {
		if _, err := os.Stat(filepath.Join(dir, "segments", name)); err != nil {
			t.Fatalf("segment %s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "segments", segmentName(1024))); err == nil {
		t.Fatal("an incomplete segment was sealed")
	}
	// Entry, Scan and Verify read sealed entries from the segments.
	for _, i := range []int64{0, 1, 255, 256, 511, 512, 1023, 1024, 1299} {
		if got, err := l.Entry(i); err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("Entry(%d) after sealing: %q %v", i, got, err)
		}
	}
	for _, from := range []int64{0, 300, 1024} {
		var got int64
		err := Scan(dir, from, func(i int64, e []byte) error {
			if !bytes.Equal(e, want[i]) {
				t.Fatalf("Scan from %d: entry %d differs", from, i)
			}
			got++
			return nil
		})
		if err != nil || got != 1300-from {
			t.Fatalf("Scan from %d: %d entries, %v", from, got, err)
		}
	}
	// Entry bundles of sealed ranges are in the segments, not in tile/.
	if _, err := os.Stat(filepath.Join(dir, "tile", "entries", "000")); err == nil {
		t.Fatal("sealed entry bundle 000 still in tile/entries")
	}
	if _, err := os.Stat(filepath.Join(dir, "tile", "entries", "004")); err != nil {
		t.Fatalf("unsealed entry bundle 004: %v", err)
	}
	// The sealed range no longer takes space in entries.log.
	if runtimeCanPunch && allocated(t, filepath.Join(dir, "entries.log")) >= fileSize(t, filepath.Join(dir, "entries.log")) {
		t.Fatal("entries.log still allocates the sealed range")
	}

	// Reopened, the log is the same tree and goes on.
	root, _ := l.TreeHash(1300)
	l.Close()
	l2, err := OpenWith(dir, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Size() != 1300 {
		t.Fatalf("size after reopen %d", l2.Size())
	}
	if got, _ := l2.TreeHash(1300); got != root {
		t.Fatal("tree changed across reopen")
	}
	fill(t, l2, 1300, 300)
	l2.Checkpoint(signer)
	if k, err := l2.Seal(); err != nil || k != 1 {
		t.Fatalf("second Seal: %d %v", k, err)
	}
	rep, err := Verify(dir, verifier)
	if err != nil || !rep.OK() || rep.Entries != 1600 || rep.Leaves != 1600 {
		t.Fatalf("Verify after sealing: %v %+v", err, rep)
	}
}

// A segment is one zstd stream (the index is a skippable frame) whose
// content is the C2SP entry bundles of its entries.
func TestSegmentIsZstdOfEntryBundles(t *testing.T) {
	dir := t.TempDir()
	_, want, _ := sealedLog(t, dir, 600)
	f, err := os.Open(filepath.Join(dir, "segments", segmentName(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plain, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	var exp []byte
	for _, e := range want[:512] {
		exp = binary.BigEndian.AppendUint16(exp, uint16(len(e)))
		exp = append(exp, e...)
	}
	if !bytes.Equal(plain, exp) {
		t.Fatalf("zstd -d of the segment is %d bytes, not the 512 entries' bundles (%d bytes)", len(plain), len(exp))
	}
	fi, _ := f.Stat()
	if fi.Size()*3 > int64(len(exp)) {
		t.Fatalf("segment %d bytes for %d bytes of entries: not compressed", fi.Size(), len(exp))
	}
}

// Sealing checks every entry against its leaf hash first: an entries.log
// edited on disk is refused, and nothing is removed.
func TestSealRefusesAnEditedLog(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenWith(dir, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fill(t, l, 0, 600)
	signer, _ := keys(t)
	l.Checkpoint(signer)
	editEntriesLog(t, dir, `"n":"100"`, `"n":"101"`)
	_, err = l.Seal()
	if err == nil || !strings.Contains(err.Error(), "entry 100 no longer matches") {
		t.Fatalf("Seal of an edited log: %v, want a refusal naming entry 100", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "segments")); len(ents) != 0 {
		t.Fatalf("segments written for an edited log: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dir, "tile", "entries", "000")); err != nil {
		t.Fatal("entry bundle removed although sealing was refused")
	}
}

// Edits to sealed segments are found by verify, at the index they hit.
func TestVerifyFindsTamperedSegments(t *testing.T) {
	seg := func(dir string) string { return filepath.Join(dir, "segments", segmentName(512)) }
	for _, tt := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		kind   string
		index  int64
	}{
		{"bit flip in a frame", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(seg(dir))
			b[100] ^= 0x40
			os.WriteFile(seg(dir), b, 0o600)
		}, "unreadable", 512},
		{"entry rewritten and recompressed", func(t *testing.T, dir string) {
			rewriteSegmentEntry(t, seg(dir), 700, `"n":"700"`, `"n":"701"`)
		}, "edited", 700},
		{"last segment deleted", func(t *testing.T, dir string) {
			os.Remove(seg(dir))
		}, "unreadable", 512},
		{"segment renamed over a gap", func(t *testing.T, dir string) {
			os.Rename(seg(dir), filepath.Join(dir, "segments", segmentName(1024)))
		}, "missing", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, verifier := sealedLog(t, dir, 1100)
			l.Close()
			tt.tamper(t, dir)
			rep, err := Verify(dir, verifier)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range rep.Problems {
				if p.Kind == tt.kind && p.Index == tt.index {
					found = true
				}
			}
			if rep.OK() || !found {
				t.Fatalf("want %s at %d, got %d problems, first %+v", tt.kind, tt.index, len(rep.Problems), rep.Problems[:min(3, len(rep.Problems))])
			}
		})
	}
}

// Recovery that must recompute hashes reaches into sealed segments for the
// entries it needs.
func TestRecoveryRecomputesFromSegments(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := sealedLog(t, dir, 1100)
	root, _ := l.TreeHash(1100)
	l.Close()
	hp := filepath.Join(dir, "hashes.bin")
	fi, _ := os.Stat(hp)
	if err := os.Truncate(hp, fi.Size()/3); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "checkpoint")) // distrust every stored hash
	l2, err := OpenWith(dir, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if got, _ := l2.TreeHash(1100); got != root {
		t.Fatal("tree changed after recomputing hashes from segments")
	}
}

// editEntriesLog replaces the first occurrence of old in entries.log.
func editEntriesLog(t *testing.T, dir, old, new string) {
	t.Helper()
	p := filepath.Join(dir, "entries.log")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(old))
	if i < 0 || len(old) != len(new) {
		t.Fatalf("%q not in entries.log", old)
	}
	copy(b[i:], new)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewriteSegmentEntry rewrites the segment with entry i edited, as an
// attacker with the file and the format would.
func rewriteSegmentEntry(t *testing.T, path string, i int64, old, new string) {
	t.Helper()
	sg, err := readSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newSegmentReader()
	defer r.Close()
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	var out []byte
	frames := []int64{}
	for k := sg.first / bundleEntries; k < sg.last()/bundleEntries; k++ {
		es, err := r.bundle(sg, k)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		for j, e := range es {
			e = bytes.Clone(e)
			if k*bundleEntries+int64(j) == i {
				e = bytes.Replace(e, []byte(old), []byte(new), 1)
			}
			b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
			b = append(b, e...)
		}
		frames = append(frames, int64(len(out)))
		out = enc.EncodeAll(b, out)
	}
	frames = append(frames, int64(len(out)))
	sg.frames = frames
	out = append(out, encodeSegmentIndex(sg)...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t testing.TB, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func FuzzReadSegment(f *testing.F) {
	sg := &segment{first: 512, count: 256, start: 10, end: 99, frames: []int64{0, 40}}
	idx := encodeSegmentIndex(sg)
	f.Add(append(make([]byte, 40), idx...))
	f.Add(idx)
	f.Add([]byte("RSG1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), segmentName(0))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		sg, err := readSegment(p)
		if err != nil {
			return
		}
		if sg.count <= 0 || sg.count%bundleEntries != 0 || int64(len(sg.frames)) != sg.count/bundleEntries+1 {
			t.Fatalf("accepted an impossible index: %+v", sg)
		}
		r, _ := newSegmentReader()
		defer r.Close()
		r.bundle(sg, sg.first/bundleEntries) // must not panic
	})
}

// Partial tiles are deleted once the full tile exists.
func TestFullTilesReplacePartials(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	signer, _ := keys(t)
	for _, n := range []int{100, 100, 100} {
		fill(t, l, int(l.Size()), n)
		if _, err := l.Checkpoint(signer); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"tile/0/000.p", "tile/entries/000.p"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s kept after the full tile was written", p)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "tile", "0", "001.p")); err != nil || len(ents) != 1 || ents[0].Name() != "44" {
		t.Errorf("partial tile 001: %v %v, want just width 44", ents, err)
	}
}

// realisticEntry is a decision entry with what real ones vary in: caller,
// target, path, request id (random), remote port, latency.
func realisticEntry(i int, rng *mrand.Rand) *Entry {
	svc := []string{"orders", "payments", "customers", "gateway", "inventory", "shipping", "search", "auth"}
	acts := []string{"authz.decision", "authz.decision", "authz.decision", "svid.issue", "oauth.token_issue", "kms.encrypt"}
	rid := make([]byte, 16)
	for j := range rid {
		rid[j] = byte(rng.IntN(256))
	}
	outcome := OutcomeSuccess
	if rng.IntN(20) == 0 {
		outcome = OutcomeDenied
	}
	return &Entry{V: 1, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 7 * time.Millisecond),
		Actor:  Actor{SpiffeID: "spiffe://example.org/" + svc[rng.IntN(len(svc))]},
		Action: acts[rng.IntN(len(acts))], Target: "spiffe://example.org/" + svc[rng.IntN(len(svc))], Outcome: outcome,
		RequestID: fmt.Sprintf("%x", rid), Source: "proxy",
		Details: map[string]string{"method": "POST", "path": fmt.Sprintf("/v1/orders/%d/items", rng.IntN(100000)),
			"rule": fmt.Sprintf("rule-%d", rng.IntN(40)), "remote": fmt.Sprintf("127.0.0.1:%d", 30000+rng.IntN(30000)),
			"latency_us": fmt.Sprint(rng.IntN(900))}}
}

func realisticLog(b *testing.B, n int) (string, *Log, note.Signer, note.Verifier) {
	dir := b.TempDir()
	l, err := OpenWith(dir, origin, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < n; i += 1024 {
		es := make([]*Entry, 1024)
		for j := range es {
			es[j] = realisticEntry(i+j, rng)
		}
		if _, err := l.AppendEntries(context.Background(), es...); err != nil {
			b.Fatal(err)
		}
	}
	signer, verifier := keys(b)
	if _, err := l.Checkpoint(signer); err != nil {
		b.Fatal(err)
	}
	return dir, l, signer, verifier
}

// BenchmarkSeal seals one 65,536-entry segment of realistic entries and
// reports the compression ratio (entry bytes / segment bytes).
func BenchmarkSeal(b *testing.B) {
	var ratio float64
	for b.Loop() {
		b.StopTimer()
		dir, l, _, _ := realisticLog(b, DefaultSegmentEntries)
		raw := fileSize(b, filepath.Join(dir, "entries.log"))
		b.StartTimer()
		if n, err := l.Seal(); err != nil || n != 1 {
			b.Fatal(n, err)
		}
		ratio = float64(raw) / float64(fileSize(b, filepath.Join(dir, "segments", segmentName(0))))
	}
	b.ReportMetric(float64(DefaultSegmentEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(ratio, "ratio")
}

// BenchmarkVerifySealed verifies a log of two sealed segments.
func BenchmarkVerifySealed(b *testing.B) {
	const n = 2 * DefaultSegmentEntries
	dir, l, _, verifier := realisticLog(b, n)
	if k, err := l.Seal(); err != nil || k != 2 {
		b.Fatal(k, err)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(dir, verifier)
		if err != nil || !rep.OK() || rep.Entries != n {
			b.Fatal(err, rep)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// A scan that is reading entries.log when a segment is sealed (and its
// range punched out) goes on from the segment: no entry is lost or
// reported unreadable.
func TestScanSurvivesConcurrentSealing(t *testing.T) {
	if !runtimeCanPunch {
		t.Skip("this platform keeps sealed bytes in entries.log; nothing to race")
	}
	dir := t.TempDir()
	l, want, _ := paddedLog(t, dir)
	var seen int64
	err := Scan(dir, 0, func(i int64, e []byte) error {
		if i == 0 {
			if n, err := l.Seal(); err != nil || n != 1 {
				t.Fatalf("Seal during the scan: %d %v", n, err)
			}
		}
		if !bytes.Equal(e, want[i]) {
			t.Fatalf("entry %d differs", i)
		}
		seen++
		return nil
	})
	if err != nil || seen != 1100 {
		t.Fatalf("scan across a sealing: %d entries, %v", seen, err)
	}
}

// Verify while the server seals a segment under it reports nothing.
func TestVerifySurvivesConcurrentSealing(t *testing.T) {
	if !runtimeCanPunch {
		t.Skip("this platform keeps sealed bytes in entries.log; nothing to race")
	}
	dir := t.TempDir()
	l, want, verifier := paddedLog(t, dir)
	// The first entry check seals the segment the pass is reading.
	rep := &Report{}
	var sealed bool
	var tree memHashes
	err := verifyEntries(dir, rep, func(p Problem) { t.Errorf("problem during sealing: %v", p) }, func(i int64, e []byte) error {
		if !sealed {
			sealed = true
			if n, err := l.Seal(); err != nil || n != 1 {
				t.Fatalf("Seal during verify: %d %v", n, err)
			}
		}
		if !bytes.Equal(e, want[i]) {
			t.Fatalf("entry %d differs", i)
		}
		hs, err := tlog.StoredHashesForRecordHash(i, tlog.RecordHash(e), &tree)
		tree = append(tree, hs...)
		rep.Entries++
		return err
	})
	if err != nil || rep.Entries != 1100 {
		t.Fatalf("verify pass across a sealing: %d entries, %v", rep.Entries, err)
	}
	if full, err := Verify(dir, verifier); err != nil || !full.OK() {
		t.Fatalf("%v %+v", err, full)
	}
}

// paddedLog is a checkpointed, unsealed log of 1,100 entries of ~1.3 KB
// with 1,024-entry segments: entries.log outgrows a scan's 1 MiB read
// buffer before entry 1,024, so sealing while a scan runs punches bytes
// it has yet to read.
func paddedLog(t *testing.T, dir string) (*Log, [][]byte, note.Verifier) {
	t.Helper()
	l, err := OpenWith(dir, origin, Options{SegmentEntries: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	pad := strings.Repeat("x", 1200)
	var want [][]byte
	for i := range 1100 {
		e := entry(i)
		e.Details["pad"] = pad
		if _, err := l.AppendEntries(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		b, _ := l.Entry(int64(i))
		want = append(want, b)
	}
	signer, verifier := keys(t)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	return l, want, verifier
}

// Reading the newest entries (the detection tailer's poll) does not read
// every old segment: a damaged old segment stops scans that reach it,
// and verify reports it, but not a scan of what came after.
func TestScanPastSegmentsReadsOnlyTheLast(t *testing.T) {
	dir := t.TempDir()
	l, want, verifier := sealedLog(t, dir, 1100)
	l.Close()
	p := filepath.Join(dir, "segments", segmentName(0))
	b, _ := os.ReadFile(p)
	copy(b[len(b)-20:], "garbage!") // inside segment 0's index
	os.WriteFile(p, b, 0o600)
	var seen int64
	if err := Scan(dir, 1024, func(i int64, e []byte) error {
		if !bytes.Equal(e, want[i]) {
			t.Fatalf("entry %d differs", i)
		}
		seen++
		return nil
	}); err != nil || seen != 76 {
		t.Fatalf("scan of the unsealed tail: %d entries, %v", seen, err)
	}
	if err := Scan(dir, 0, func(int64, []byte) error { return nil }); err == nil {
		t.Fatal("a scan through the damaged segment succeeded")
	}
	if rep, err := Verify(dir, verifier); err != nil || rep.OK() {
		t.Fatalf("verify of a damaged segment: %v %+v", err, rep)
	}
}
