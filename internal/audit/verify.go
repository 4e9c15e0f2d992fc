package audit

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Problem is one inconsistency Verify found.
type Problem struct {
	Index  int64  // the entry index, or the checkpoint's tree size
	Kind   string // "edited", "missing", "extra", "checkpoint", "unreadable"
	Detail string
}

func (p Problem) String() string { return fmt.Sprintf("%s at %d: %s", p.Kind, p.Index, p.Detail) }

// Report is the result of Verify.
type Report struct {
	Entries     int64 // entries read (sealed segments and entries.log)
	Leaves      int64 // leaves recorded in hashes.bin
	Checkpoints int   // checkpoints checked
	// Archive is set for a directory fetched from an archive (segments,
	// no stored hashes); Beyond counts its checkpoints of trees larger
	// than the segments hold (entries not sealed yet when it was copied),
	// which cannot be checked.
	Archive  bool
	Beyond   int
	Problems []Problem
}

// OK reports whether nothing was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxReported bounds how many per-entry problems are listed; a deletion
// near the start shifts every later entry.
const maxReported = 100

// Verify re-derives the Merkle tree from the entries in dir and checks it
// against the stored leaf hashes and against every checkpoint: those
// published in dir and any given by the caller (a witness's copies, which an
// administrator rewriting the whole log could not alter). An edited entry is
// reported at its index; a deletion, insertion or reordering at the first
// index it shifts or swaps; a checkpoint that the entries no longer produce
// at its tree size.
func Verify(dir string, verifier note.Verifier, witnessed ...[]byte) (*Report, error) {
	rep := &Report{}
	// Leaf hashes are read in one sequential pass: leaf i's stored index
	// grows with i, so the reader only ever skips forward (one read per
	// megabyte, not one per entry). A directory without hashes.bin (an
	// archive copied back from object storage) is checked against its
	// checkpoints alone.
	hasLeaves := true
	var hr *bufio.Reader
	hf, err := os.Open(filepath.Join(dir, "hashes.bin"))
	switch {
	case err == nil:
		defer hf.Close()
		hr = bufio.NewReaderSize(hf, 1<<20)
		fi, _ := hf.Stat()
		for tlog.StoredHashCount(rep.Leaves+1)*tlog.HashSize <= fi.Size() {
			rep.Leaves++
		}
	case errors.Is(err, os.ErrNotExist):
		hasLeaves = false
		// Only a directory with no entries.log either is an archive;
		// a log directory whose hashes.bin is gone is damaged.
		if _, err := os.Stat(filepath.Join(dir, "entries.log")); err == nil {
			rep.Problems = append(rep.Problems, Problem{Index: 0, Kind: "missing", Detail: "hashes.bin is gone: entries cannot be compared with the leaves recorded when they were appended"})
		} else {
			rep.Archive = true
		}
	default:
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	var hpos int64 // stored-hash index the reader is at
	stored := func(i int64) (tlog.Hash, bool) {
		var h tlog.Hash
		idx := tlog.StoredHashIndex(0, i)
		if _, err := hr.Discard(int((idx - hpos) * tlog.HashSize)); err != nil {
			return h, false
		}
		_, err := io.ReadFull(hr, h[:])
		hpos = idx + 1
		return h, err == nil
	}

	// Re-derive every stored hash from the entries alone (room for them
	// all up front: growing 64 bytes an entry by doubling was a fifth of
	// the time).
	var tree memHashes
	if n, err := Count(dir); err == nil && n > 0 {
		tree = make(memHashes, 0, tlog.StoredHashCount(n)+64)
	}
	reported := 0
	add := func(p Problem) {
		if reported < maxReported {
			rep.Problems = append(rep.Problems, p)
		}
		reported++
	}
	check := func(i int64, e []byte) error {
		leaf := tlog.RecordHash(e)
		switch {
		case !hasLeaves:
		case i < rep.Leaves:
			if h, ok := stored(i); ok && h != leaf {
				add(Problem{Index: i, Kind: "edited", Detail: "the entry no longer hashes to the leaf recorded when it was appended (edited, or another entry deleted, inserted or moved here)"})
			}
		default:
			add(Problem{Index: i, Kind: "extra", Detail: "entry not recorded in the tree (inserted after the fact?)"})
		}
		hs, err := tlog.StoredHashesForRecordHash(i, leaf, &tree)
		if err != nil {
			return err
		}
		tree = append(tree, hs...)
		rep.Entries++
		return nil
	}
	if err := verifyEntries(dir, rep, add, check); err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	if hasLeaves && rep.Entries < rep.Leaves {
		add(Problem{Index: rep.Entries, Kind: "missing", Detail: fmt.Sprintf("the tree recorded %d entries; only %d remain (deleted or truncated)", rep.Leaves, rep.Entries)})
	}

	// Checkpoints: published ones and witnessed ones.
	var raws [][]byte
	ents, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "checkpoints", e.Name()))
		if err == nil {
			raws = append(raws, b)
		}
	}
	raws = append(raws, witnessed...)
	for _, raw := range raws {
		c, err := ParseCheckpoint(raw, verifier)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Index: -1, Kind: "checkpoint", Detail: err.Error()})
			continue
		}
		if c.Size > rep.Entries && rep.Archive {
			rep.Beyond++
			continue
		}
		rep.Checkpoints++
		if c.Size > rep.Entries {
			rep.Problems = append(rep.Problems, Problem{Index: c.Size, Kind: "checkpoint", Detail: fmt.Sprintf("signed for %d entries; the log has %d", c.Size, rep.Entries)})
			continue
		}
		h, err := tlog.TreeHash(c.Size, &tree)
		if err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
		if h != c.Hash {
			rep.Problems = append(rep.Problems, Problem{Index: c.Size, Kind: "checkpoint", Detail: "the entries no longer produce the root this checkpoint signed"})
		}
	}
	slices.SortFunc(rep.Problems, func(a, b Problem) int { return cmp.Compare(a.Index, b.Index) })
	return rep, nil
}

