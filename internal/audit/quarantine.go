package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// Quarantine.
//
// The log is never cut without keeping what is cut. What Open cuts off (a
// torn write) and what Repair moves aside (a damaged tail) goes to
// quarantine/NAME/, which nothing in Rampart deletes:
//
//	quarantine.json    what was moved, from where, and why (Quarantine)
//	entries.log.tail   entries.log from the first entry moved to its end,
//	                   byte for byte
//	offsets.bin.tail   offsets.bin's records of those entries (Repair)
//	leaves.bin         their leaf hashes from hashes.bin (Repair)
//	checkpoints/SIZE   the checkpoints of trees that held them (Repair),
//	checkpoint         moved here: they vouch for the log as it was
//	tile/...           the tiles that covered them (Repair), moved here
//
// Each quarantine is recorded as the log's entry at index First (an
// audit.recover or audit.repair entry naming it). Verify checks the
// quarantined entries against their leaves and the moved checkpoints
// against the log as it was, and reports both.

const (
	quarantineDir      = "quarantine"
	quarantineManifest = "quarantine.json"
	quarantineTail     = "entries.log.tail"
	quarantineOffsets  = "offsets.bin.tail"
	quarantineLeaves   = "leaves.bin"
)

// Quarantine kinds.
const (
	// QuarantineTornWrite: Open cut off bytes past the last whole record
	// that nothing had acknowledged.
	QuarantineTornWrite = "torn-write"
	// QuarantineRepair: Repair moved a damaged tail aside.
	QuarantineRepair = "repair"
)

// Quarantine describes one part of the log moved aside.
type Quarantine struct {
	Name    string    `json:"-"` // directory under quarantine/
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	First   int64     `json:"first"`  // index of the first entry moved (and of the entry recording the move)
	Offset  int64     `json:"offset"` // where it started in entries.log
	Bytes   int64     `json:"bytes"`  // bytes of entries.log moved
	Reason  string    `json:"reason,omitempty"`
	Covered int64     `json:"covered"` // the newest checkpoint's tree size then
	Acked   int64     `json:"acked"`   // entries offsets.bin recorded then
	Offsets int64     `json:"offsets"` // offsets kept, of entries First on
	Leaves  int64     `json:"leaves"`  // leaf hashes kept, of entries First on
	// Checkpoints are the tree sizes of the checkpoints moved here.
	Checkpoints []int64 `json:"checkpoints,omitempty"`
	Tiles       int     `json:"tiles,omitempty"` // tiles moved here
}

// End is the index after the last acknowledged entry moved aside (First
// when none was: a torn write).
func (q *Quarantine) End() int64 { return max(q.Covered, q.Acked, q.First) }

// entry is the audit entry that records q.
func (q *Quarantine) entry(action string, actor Actor, now time.Time) *Entry {
	stake := "none (never acknowledged)"
	if q.End() > q.First {
		stake = fmt.Sprintf("%d to %d", q.First, q.End()-1)
	}
	e := &Entry{V: SchemaVersion, Time: now, Actor: actor, Action: action, Target: "audit", Outcome: OutcomeSuccess, Source: "audit",
		Reason: fmt.Sprintf("entries.log from offset %d (entry %d) moved to %s/%s: %s", q.Offset, q.First, quarantineDir, q.Name, q.reason()),
		Details: map[string]string{
			"quarantine":  quarantineDir + "/" + q.Name,
			"kind":        q.Kind,
			"first_index": strconv.FormatInt(q.First, 10),
			"offset":      strconv.FormatInt(q.Offset, 10),
			"bytes":       strconv.FormatInt(q.Bytes, 10),
			"entries":     stake,
			"checkpoint":  strconv.FormatInt(q.Covered, 10),
		}}
	if len(q.Checkpoints) > 0 {
		e.Details["checkpoints_moved"] = strconv.Itoa(len(q.Checkpoints))
	}
	return e
}

func (q *Quarantine) reason() string {
	if q.Reason == "" {
		return "entries.log ends early"
	}
	return q.Reason
}

