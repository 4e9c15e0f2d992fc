package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpointedLog is a closed log of n entries with a checkpoint after
// each size in cps; it returns the offsets of the records and the
// checkpoints signed.
func checkpointedLog(t *testing.T, dir string, n int, cps ...int) (note.Signer, note.Verifier, []int64, [][]byte) {
	t.Helper()
	signer, verifier := keys(t)
	l, err := Open(dir, origin)
	if err != nil {
		t.Fatal(err)
	}
	var signed [][]byte
	at := 0
	for _, c := range append(cps, n) {
		if c > at {
			fill(t, l, at, c-at)
			at = c
		}
		if c < n || slices.Contains(cps, n) {
			cp, err := l.Checkpoint(signer)
			if err != nil {
				t.Fatal(err)
			}
			signed = append(signed, cp)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ob, _ := os.ReadFile(filepath.Join(dir, "offsets.bin"))
	offs := make([]int64, len(ob)/8)
	for i := range offs {
		offs[i] = int64(binary.BigEndian.Uint64(ob[8*i:]))
	}
	return signer, verifier, offs, signed
}

// logFiles reads the files Open must not change when it refuses.
func logFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, name := range []string{"entries.log", "offsets.bin", "hashes.bin", "checkpoint"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		m[name] = b
	}
	return m
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesDamageToAcknowledgedEntries is the attack of issue 25
// item 9: one damaged record in the middle of entries.log. Open used to
// cut the log there, dropping every intact entry after it although a
// signed checkpoint covered them, say nothing, and let the server sign a
// shorter log. It must refuse, name the file, the offset and the entries
// at stake, and change nothing.
func TestOpenRefusesDamageToAcknowledgedEntries(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cps    []int // checkpoints after these sizes
		damage func(t *testing.T, path string, offs []int64)
		index  int64
		stake  string
	}{
		{"garbage length", []int{300}, func(t *testing.T, p string, offs []int64) { writeAt(t, p, offs[100], []byte{0xff, 0xff, 0xff}) },
			100, "covered by the signed checkpoint of tree size 300"},
		{"zeroed length", []int{300}, func(t *testing.T, p string, offs []int64) { writeAt(t, p, offs[100], []byte{0}) },
			100, "covered by the signed checkpoint of tree size 300"},
		{"plausible wrong length", []int{300}, func(t *testing.T, p string, offs []int64) {
			// Same number of bytes, a shorter length: the records still
			// parse, every later one shifted, and offsets.bin disagrees.
			b, _ := os.ReadFile(p)
			n, k := binary.Uvarint(b[offs[100]:])
			var v [binary.MaxVarintLen64]byte
			if binary.PutUvarint(v[:], n-7) != k {
				t.Fatal("length changed size")
			}
			writeAt(t, p, offs[100], v[:k])
		}, 100, "covered by the signed checkpoint of tree size 300"},
		{"cut at a record boundary", []int{300}, func(t *testing.T, p string, offs []int64) { os.Truncate(p, offs[100]) },
			100, "covered by the signed checkpoint of tree size 300"},
		{"past the checkpoint but acknowledged", []int{200}, func(t *testing.T, p string, offs []int64) { writeAt(t, p, offs[250], []byte{0xff, 0xff, 0xff}) },
			250, "acknowledged (offsets.bin records 300 entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, _, offs, _ := checkpointedLog(t, dir, 300, tt.cps...)
			path := filepath.Join(dir, "entries.log")
			tt.damage(t, path, offs)
			before := logFiles(t, dir)

			l, err := Open(dir, origin)
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a log whose acknowledged entries cannot be read")
			}
			var de *DamageError
			if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) {
				t.Fatalf("Open: %v, want a DamageError", err)
			}
			if de.Index != tt.index || de.Offset != offs[tt.index] || de.End() != 300 || de.Path != path {
				t.Fatalf("DamageError %+v, want entry %d at offset %d", de, tt.index, offs[tt.index])
			}
			for _, want := range []string{path, fmt.Sprintf("offset %d", offs[tt.index]), fmt.Sprintf("entries %d to 299", tt.index), tt.stake, "rampart audit repair"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal does not say %q: %v", want, err)
				}
			}
			for name, b := range logFiles(t, dir) {
				if !bytes.Equal(b, before[name]) {
					t.Errorf("%s changed although Open refused", name)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, quarantineDir)); err == nil {
				t.Error("Open made a quarantine although it refused")
			}
		})
	}
}

