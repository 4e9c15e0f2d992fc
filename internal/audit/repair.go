package audit

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// RepairResult says what Repair did.
type RepairResult struct {
	Quarantine *Quarantine
	Index      int64  // index of the audit.repair entry (Quarantine.First)
	Entry      []byte // its canonical JSON
	Checkpoint []byte // the checkpoint signed over the repaired log
}

// Repair makes a log that Open refuses (a *DamageError) usable again,
// deleting nothing. From the first entry that entries.log cannot give back
// as it was recorded (a record that is not whole or not where offsets.bin
// put it, or bytes that no longer hash to the recorded leaf), it moves the
// rest of entries.log, the offsets and leaf hashes recorded for those
// entries, and the checkpoints and tiles of the trees that held them into
// DIR/quarantine/NAME/ (see Quarantine); cuts entries.log, offsets.bin
// and hashes.bin back to the entries before; records the move as an
// audit.repair entry at that index; and signs a checkpoint with signer,
// whose name is the log's origin.
//
// The repaired log is a new branch from that index: a witness that kept
// a checkpoint of the old tree reports it as inconsistent, which it is.
// Verify checks the quarantined entries and checkpoints against each other
// and reports what was moved and what of it is intact.
//
// Repair takes the directory's lock: the server must be stopped. It does
// not touch sealed segments (restore a damaged one from the archive). It
// returns nil and no error when there is nothing to repair.
func Repair(dir string, signer note.Signer, opts Options) (*RepairResult, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "entries.log")); err != nil {
		return nil, fmt.Errorf("audit: repair: %s holds no log: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	res, handed, err := repairLocked(dir, signer, opts, lock)
	if !handed {
		lock.Close()
	}
	return res, err
}

// repairLocked does Repair's work under the lock; handed says the lock
// went to a Log, which released it.
func repairLocked(dir string, signer note.Signer, opts Options, lock *os.File) (_ *RepairResult, handed bool, _ error) {
	q, err := quarantineDamage(dir, opts)
	if err != nil || q == nil {
		return nil, false, err
	}
	l, err := openLocked(dir, signer.Name(), opts, lock)
	if err != nil {
		return nil, false, fmt.Errorf("audit: repair: the log does not open after the damaged tail was moved to %s: %w", filepath.Join(dir, quarantineDir, q.Name), err)
	}
	e := q.entry("audit.repair", opts.Actor, opts.Now())
	raw, err := e.Marshal()
	if err != nil {
		l.Close()
		return nil, true, err
	}
	idx, err := l.Append(context.Background(), raw)
	if err != nil {
		l.Close()
		return nil, true, fmt.Errorf("audit: repair: record the repair: %w", err)
	}
	cp, err := l.CloseWithCheckpoint(signer)
	if err != nil {
		return nil, true, fmt.Errorf("audit: repair: %w", err)
	}
	return &RepairResult{Quarantine: q, Index: idx, Entry: raw, Checkpoint: cp}, true, nil
}

// quarantineDamage finds the first entry of entries.log that cannot be
// read back as recorded, moves it and what follows into a new quarantine,
// and cuts the log's files back to the entries before it. nil: nothing to
// repair.
func quarantineDamage(dir string, opts Options) (*Quarantine, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: repair: %w (repair moves damage in entries.log only; restore a damaged segment from the archive with rampart audit fetch)", err)
	}
	sealed := sealedCount(segs)
	var pos int64
	if sealed > 0 {
		pos = segs[len(segs)-1].end
	}
	files := map[string]*os.File{}
	for _, name := range []string{"entries.log", "offsets.bin", "hashes.bin"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit: repair: %w", err)
		}
		defer f.Close()
		files[name] = f
	}
	ef, of, hf := files["entries.log"], files["offsets.bin"], files["hashes.bin"]
	cp := newestCheckpointSize(dir)
	stored, err := storedOffsets(of, sealed, pos)
	if err != nil {
		return nil, fmt.Errorf("audit: repair: %w", err)
	}
	acked := sealed + int64(len(stored))
	hfi, err := hf.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: repair: %w", err)
	}
	leaves := leafCount(hfi.Size())
	// Leaves up to the newest checkpoint were synced before it: an entry
	// that no longer hashes to its leaf is damaged. Past it, hashes.bin
	// may hold what a crash left, and Open recomputes them.
	trusted := min(leaves, cp)
	lr := newLeafReader(hf, sealed)
	efi, err := ef.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: repair: %w", err)
	}
	fileEnd := efi.Size()
	sc, err := scanRecords(ef, pos, fileEnd, sealed, stored, func(i, _ int64, e []byte) (string, error) {
		if i >= trusted {
			return "", nil
		}
		leaf, err := lr.leaf(i)
		if err != nil {
			return "", fmt.Errorf("audit: repair: hashes.bin: %w", err)
		}
		if tlog.RecordHash(e) != leaf {
			return "the entry no longer hashes to the leaf recorded when it was appended", nil
		}
		return "", nil
	})
	if err != nil {
		return nil, err
	}
	k, off := sc.next, sc.end
	if k >= max(cp, acked) && off == fileEnd {
		return nil, nil
	}

	// Keep, then cut: everything recorded about entries k on goes to the
	// quarantine before the log's files are shortened.
	var obuf []byte
	for _, o := range stored[min(k-sealed, int64(len(stored))):] {
		obuf = binary.BigEndian.AppendUint64(obuf, uint64(o))
	}
	var lbuf []byte
	lr = newLeafReader(hf, k)
	for i := k; i < leaves; i++ {
		h, err := lr.leaf(i)
		if err != nil {
			return nil, fmt.Errorf("audit: repair: hashes.bin: %w", err)
		}
		lbuf = append(lbuf, h[:]...)
	}
	q := &Quarantine{Kind: QuarantineRepair, First: k, Offset: off, Bytes: fileEnd - off, Reason: sc.damage, Covered: cp, Acked: acked}
	if err := newQuarantine(dir, q, ef, obuf, lbuf, opts.Now()); err != nil {
		return nil, err
	}
	qdir := filepath.Join(dir, quarantineDir, q.Name)
	if err := moveCheckpoints(dir, qdir, k, q); err != nil {
		return nil, err
	}
	if err := moveTiles(dir, qdir, k, q); err != nil {
		return nil, err
	}
	if err := writeManifest(dir, q); err != nil {
		return nil, err
	}
	for f, size := range map[*os.File]int64{ef: off, of: 8 * k, hf: tlog.StoredHashCount(k) * tlog.HashSize} {
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("audit: repair: %w", err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("audit: repair: %w", err)
		}
	}
	// The time index is derived: drop the blocks that reach past k.
	tp := filepath.Join(dir, timeIndexFile)
	if fi, err := os.Stat(tp); err == nil && fi.Size() > 16*(k/TimeBlock) {
		if err := os.Truncate(tp, 16*(k/TimeBlock)); err != nil {
			return nil, fmt.Errorf("audit: repair: %w", err)
		}
	}
	return q, nil
}

