package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Problem is one inconsistency Verify found, or one thing it warns about.
type Problem struct {
	Index int64 `json:"index"` // the entry index, or the checkpoint's tree size (-1: none)
	// Kind: "edited", "missing", "extra", "unreadable", "checkpoint",
	// "tile"; for warnings also "uncovered", "quarantined" and "tile" (a
	// stray file under tile/, or a tile past the end of the log).
	Kind   string `json:"kind"`
	Path   string `json:"path,omitempty"` // the file at fault, relative to the log's directory
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	if p.Path != "" {
		return fmt.Sprintf("%s at %d: %s: %s", p.Kind, p.Index, p.Path, p.Detail)
	}
	return fmt.Sprintf("%s at %d: %s", p.Kind, p.Index, p.Detail)
}

// Report is the result of Verify.
type Report struct {
	Entries int64 `json:"entries"` // entries read (sealed segments and entries.log)
	Sealed  int64 `json:"sealed"`  // of which in sealed segments
	// Segments is how many sealed segments were read.
	Segments    int   `json:"segments"`
	Leaves      int64 `json:"leaves"`      // leaves recorded in hashes.bin
	Checkpoints int   `json:"checkpoints"` // checkpoints checked
	// Covered is the tree size of the newest checkpoint the entries
	// produce; Uncovered counts the entries past it, which no signature
	// vouches for yet (appended since, or cut off the end unnoticed).
	Covered   int64 `json:"covered"`
	Uncovered int64 `json:"uncovered"`
	// Tiles and Bundles count the hash tiles and entry bundles under
	// tile/ checked against the entries; TilesBeyond those written for
	// entries appended after the pass began (the log holds them by the
	// end of the pass), not checked; TilesPastEnd those written for
	// entries the log does not hold (rolled back, or cut after a torn
	// write), each a warning naming the tile and the entries it holds.
	Tiles        int `json:"tiles"`
	Bundles      int `json:"bundles"`
	TilesBeyond  int `json:"tiles_beyond"`
	TilesPastEnd int `json:"tiles_past_end"`
	// Archive is set for a directory fetched from an archive (segments,
	// no stored hashes); Beyond counts its checkpoints of trees larger
	// than the segments hold (entries not sealed yet when it was copied),
	// which cannot be checked.
	Archive     bool               `json:"archive"`
	Beyond      int                `json:"beyond"`
	Quarantined []QuarantineReport `json:"quarantined,omitempty"`
	Problems    []Problem          `json:"problems"`
	// Warnings are what no problem shows but no signature vouches for:
	// entries past the newest checkpoint, parts of the log moved aside.
	Warnings []Problem `json:"warnings"`
}

// QuarantineReport is what Verify found in one quarantine directory.
type QuarantineReport struct {
	Name   string `json:"name"` // quarantine/NAME
	Kind   string `json:"kind"`
	First  int64  `json:"first"`
	End    int64  `json:"end"` // entries First to End-1 had been acknowledged
	Offset int64  `json:"offset"`
	Bytes  int64  `json:"bytes"`
	// RecordedAs is the index of the entry that records the move (-1:
	// none does, which is a problem).
	RecordedAs int64 `json:"recorded_as"`
	// Intact entries read back and hash to the leaf recorded for them;
	// Damaged ones do not (the first 100 listed, DamagedCount all);
	// Unchecked ones read back but have no recorded leaf.
	Intact       int64   `json:"intact"`
	Damaged      []int64 `json:"damaged,omitempty"`
	DamagedCount int64   `json:"damaged_count"`
	Unchecked    int64   `json:"unchecked"`
	// Checkpoints moved with the entries that the log before the move
	// (the entries before First, then the quarantined leaves) produces.
	Checkpoints int `json:"checkpoints"`
	// Summary says the above in a sentence.
	Summary string `json:"summary"`
}

// OK reports whether nothing was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Clean reports whether nothing was found and there is nothing to warn
// about (what "rampart audit verify --strict" requires).
func (r *Report) Clean() bool { return r.OK() && len(r.Warnings) == 0 }

// maxReported bounds how many per-entry problems are listed; a deletion
// near the start shifts every later entry.
const maxReported = 100