// newQuarantine makes the quarantine directory for q (naming it) and
// copies entries.log's bytes [q.Offset, q.Offset+q.Bytes) and, when given,
// the offsets and leaves into it. Repair moves checkpoints and tiles in
// next; writeManifest ends it.
func newQuarantine(dir string, q *Quarantine, entries io.ReaderAt, offsets, leaves []byte, now time.Time) error {
	q.Time = now.UTC()
	base := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("audit: quarantine: %w", err)
	}
	stem := fmt.Sprintf("%s-entry-%d", q.Time.Format("20060102T150405Z"), q.First)
	for n := 1; ; n++ {
		q.Name = stem
		if n > 1 {
			q.Name = fmt.Sprintf("%s-%d", stem, n)
		}
		err := os.Mkdir(filepath.Join(base, q.Name), 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || n > 100 {
			return fmt.Errorf("audit: quarantine: %w", err)
		}
	}
	qdir := filepath.Join(base, q.Name)
	tail, err := os.OpenFile(filepath.Join(qdir, quarantineTail), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: quarantine: %w", err)
	}
	_, err = io.Copy(tail, io.NewSectionReader(entries, q.Offset, q.Bytes))
	if err == nil {
		err = tail.Sync()
	}
	if cerr := tail.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: quarantine: copy entries.log: %w", err)
	}
	if offsets != nil {
		q.Offsets = int64(len(offsets) / 8)
		if err := writeSynced(filepath.Join(qdir, quarantineOffsets), offsets); err != nil {
			return fmt.Errorf("audit: quarantine: %w", err)
		}
	}
	if leaves != nil {
		q.Leaves = int64(len(leaves) / 32)
		if err := writeSynced(filepath.Join(qdir, quarantineLeaves), leaves); err != nil {
			return fmt.Errorf("audit: quarantine: %w", err)
		}
	}
	return writeManifest(dir, q)
}

// writeManifest writes q's quarantine.json and syncs its directory.
func writeManifest(dir string, q *Quarantine) error {
	b, err := json.MarshalIndent(q, "", "  ")
	if err != nil {
		return fmt.Errorf("audit: quarantine: %w", err)
	}
	qdir := filepath.Join(dir, quarantineDir, q.Name)
	if err := atomicfile.Write(filepath.Join(qdir, quarantineManifest), append(b, '\n'), 0o600); err != nil {
		return err
	}
	for _, d := range []string{qdir, filepath.Join(dir, quarantineDir), dir} {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("audit: quarantine: %w", err)
		}
	}
	return nil
}

// readQuarantine reads and checks quarantine/name/quarantine.json against
// the files beside it. The directory is as untrusted as the rest of the
// data directory: every field is checked before use.
func readQuarantine(dir, name string) (*Quarantine, error) {
	qdir := filepath.Join(dir, quarantineDir, name)
	raw, err := os.ReadFile(filepath.Join(qdir, quarantineManifest))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	q := &Quarantine{Name: name}
	if err := dec.Decode(q); err != nil {
		return nil, fmt.Errorf("%s: %w", quarantineManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the object", quarantineManifest)
	}
	switch {
	case q.Kind != QuarantineTornWrite && q.Kind != QuarantineRepair:
		return nil, fmt.Errorf("%s: kind %q, want %s or %s", quarantineManifest, q.Kind, QuarantineTornWrite, QuarantineRepair)
	case q.First < 0 || q.Offset < 0 || q.Bytes < 0 || q.Covered < 0 || q.Acked < 0 || q.Offsets < 0 || q.Leaves < 0 || q.Tiles < 0:
		return nil, fmt.Errorf("%s: a negative count", quarantineManifest)
	case q.Offsets > 1<<40 || q.Leaves > 1<<40 || q.End() > 1<<50:
		return nil, fmt.Errorf("%s: impossible counts", quarantineManifest)
	}
	for file, want := range map[string]int64{quarantineTail: q.Bytes, quarantineOffsets: 8 * q.Offsets, quarantineLeaves: 32 * q.Leaves} {
		fi, err := os.Stat(filepath.Join(qdir, file))
		switch {
		case errors.Is(err, os.ErrNotExist) && want == 0:
		case err != nil:
			return nil, err
		case fi.Size() != want:
			return nil, fmt.Errorf("%s has %d bytes; %s says %d", file, fi.Size(), quarantineManifest, want)
		}
	}
	return q, nil
}

// readQuarantines reads dir's quarantine manifests; one that cannot be
// read is a warning (an interrupted repair leaves one before it changes
// the log).
func readQuarantines(dir string, rep *Report) []*Quarantine {
	ents, err := os.ReadDir(filepath.Join(dir, quarantineDir))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			rep.Warnings = append(rep.Warnings, Problem{Index: -1, Kind: "quarantined", Path: quarantineDir, Detail: err.Error()})
		}
		return nil
	}
	var qs []*Quarantine
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		q, err := readQuarantine(dir, e.Name())
		if err != nil {
			rep.Warnings = append(rep.Warnings, Problem{Index: -1, Kind: "quarantined", Path: quarantineDir + "/" + e.Name(),
				Detail: fmt.Sprintf("not checked: %v", err)})
			continue
		}
		qs = append(qs, q)
	}
	return qs
}