// TestRepairQuarantinesTheDamagedTail: after the refusal, Repair moves the
// damaged tail aside and records it; the log opens; verify says what was
// moved, what of it is intact, and that the moved checkpoints (and a
// witness's) are checkpoints of the log as it was.
func TestRepairQuarantinesTheDamagedTail(t *testing.T) {
	dir := t.TempDir()
	signer, verifier, offs, signed := checkpointedLog(t, dir, 300, 150, 300)
	witnessed := signed[1]
	orig, _ := os.ReadFile(filepath.Join(dir, "entries.log"))
	writeAt(t, filepath.Join(dir, "entries.log"), offs[200], []byte{0xff, 0xff, 0xff})
	damaged, _ := os.ReadFile(filepath.Join(dir, "entries.log"))
	if _, err := Open(dir, origin); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open: %v", err)
	}

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	res, err := Repair(dir, signer, Options{Actor: Actor{User: "local:root"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	q := res.Quarantine
	if res.Index != 200 || q.First != 200 || q.Offset != offs[200] || q.Covered != 300 || q.Acked != 300 || q.Leaves != 100 || q.Offsets != 100 ||
		!slices.Equal(q.Checkpoints, []int64{300}) || q.Tiles == 0 || res.Checkpoint == nil {
		t.Fatalf("repair: index %d, quarantine %+v", res.Index, q)
	}
	if !strings.Contains(string(res.Entry), `"action":"audit.repair"`) || !strings.Contains(string(res.Entry), `"entries":"200 to 299"`) {
		t.Fatalf("repair entry %s", res.Entry)
	}
	qdir := filepath.Join(dir, quarantineDir, q.Name)
	if b, _ := os.ReadFile(filepath.Join(qdir, quarantineTail)); !bytes.Equal(b, damaged[offs[200]:]) {
		t.Fatal("the quarantined tail is not the damaged part of entries.log")
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoints", "150")); err != nil {
		t.Fatal("the checkpoint of 150 entries, before the damage, was moved")
	}

	l, err := Open(dir, origin)
	if err != nil {
		t.Fatalf("Open after repair: %v", err)
	}
	if l.Size() != 201 {
		t.Fatalf("size %d after repair, want 200 and the repair entry", l.Size())
	}
	raw, _ := l.Entry(199)
	if !bytes.Equal(raw, orig[offs[199]+2:offs[200]]) {
		t.Fatal("entry 199 changed")
	}
	fill(t, l, 201, 10)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	l.Close()

	rep, err := Verify(dir, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Clean() || rep.Entries != 211 || rep.Covered != 211 || len(rep.Quarantined) != 1 {
		t.Fatalf("verify after repair: %+v", rep)
	}
	qr := rep.Quarantined[0]
	if qr.RecordedAs != 200 || qr.Intact != 99 || qr.DamagedCount != 1 || !slices.Equal(qr.Damaged, []int64{200}) || qr.Checkpoints != 1 {
		t.Fatalf("quarantine report %+v", qr)
	}
	if w := rep.Warnings; len(w) != 1 || !strings.Contains(w[0].Detail, "quarantined: entries 200 to 299") || !strings.Contains(w[0].Detail, "99 intact, 1 damaged: 200") {
		t.Fatalf("warnings %v", w)
	}
	// The witness kept the old tree's checkpoint: not this log's, and
	// verify says whose it is.
	rep, err = Verify(dir, verifier, witnessed)
	if err != nil || !rep.OK() || !strings.Contains(fmt.Sprint(rep.Warnings), "a checkpoint of the log as it was before entries 200 on were moved") {
		t.Fatalf("verify with the witness's old checkpoint: %v %+v", err, rep)
	}
	// A rewritten checkpoint of the same size is not explained away.
	if rep, _ := Verify(dir, verifier, signedAt(t, signer, 300, 0x42)); rep.OK() {
		t.Fatal("a checkpoint of another tree passed as the log before the repair")
	}
	if res, err := Repair(dir, signer, Options{}); err != nil || res != nil {
		t.Fatalf("second repair: %+v %v, want nothing to do", res, err)
	}

	// The quarantine is checked too: altered leaves no longer produce
	// the moved checkpoint, and a quarantine the log does not record is
	// reported.
	lp := filepath.Join(qdir, quarantineLeaves)
	leaves, _ := os.ReadFile(lp)
	leaves[40] ^= 1
	os.WriteFile(lp, leaves, 0o600)
	if rep, _ := Verify(dir, verifier); rep.OK() || !strings.Contains(fmt.Sprint(rep.Problems), "the quarantine was altered") {
		t.Fatalf("altered quarantine: %v", rep.Problems)
	}
	leaves[40] ^= 1
	os.WriteFile(lp, leaves, 0o600)
	if err := os.CopyFS(filepath.Join(dir, quarantineDir, "smuggled"), os.DirFS(qdir)); err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(dir, verifier); rep.OK() || !strings.Contains(fmt.Sprint(rep.Problems), "quarantine/smuggled: not recorded in the log") {
		t.Fatalf("unrecorded quarantine: %v", rep.Problems)
	}
}

// signedAt is a validly signed checkpoint of size n over a made-up root.
func signedAt(t *testing.T, signer note.Signer, n int64, fill byte) []byte {
	t.Helper()
	var h [32]byte
	for i := range h {
		h[i] = fill
	}
	b, err := note.Sign(&note.Note{Text: checkpointText(origin, n, h)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An entry edited in place keeps its framing: the server starts (verify
// and sealing report it), and repair moves it aside from there.
func TestRepairMovesAnEditedEntryAside(t *testing.T) {
	dir := t.TempDir()
	signer, verifier, _, _ := checkpointedLog(t, dir, 300, 300)
	editEntriesLog(t, dir, `"n":"120"`, `"n":"121"`)
	l, err := Open(dir, origin)
	if err != nil {
		t.Fatalf("Open refused an edited (well-framed) entry: %v", err)
	}
	l.Close()
	res, err := Repair(dir, signer, Options{})
	if err != nil || res == nil || res.Index != 120 || !strings.Contains(res.Quarantine.Reason, "no longer hashes") {
		t.Fatalf("repair: %+v %v", res, err)
	}
	rep, err := Verify(dir, verifier)
	if err != nil || !rep.OK() || rep.Quarantined[0].Intact != 179 || !slices.Equal(rep.Quarantined[0].Damaged, []int64{120}) {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// One writer at a time: a repair (or a second server) while the log is
// open would interleave with its appends.
func TestRepairRefusesAnOpenLog(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	fill(t, l, 0, 3)
	signer, _ := keys(t)
	if _, err := Repair(dir, signer, Options{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Repair of an open log: %v, want ErrInUse", err)
	}
	if l2, err := Open(dir, origin); !errors.Is(err, ErrInUse) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	l.Close()
	if res, err := Repair(dir, signer, Options{}); err != nil || res != nil {
		t.Fatalf("Repair of a sound log: %+v %v", res, err)
	}
}

// TestCloseWithCheckpoint is issue 25 item 8 at the log's level: entries
// appended after a checkpoint (the server's seal and archive records) are
// covered by the last checkpoint, which is the last write: nothing can be
// appended after it.
func TestCloseWithCheckpoint(t *testing.T) {
	dir := t.TempDir()
	signer, verifier := keys(t)
	l := openLog(t, dir)
	fill(t, l, 0, 10)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 10, 2)
	cp, err := l.CloseWithCheckpoint(signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCheckpoint(cp, verifier)
	if err != nil || c.Size != 12 || checkpointSize(dir) != 12 {
		t.Fatalf("final checkpoint %+v %v", c, err)
	}
	if _, err := l.Append(context.Background(), []byte("{}")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after the final checkpoint: %v", err)
	}
	if _, err := l.Checkpoint(signer); !errors.Is(err, ErrClosed) {
		t.Fatalf("Checkpoint after close: %v", err)
	}
	if _, err := l.Seal(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Seal after close: %v", err)
	}
	if _, err := l.CloseWithCheckpoint(signer); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	// Nothing new: no second checkpoint of the same tree.
	l2 := openLog(t, dir)
	if cp, err := l2.CloseWithCheckpoint(signer); err != nil || cp != nil {
		t.Fatalf("close with nothing new: %s %v", cp, err)
	}
	rep, err := Verify(dir, verifier)
	if err != nil || !rep.Clean() || rep.Covered != 12 || rep.Uncovered != 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// Entries past the newest checkpoint are reported, not passed silently.
func TestVerifyReportsUncoveredEntries(t *testing.T) {
	dir := t.TempDir()
	_, verifier, _, _ := checkpointedLog(t, dir, 13, 10)
	rep, err := Verify(dir, verifier)
	if err != nil || !rep.OK() || rep.Clean() || rep.Covered != 10 || rep.Uncovered != 3 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if w := rep.Warnings; len(w) != 1 || w[0].Kind != "uncovered" || !strings.Contains(w[0].Detail, "not yet covered: 3 entries past the newest checkpoint (tree size 10)") {
		t.Fatalf("warnings %v", w)
	}
}

// TestVerifyChecksTiles is issue 25 item 11: verify read the entries and
// checkpoints but never the tile/ copies that clients read, so a tile that
// disagrees with the entries went unreported.
func TestVerifyChecksTiles(t *testing.T) {
	build := func(t *testing.T) (string, note.Verifier) {
		dir := t.TempDir()
		_, v, _, _ := checkpointedLog(t, dir, 600, 300, 600)
		return dir, v
	}
	flip := func(rel string, off int) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, filepath.FromSlash(rel))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[off] ^= 0x01
			os.WriteFile(p, b, 0o644)
		}
	}
	t.Run("clean", func(t *testing.T) {
		dir, v := build(t)
		rep, err := Verify(dir, v)
		// Level 0: 000, 001, 002.p/88; level 1: 000.p/1 (of the tree
		// of 300) and 000.p/2; bundles 000, 001, 002.p/88.
		if err != nil || !rep.Clean() || rep.Tiles != 5 || rep.Bundles != 3 {
			t.Fatalf("%v %+v", err, rep)
		}
	})
	for _, tt := range []struct {
		name   string
		mutate func(t *testing.T, dir string)
		path   string
		index  int64
		detail string
	}{
		{"full hash tile", flip("tile/0/001", 32*5+3), "tile/0/001", 261, "its hash 5 is not the one"},
		{"partial hash tile", flip("tile/0/002.p/88", 32*87), "tile/0/002.p/88", 599, "its hash 87"},
		{"level-1 hash tile", flip("tile/1/000.p/2", 32+1), "tile/1/000.p/2", 256, "its hash 1"},
		{"full entry bundle", flip("tile/entries/001", 40), "tile/entries/001", 256, "entry 0 in it is not the log's entry 256"},
		{"partial entry bundle", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "tile", "entries", "002.p", "88")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte(`"n":"530"`), []byte(`"n":"531"`), 1), 0o644)
		}, "tile/entries/002.p/88", 530, "entry 18 in it"},
		{"bundle cut short", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "tile", "entries", "000")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-10], 0o644)
		}, "tile/entries/000", 0, "entry bundle cut inside an entry"},
		{"tile cut short", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, "tile", "0", "000"), 32*255) }, "tile/0/000", 0, "has 8160 bytes, want 8192"},
		{"hash tile deleted", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "tile", "0", "001")) }, "tile/0/001", 256, "is missing"},
		{"partial bundle deleted", func(t *testing.T, dir string) { os.RemoveAll(filepath.Join(dir, "tile", "entries", "002.p")) }, "tile/entries/002.p/88", 512, "is missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, v := build(t)
			tt.mutate(t, dir)
			rep, err := Verify(dir, v)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("the damaged tile was not reported: %+v", rep)
			}
			for _, p := range rep.Problems {
				if p.Kind == "tile" && p.Path == tt.path && p.Index == tt.index && strings.Contains(p.Detail, tt.detail) {
					if len(rep.Problems) != 1 {
						t.Errorf("more than the tile reported: %v", rep.Problems)
					}
					return
				}
			}
			t.Fatalf("want a tile problem at %d in %s (%q); got %v", tt.index, tt.path, tt.detail, rep.Problems)
		})
	}
	t.Run("stray file", func(t *testing.T) {
		dir, v := build(t)
		os.WriteFile(filepath.Join(dir, "tile", "0", "notes.txt"), []byte("x"), 0o644)
		rep, err := Verify(dir, v)
		if err != nil || !rep.OK() || len(rep.Warnings) != 1 || rep.Warnings[0].Path != "tile/0/notes.txt" {
			t.Fatalf("%v %+v", err, rep)
		}
	})
	// An edited entry is the entry's fault: the tiles, which match what
	// was recorded, are not blamed.
	t.Run("edited entry", func(t *testing.T) {
		dir, v := build(t)
		editEntriesLog(t, dir, `"n":"300"`, `"n":"301"`)
		rep, err := Verify(dir, v)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			if p.Kind == "tile" {
				t.Fatalf("a tile was blamed for an edited entry: %v", rep.Problems)
			}
		}
	})
}