// Verify re-derives the Merkle tree from the entries in dir and checks it
// against the stored leaf hashes and against every checkpoint: those
// published in dir and any given by the caller (a witness's copies, which an
// administrator rewriting the whole log could not alter). An edited entry is
// reported at its index; a deletion, insertion or reordering at the first
// index it shifts or swaps; a checkpoint that the entries no longer produce
// at its tree size. It checks the C2SP tiles that clients read against the
// same tree, reports the entries past the newest checkpoint (Uncovered),
// and checks what was moved to quarantine/ against its own records. It
// may run beside the server writing the log: entries appended during the
// pass are checked once their leaves are written (settleTail).
func Verify(dir string, verifier note.Verifier, witnessed ...[]byte) (*Report, error) {
	rep := &Report{Problems: []Problem{}, Warnings: []Problem{}}
	// Leaf hashes are read in one sequential pass: leaf i's stored index
	// grows with i, so the reader only ever skips forward (one read per
	// megabyte, not one per entry). A directory without hashes.bin (an
	// archive copied back from object storage) is checked against its
	// checkpoints alone.
	hasLeaves := true
	var lr *leafReader
	hf, err := os.Open(filepath.Join(dir, "hashes.bin"))
	switch {
	case err == nil:
		defer hf.Close()
		lr = newLeafReader(hf, 0)
		fi, err := hf.Stat()
		if err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
		rep.Leaves = leafCount(fi.Size())
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

	// Quarantines are read first: the entries that record them are
	// picked up during the pass.
	quarantines := readQuarantines(dir, rep)
	records := map[int64][]byte{}
	for _, q := range quarantines {
		records[q.First] = nil
	}

	// Re-derive every stored hash from the entries alone (room for them
	// all up front: growing 64 bytes an entry by doubling was a fifth of
	// the time).
	var tree memHashes
	if n, err := Count(dir); err == nil && n > 0 {
		tree = make(memHashes, 0, tlog.StoredHashCount(n)+64)
	}
	var times timeBlocks
	var tail []tailLeaf
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
			if h, err := lr.leaf(i); err == nil && h != leaf {
				add(Problem{Index: i, Kind: "edited", Detail: editedDetail})
			}
		case len(tail) < maxTail:
			tail = append(tail, tailLeaf{i, leaf}) // settled after the pass
		default:
			add(Problem{Index: i, Kind: "extra", Detail: extraDetail})
		}
		if _, ok := records[i]; ok {
			records[i] = bytes.Clone(e)
		}
		times.add(i, e)
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
	if len(tail) > 0 {
		settleTail(hf, rep, tail, add)
	}
	if hasLeaves && rep.Entries < rep.Leaves {
		add(Problem{Index: rep.Entries, Kind: "missing", Detail: fmt.Sprintf("the tree recorded %d entries; only %d remain (deleted or truncated)", rep.Leaves, rep.Entries)})
	}

	// The log as it was before each quarantine, to check the checkpoints
	// moved with it (and any other that only that log produces).
	var forks []*fork
	for _, q := range quarantines {
		qr, f := verifyQuarantine(dir, q, &tree, rep, records[q.First], verifier)
		rep.Quarantined = append(rep.Quarantined, qr)
		if f != nil {
			forks = append(forks, f)
		}
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
	published := len(raws)
	raws = append(raws, witnessed...)
	var newestLocal int64
	for n, raw := range raws {
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
		var why string
		if c.Size > rep.Entries {
			why = fmt.Sprintf("signed for %d entries; the log has %d", c.Size, rep.Entries)
		} else {
			h, err := tlog.TreeHash(c.Size, &tree)
			if err != nil {
				return nil, fmt.Errorf("audit: verify: %w", err)
			}
			if h != c.Hash {
				why = "the entries no longer produce the root this checkpoint signed"
			}
		}
		if why == "" {
			rep.Covered = max(rep.Covered, c.Size)
			if n < published {
				newestLocal = max(newestLocal, c.Size)
			}
			continue
		}
		if f := explainedBy(forks, c); f != nil {
			rep.Warnings = append(rep.Warnings, Problem{Index: c.Size, Kind: "checkpoint", Path: quarantineDir + "/" + f.q.Name,
				Detail: fmt.Sprintf("%s, but it is a checkpoint of the log as it was before entries %d on were moved to %s/%s", why, f.q.First, quarantineDir, f.q.Name)})
			continue
		}
		rep.Problems = append(rep.Problems, Problem{Index: c.Size, Kind: "checkpoint", Detail: why})
	}
	if rep.Entries > rep.Covered {
		rep.Uncovered = rep.Entries - rep.Covered
		rep.Warnings = append(rep.Warnings, Problem{Index: rep.Covered, Kind: "uncovered",
			Detail: fmt.Sprintf("not yet covered: %d entries past the newest checkpoint (tree size %d): no signature vouches for them yet, and they could be cut from the end unnoticed", rep.Uncovered, rep.Covered)})
	}
	times.check(dir, rep)
	if !rep.Archive {
		var recorded tlog.HashReader
		if hasLeaves {
			recorded = fileHashes{hf}
		}
		if err := verifyTiles(dir, rep, &tree, recorded, rep.Sealed, newestLocal); err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
	}
	for _, ps := range [][]Problem{rep.Problems, rep.Warnings} {
		slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(a.Index, b.Index) })
	}
	return rep, nil
}