// memHashes is an in-memory stored-hash array.
type memHashes []tlog.Hash

func (m *memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx < 0 || idx >= int64(len(*m)) {
			return nil, fmt.Errorf("audit: hash %d not computed", idx)
		}
		out[i] = (*m)[idx]
	}
	return out, nil
}

// verifyEntries passes every entry of dir to check in order: the sealed
// segments', then entries.log's from where the segments end. What cannot be
// read is reported once, and ends the pass. A segment sealed while the pass
// reads entries.log (the server runs on) is read from the segment.
func verifyEntries(dir string, rep *Report, add func(Problem), check func(int64, []byte) error) error {
	segs, err := listSegments(dir)
	if err != nil {
		add(Problem{Index: 0, Kind: "missing", Detail: err.Error()})
		return nil
	}
	for {
		var checkErr error
		next, err := eachSealed(segs, rep.Entries, sealedCount(segs), func(i int64, e []byte) error {
			checkErr = check(i, e)
			return checkErr
		})
		if checkErr != nil {
			return checkErr
		}
		if err != nil {
			add(Problem{Index: next, Kind: "unreadable", Detail: err.Error()})
			return nil
		}
		resealed, err := verifyLog(dir, segs, rep, add, check)
		if err != nil || !resealed {
			return err
		}
		if segs, err = listSegments(dir); err != nil {
			add(Problem{Index: rep.Entries, Kind: "missing", Detail: err.Error()})
			return nil
		}
	}
}

// verifyLog passes the entries of entries.log after the segments segs to
// check; resealed says it stopped because the next entry was sealed
// meanwhile.
func verifyLog(dir string, segs []*segment, rep *Report, add func(Problem), check func(int64, []byte) error) (resealed bool, err error) {
	var pos int64
	if len(segs) > 0 {
		pos = segs[len(segs)-1].end
	}
	f, err := os.Open(filepath.Join(dir, "entries.log"))
	if errors.Is(err, os.ErrNotExist) && len(segs) > 0 {
		return false, nil // an archive: segments only
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	w := &sealWatch{r: io.NewSectionReader(f, pos, 1<<62), dir: dir, sealed: sealedCount(segs)}
	r := bufio.NewReaderSize(w, 1<<20)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(r)
		if err == io.EOF {
			return false, nil
		}
		if rep.Entries < w.sealed {
			return true, nil
		}
		if err != nil || n == 0 || n > MaxEntrySize {
			add(Problem{Index: rep.Entries, Kind: "unreadable", Detail: "entries.log is damaged here; nothing after it can be read"})
			return false, nil
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		_, err = io.ReadFull(r, buf)
		if rep.Entries < w.sealed {
			return true, nil
		}
		if err != nil {
			add(Problem{Index: rep.Entries, Kind: "unreadable", Detail: "entries.log ends inside this entry"})
			return false, nil
		}
		if err := check(rep.Entries, buf); err != nil {
			return false, err
		}
	}
}