func TestParseTilePath(t *testing.T) {
	for _, good := range []string{"tile/0/000", "tile/0/x001/x234/067", "tile/1/005.p/3", "tile/entries/x001/000", "tile/entries/002.p/255", "tile/6/000"} {
		tr, err := parseTilePath(good)
		if err != nil || tr.path() != good {
			t.Errorf("parseTilePath(%q) = %+v, %v", good, tr, err)
		}
	}
	for _, bad := range []string{"tile/0/1", "tile/0/0000", "tile/0/001/002", "tile/0/x000", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/07",
		"tile/7/000", "tile/-1/000", "tile/01/000", "tile/data/000", "tiles/0/000", "tile/0/000.p", "tile/0/x001/x002/x003/x004/x005/x006/x007/000", "tile/0/", "tile/0/00a"} {
		if tr, err := parseTilePath(bad); err == nil {
			t.Errorf("parseTilePath(%q) accepted: %+v", bad, tr)
		}
	}
}

func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/0/x001/x234/067", "tile/1/005.p/3", "tile/entries/x001/000.p/17", "tile/6/x999/999", "tile/0/000.p/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tr, err := parseTilePath(p)
		if err != nil {
			return
		}
		if tr.path() != p {
			t.Fatalf("%q parsed as %+v, which is %q", p, tr, tr.path())
		}
		if tr.first() < 0 || tr.end() <= tr.first() || tr.w < 1 || tr.w > 256 {
			t.Fatalf("%q: impossible range %d to %d", p, tr.first(), tr.end())
		}
	})
}