// fork is the log as it was before a quarantine: the live tree's hashes
// below the quarantine's first entry, then those of its kept leaves.
type fork struct {
	q    *Quarantine
	live *memHashes
	base int64       // stored hashes below base come from live
	old  []tlog.Hash // stored hashes from base on
	size int64       // leaves in the old tree
}

func (f *fork) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx < f.base {
			h, err := f.live.ReadHashes([]int64{idx})
			if err != nil {
				return nil, err
			}
			out[i] = h[0]
			continue
		}
		if idx-f.base >= int64(len(f.old)) {
			return nil, fmt.Errorf("audit: hash %d not in the quarantined tree", idx)
		}
		out[i] = f.old[idx-f.base]
	}
	return out, nil
}

// explainedBy returns the fork whose tree c signs, if c's tree holds
// quarantined entries.
func explainedBy(forks []*fork, c *Checkpoint) *fork {
	for _, f := range forks {
		if c.Size <= f.q.First || c.Size > f.size {
			continue
		}
		if h, err := tlog.TreeHash(c.Size, f); err == nil && h == c.Hash {
			return f
		}
	}
	return nil
}

// verifyQuarantine checks one quarantine against the live tree (whose
// first q.First entries it shares), the entry that should record it
// (record), and its own files, and says so in rep.
func verifyQuarantine(dir string, q *Quarantine, tree *memHashes, rep *Report, record []byte, verifier note.Verifier) (QuarantineReport, *fork) {
	qr := QuarantineReport{Name: q.Name, Kind: q.Kind, First: q.First, End: q.End(), Offset: q.Offset, Bytes: q.Bytes, RecordedAs: -1}
	qdir := filepath.Join(dir, quarantineDir, q.Name)
	rel := quarantineDir + "/" + q.Name
	problem := func(idx int64, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{Index: idx, Kind: "quarantined", Path: rel, Detail: fmt.Sprintf(format, args...)})
	}
	if q.First > rep.Entries {
		problem(q.First, "starts at entry %d, past the log's %d entries (entries before it are gone too)", q.First, rep.Entries)
		return qr, nil
	}
	action := "audit.repair"
	if q.Kind == QuarantineTornWrite {
		action = "audit.recover"
	}
	if e, err := ParseEntry(record); err == nil && e.Action == action && e.Details["quarantine"] == rel {
		qr.RecordedAs = q.First
	} else {
		problem(q.First, "not recorded in the log: entry %d is not the %s entry naming it (moved aside without a trace in the log?)", q.First, action)
	}

	read := func(name string, size int64) []byte {
		if size == 0 {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(qdir, name))
		if err != nil {
			problem(q.First, "%s: %v", name, err)
		}
		return b
	}
	tail := read(quarantineTail, q.Bytes)
	offb := read(quarantineOffsets, 8*q.Offsets)
	leafb := read(quarantineLeaves, 32*q.Leaves)
	leaves := make([]tlog.Hash, len(leafb)/tlog.HashSize)
	for i := range leaves {
		copy(leaves[i][:], leafb[i*tlog.HashSize:])
	}
	offs := make([]int64, len(offb)/8)
	for i := range offs {
		offs[i] = int64(binary.BigEndian.Uint64(offb[8*i:])) - q.Offset
	}

	// Each entry moved aside: where offsets.bin had it (else right after
	// the one before), and whether it hashes to its recorded leaf.
	// The loop is bounded by what the files hold (the manifest's counts
	// are not trusted to be small): the recorded offsets and leaves, then
	// records read one after another from the tail.
	stake := q.End() - q.First
	recorded := int64(max(len(leaves), len(offs)))
	prevEnd := int64(0)
	var j int64
	for ; j < recorded || (prevEnd >= 0 && prevEnd < int64(len(tail))); j++ {
		at := prevEnd
		next := int64(-1)
		if j < int64(len(offs)) {
			at = offs[j]
			if j+1 < int64(len(offs)) {
				next = offs[j+1]
			}
		}
		var leaf *tlog.Hash
		if j < int64(len(leaves)) {
			leaf = &leaves[j]
		}
		e, end := quarantinedEntry(tail, at, next, leaf)
		prevEnd = end
		switch {
		case e != nil && leaf != nil && tlog.RecordHash(e) == *leaf:
			qr.Intact++
		case e != nil && leaf == nil:
			qr.Unchecked++
		case j >= stake:
			// Never acknowledged (a torn write): nothing was lost.
		default:
			if len(qr.Damaged) < maxReported {
				qr.Damaged = append(qr.Damaged, q.First+j)
			}
			qr.DamagedCount++
		}
	}
	// Acknowledged entries of which nothing readable was kept.
	for ; j < stake; j++ {
		if len(qr.Damaged) >= maxReported {
			qr.DamagedCount += stake - j
			break
		}
		qr.Damaged = append(qr.Damaged, q.First+j)
		qr.DamagedCount++
	}

	// The moved checkpoints must be checkpoints of the log as it was.
	var f *fork
	if len(leaves) > 0 {
		f = &fork{q: q, live: tree, base: tlog.StoredHashCount(q.First), size: q.First + int64(len(leaves))}
		for j, leaf := range leaves {
			hs, err := tlog.StoredHashesForRecordHash(q.First+int64(j), leaf, f)
			if err != nil {
				problem(q.First, "leaves.bin: %v", err)
				f = nil
				break
			}
			f.old = append(f.old, hs...)
		}
	}
	var cps []string
	if ents, err := os.ReadDir(filepath.Join(qdir, "checkpoints")); err == nil {
		for _, e := range ents {
			cps = append(cps, filepath.Join(qdir, "checkpoints", e.Name()))
		}
	}
	if _, err := os.Stat(filepath.Join(qdir, "checkpoint")); err == nil {
		cps = append(cps, filepath.Join(qdir, "checkpoint"))
	}
	for _, p := range cps {
		name, _ := filepath.Rel(dir, p)
		raw, err := os.ReadFile(p)
		if err != nil {
			problem(q.First, "%s: %v", name, err)
			continue
		}
		c, err := ParseCheckpoint(raw, verifier)
		if err != nil {
			problem(q.First, "%s: %v", name, err)
			continue
		}
		if f == nil || c.Size > f.size {
			problem(c.Size, "%s: a checkpoint of %d entries, which the quarantined leaves cannot reproduce (%d kept from entry %d)", name, c.Size, len(leaves), q.First)
			continue
		}
		if h, err := tlog.TreeHash(c.Size, f); err != nil || h != c.Hash {
			problem(c.Size, "%s: the log before the move (the entries before %d, then leaves.bin) does not produce this checkpoint's root: the quarantine was altered", name, q.First)
			continue
		}
		if p != filepath.Join(qdir, "checkpoint") {
			qr.Checkpoints++
		}
	}

	var detail string
	if q.End() > q.First {
		detail = fmt.Sprintf("quarantined: entries %d to %d in %s (moved aside by %s, recorded as entry %d): %d intact, %d damaged",
			q.First, q.End()-1, rel, q.Kind, q.First, qr.Intact, qr.DamagedCount)
		if qr.DamagedCount > 0 {
			detail += ": " + joinIndexes(qr.Damaged, qr.DamagedCount)
		}
		if qr.Unchecked > 0 {
			detail += fmt.Sprintf(", %d readable without a recorded leaf", qr.Unchecked)
		}
		detail += fmt.Sprintf("; checkpoints of the log before the move that verify against them: %d", qr.Checkpoints)
	} else {
		detail = fmt.Sprintf("quarantined: %d bytes of a torn write at offset %d in %s (cut off at start, never acknowledged: no entry lost), recorded as entry %d",
			q.Bytes, q.Offset, rel, q.First)
	}
	qr.Summary = detail
	if stake > 0 || qr.Unchecked > 0 {
		// Entries were moved out of the log: a warning, which --strict
		// does not pass. A torn write lost nothing and is only listed.
		rep.Warnings = append(rep.Warnings, Problem{Index: q.First, Kind: "quarantined", Path: rel, Detail: detail})
	}
	return qr, f
}