const editedDetail = "the entry no longer hashes to the leaf recorded when it was appended (edited, or another entry deleted, inserted or moved here)"

const extraDetail = "entry not recorded in the tree (inserted after the fact?)"

// tailLeaf is an entry read past the leaves hashes.bin held when Verify
// began, with its leaf hash.
type tailLeaf struct {
	i    int64
	leaf tlog.Hash
}

// maxTail bounds the entries past the recorded leaves whose check waits
// for the end of the pass; the rest are reported extra at once.
const maxTail = 1 << 16

// tailWait bounds how long Verify waits for a running server to record
// the leaves of the entries it appended during the pass.
const tailWait = 2 * time.Second

// settleTail checks the entries read past the leaves recorded when Verify
// began. A running server writes an entry to entries.log first and its
// leaf to hashes.bin a moment later, so an entry it appended during the
// pass is found before its leaf: hashes.bin is read again, for up to
// tailWait, until it covers them. Each is then compared with its leaf;
// one still without a leaf is extra.
func settleTail(hf *os.File, rep *Report, tail []tailLeaf, add func(Problem)) {
	last := tail[len(tail)-1].i
	leaves := rep.Leaves
	deadline := time.Now().Add(tailWait)
	for {
		if fi, err := hf.Stat(); err == nil {
			leaves = max(leaves, leafCount(fi.Size()))
		}
		if leaves > last || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	lr := newLeafReader(hf, tail[0].i)
	for _, t := range tail {
		if t.i >= leaves {
			add(Problem{Index: t.i, Kind: "extra", Detail: extraDetail})
			continue
		}
		if h, err := lr.leaf(t.i); err != nil || h != t.leaf {
			add(Problem{Index: t.i, Kind: "edited", Detail: editedDetail})
		}
	}
	// Leaves recorded after the pass read its last entry are not counted:
	// their entries were not read, and are not missing.
	rep.Leaves = max(rep.Leaves, min(leaves, rep.Entries))
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
		rep.Segments, rep.Sealed = len(segs), sealedCount(segs)
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
		c := &byteCounter{r: r}
		n, err := binary.ReadUvarint(c)
		if err == io.EOF {
			return false, nil
		}
		if rep.Entries < w.sealed {
			return true, nil
		}
		if err != nil || n == 0 || n > MaxEntrySize {
			add(Problem{Index: rep.Entries, Kind: "unreadable", Path: "entries.log", Detail: fmt.Sprintf("damaged at offset %d; nothing after it can be read", pos)})
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
			add(Problem{Index: rep.Entries, Kind: "unreadable", Path: "entries.log", Detail: fmt.Sprintf("ends inside the entry at offset %d", pos)})
			return false, nil
		}
		pos += int64(c.n) + int64(n)
		if err := check(rep.Entries, buf); err != nil {
			return false, err
		}
	}
}