// moveCheckpoints moves the checkpoints of trees larger than k (they hold
// entries that were moved) into qdir, and makes the newest remaining one
// the log's "checkpoint".
func moveCheckpoints(dir, qdir string, k int64, q *Quarantine) error {
	ents, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("audit: repair: %w", err)
	}
	var newest int64 = -1
	for _, e := range ents {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != e.Name() {
			continue
		}
		if n <= k {
			newest = max(newest, n)
			continue
		}
		if err := os.MkdirAll(filepath.Join(qdir, "checkpoints"), 0o700); err != nil {
			return fmt.Errorf("audit: repair: %w", err)
		}
		if err := os.Rename(filepath.Join(dir, "checkpoints", e.Name()), filepath.Join(qdir, "checkpoints", e.Name())); err != nil {
			return fmt.Errorf("audit: repair: %w", err)
		}
		q.Checkpoints = append(q.Checkpoints, n)
	}
	slices.Sort(q.Checkpoints)
	latest := filepath.Join(dir, "checkpoint")
	if n, ok := readCheckpointSize(latest); !ok || n <= k {
		return nil
	}
	if err := os.Rename(latest, filepath.Join(qdir, "checkpoint")); err != nil {
		return fmt.Errorf("audit: repair: %w", err)
	}
	if newest >= 0 {
		b, err := os.ReadFile(filepath.Join(dir, "checkpoints", strconv.FormatInt(newest, 10)))
		if err != nil {
			return fmt.Errorf("audit: repair: %w", err)
		}
		if err := atomicfile.Write(latest, b, 0o644); err != nil {
			return err
		}
	}
	return syncDir(filepath.Join(dir, "checkpoints"))
}

// moveTiles moves the tiles that reach past entry k into qdir.
func moveTiles(dir, qdir string, k int64, q *Quarantine) error {
	root := filepath.Join(dir, "tile")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		t, err := parseTilePath(filepath.ToSlash(rel))
		if err != nil || t.end() <= k {
			return nil
		}
		dst := filepath.Join(qdir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := os.Rename(p, dst); err != nil {
			return err
		}
		q.Tiles++
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit: repair: move tiles: %w", err)
	}
	return nil
}

// leafReader reads leaf hashes from hashes.bin in increasing index order,
// sequentially.
type leafReader struct {
	r   *bufio.Reader
	pos int64 // stored-hash index the reader is at
}

func newLeafReader(f io.ReaderAt, from int64) *leafReader {
	start := tlog.StoredHashIndex(0, from)
	return &leafReader{r: bufio.NewReaderSize(io.NewSectionReader(f, start*tlog.HashSize, 1<<62), 1<<20), pos: start}
}

func (lr *leafReader) leaf(i int64) (tlog.Hash, error) {
	var h tlog.Hash
	idx := tlog.StoredHashIndex(0, i)
	if idx < lr.pos {
		return h, fmt.Errorf("leaf %d read out of order", i)
	}
	if _, err := lr.r.Discard(int((idx - lr.pos) * tlog.HashSize)); err != nil {
		return h, fmt.Errorf("leaf %d: %w", i, err)
	}
	if _, err := io.ReadFull(lr.r, h[:]); err != nil {
		return h, fmt.Errorf("leaf %d: %w", i, err)
	}
	lr.pos = idx + 1
	return h, nil
}