// quarantinedEntry reads the record at offset at of tail, which ends at
// next when known (-1: unknown). A record whose length is damaged but
// whose bytes up to next are intact is read too, when they hash to leaf.
// It returns the entry (nil: unreadable) and where the record ends (-1:
// unknown).
func quarantinedEntry(tail []byte, at, next int64, leaf *tlog.Hash) ([]byte, int64) {
	if at < 0 || at >= int64(len(tail)) || next > int64(len(tail)) {
		return nil, -1
	}
	n, k := binary.Uvarint(tail[at:])
	if end := at + int64(k) + int64(n); k > 0 && n > 0 && n <= MaxEntrySize && end <= int64(len(tail)) && (next < 0 || end == next) {
		return tail[at+int64(k) : end], end
	}
	if leaf != nil {
		for h := int64(1); h <= binary.MaxVarintLen32 && at+h < next; h++ {
			if e := tail[at+h : next]; tlog.RecordHash(e) == *leaf {
				return e, next
			}
		}
	}
	return nil, next
}

func joinIndexes(idx []int64, total int64) string {
	var b bytes.Buffer
	for i, x := range idx {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	if total > int64(len(idx)) {
		fmt.Fprintf(&b, " and %d more", total-int64(len(idx)))
	}
	return b.String()
}