// FuzzRecordFraming feeds arbitrary bytes to the two readers of
// entries.log framing that face a damaged file: the recovery scan and the
// reader of a quarantined tail. Neither may panic; the scan must pass
// whole, back-to-back records and stop inside the file.
func FuzzRecordFraming(f *testing.F) {
	e, _ := entry(1).Marshal()
	rec := binary.AppendUvarint(nil, uint64(len(e)))
	rec = append(rec, e...)
	f.Add(append(bytes.Clone(rec), rec...), int64(0), int64(len(rec)))
	f.Add([]byte{0xff, 0xff, 0xff, '{'}, int64(0), int64(-1))
	f.Add([]byte{0x80, 0x00, 'x'}, int64(1), int64(3))
	f.Add(append([]byte{0x81, 0x00}, e[:1]...), int64(0), int64(3))
	f.Fuzz(func(t *testing.T, data []byte, at, next int64) {
		end := int64(0)
		sc, err := scanRecords(bytes.NewReader(data), 0, int64(len(data)), 0, nil, func(i, off int64, e []byte) (string, error) {
			if off != end || len(e) == 0 || len(e) > MaxEntrySize {
				t.Fatalf("record %d at %d (%d bytes), want it at %d", i, off, len(e), end)
			}
			end = off + int64(uvarintLen(uint64(len(e)))) + int64(len(e))
			return "", nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if sc.end != end || sc.end > int64(len(data)) || (sc.end < int64(len(data))) != (sc.damage != "") {
			t.Fatalf("scan stopped at %d (%q) after records ending at %d, file of %d", sc.end, sc.damage, end, len(data))
		}
		var leaf [32]byte
		quarantinedEntry(data, at, next, nil)
		quarantinedEntry(data, at, next, (*tlog.Hash)(&leaf))
	})
}

// Red team finding 5: a log rolled back to an earlier checkpoint, with
// tile/entries/000.p/40 still holding the entries cut, verified OK, the
// tiles merely counted as "tiles_beyond: 2". Tiles past the end of the
// log are evidence of a rollback or a torn write: a warning naming them
// and the entries they hold, and a failure under --strict.
func TestVerifyWarnsOfTilesPastTheEnd(t *testing.T) {
	dir := t.TempDir()
	signer, v, _, _ := checkpointedLog(t, dir, 38, 38)
	saved := logFiles(t, dir) // entries.log, offsets.bin, hashes.bin, checkpoint
	l, err := Open(dir, origin)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 38, 2)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, p := range []string{"tile/0/000.p/40", "tile/entries/000.p/40"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("the test needs %s: %v", p, err)
		}
	}
	// Roll back: the files as they were at 38 entries, the newer
	// checkpoint gone; the tiles of 40 left behind.
	for name, b := range saved {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "checkpoints", "40"))
	rep, err := Verify(dir, v)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("problems %v: a rollback to a signed checkpoint is consistent; the tiles are the evidence", rep.Problems)
	}
	if rep.Clean() || rep.TilesPastEnd != 2 || rep.TilesBeyond != 0 {
		t.Fatalf("tiles past the end: %d (beyond %d), warnings %v: want 2 warnings, so --strict fails", rep.TilesPastEnd, rep.TilesBeyond, rep.Warnings)
	}
	want := map[string]string{
		"tile/0/000.p/40":       "level-0 hash tile 0 (width 40, entries 0 to 39) reaches past the end of the log (38 entries): it was written for entries 38 to 39",
		"tile/entries/000.p/40": "it holds 38: authz.decision success by spiffe://example.org/orders at 2026-01-01T00:00:00.000000038Z; 39: ",
	}
	for _, w := range rep.Warnings {
		if d, ok := want[w.Path]; ok && w.Kind == "tile" && strings.Contains(w.Detail, d) {
			delete(want, w.Path)
		}
	}
	if len(want) > 0 {
		t.Fatalf("warnings %v lack %v", rep.Warnings, want)
	}
}
