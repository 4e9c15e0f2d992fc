package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Backups (package backup) copy a running log without stopping it.
//
// What a backup needs to rebuild the log is what nothing derives: the
// sealed segments, the entries of entries.log after them (the tail, at its
// offset), the checkpoints and what quarantine/ holds. offsets.bin,
// hashes.bin, the tiles and the time index are derived from those, and
// Rebuild derives them again on restore, checking the tree it gets against
// the signed checkpoint the backup took.

// BackupView is a consistent view of a log for a backup, valid while the
// function given to Log.Backup runs: no segment is sealed meanwhile (which
// would punch a hole where the tail was), and every file it names stays
// as it is over the ranges it names while the log goes on taking entries.
type BackupView struct {
	Dir string
	// Checkpoint is a checkpoint signed for this backup: tree size Size,
	// root Root.
	Checkpoint []byte
	Size       int64
	Root       tlog.Hash
	// Segments are the sealed segment files (paths), in log order; they
	// hold entries 0 to Sealed-1.
	Segments []string
	Sealed   int64
	// The tail: entries Sealed to Size-1 are bytes TailStart to TailEnd
	// of entries.log (TailStart is where the last segment's range ends).
	TailStart, TailEnd int64
	// Checkpoints are the files checkpoints/N for N <= Size (immutable
	// once written), sorted by N.
	Checkpoints []string
	// Quarantine lists the regular files under quarantine/, relative to
	// Dir (slash-separated).
	Quarantine []string
}

// Backup signs a checkpoint of the log as it is with signer, then calls fn
// with a view of the log at that checkpoint. Sealing waits until fn
// returns (appends and checkpoints do not).
func (l *Log) Backup(signer note.Signer, fn func(*BackupView) error) error {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	raw, err := l.Checkpoint(signer)
	if err != nil {
		return err
	}
	v := &BackupView{Dir: l.dir, Checkpoint: raw}
	l.mu.RLock()
	size, ok := readCheckpointSizeBytes(raw)
	if ok {
		v.Size = size
		v.Root, err = tlog.TreeHash(size, l.hashReader())
		for _, sg := range l.segs {
			v.Segments = append(v.Segments, sg.path)
		}
		v.Sealed = sealedCount(l.segs)
		if len(l.segs) > 0 {
			v.TailStart = l.segs[len(l.segs)-1].end
		}
		if err == nil {
			v.TailEnd, err = l.endOffsetLocked(size)
		}
	}
	l.mu.RUnlock()
	if !ok {
		return errors.New("audit: backup: the checkpoint just signed does not parse")
	}
	if err != nil {
		return fmt.Errorf("audit: backup: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(l.dir, "checkpoints"))
	if err != nil {
		return fmt.Errorf("audit: backup: %w", err)
	}
	var sizes []int64
	for _, e := range ents {
		if n, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && n <= v.Size && strconv.FormatInt(n, 10) == e.Name() {
			sizes = append(sizes, n)
		}
	}
	slices.Sort(sizes)
	for _, n := range sizes {
		v.Checkpoints = append(v.Checkpoints, filepath.Join(l.dir, "checkpoints", strconv.FormatInt(n, 10)))
	}
	qroot := filepath.Join(l.dir, quarantineDir)
	err = filepath.WalkDir(qroot, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == qroot {
			return filepath.SkipDir
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(l.dir, p)
		v.Quarantine = append(v.Quarantine, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit: backup: %w", err)
	}
	return fn(v)
}

func readCheckpointSizeBytes(raw []byte) (int64, bool) {
	lines := strings.SplitN(string(raw), "\n", 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	return n, err == nil && n >= 0
}

// Rebuild derives, in a log directory restored from a backup (segments/,
// entries.log holding the tail at its offset, checkpoints/, checkpoint,
// quarantine/), what a backup leaves out: offsets.bin and hashes.bin from
// the entries, and the C2SP tiles for the tree. It returns the tree size
// and root hash the entries produce, which the caller checks against the
// signed checkpoint; Verify and Open then read the directory as a log.
// offsets.bin and hashes.bin must not exist yet. The tiles it writes are
// not synced one by one: the caller makes the directory durable (a
// restore syncs the file system once before moving the data directory
// into place).
func Rebuild(dir string) (int64, tlog.Hash, error) {
	n, root, err := rebuild(dir)
	if err != nil {
		return 0, tlog.Hash{}, fmt.Errorf("audit: rebuild %s: %w", dir, err)
	}
	return n, root, nil
}

func rebuild(dir string) (int64, tlog.Hash, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	create := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	}
	offsets, err := create("offsets.bin")
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	defer offsets.Close()
	hashes, err := create("hashes.bin")
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	defer hashes.Close()
	entries, err := os.OpenFile(filepath.Join(dir, "entries.log"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	defer entries.Close()

	hw := &hashWriter{f: hashes}
	var ob []byte
	add := func(i, off int64, e []byte) error {
		ob = binary.BigEndian.AppendUint64(ob, uint64(off))
		hs, err := tlog.StoredHashes(i, e, hw)
		if err != nil {
			return err
		}
		hw.pending = append(hw.pending, hs...)
		if len(ob) >= 1<<20 {
			if _, err := offsets.Write(ob); err != nil {
				return err
			}
			ob = ob[:0]
		}
		if len(hw.pending) >= 1<<15 {
			return hw.flush()
		}
		return nil
	}

	// Sealed entries: their offsets follow from the range each segment
	// had in entries.log and the records' lengths.
	var off int64
	seg := 0
	_, err = eachSealed(segs, 0, sealedCount(segs), func(i int64, e []byte) error {
		if i == segs[seg].first {
			off = segs[seg].start
		}
		if err := add(i, off, e); err != nil {
			return err
		}
		off += int64(uvarintLen(uint64(len(e))) + len(e))
		if i+1 == segs[seg].last() {
			if off != segs[seg].end {
				return fmt.Errorf("segment %s: its entries end at offset %d of entries.log, its index says %d", filepath.Base(segs[seg].path), off, segs[seg].end)
			}
			seg++
		}
		return nil
	})
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	sealed := sealedCount(segs)
	var pos int64
	if len(segs) > 0 {
		pos = segs[len(segs)-1].end
	}
	fi, err := entries.Stat()
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	sc, err := scanRecords(entries, pos, fi.Size(), sealed, nil, func(i, off int64, e []byte) (string, error) {
		return "", add(i, off, e)
	})
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	if sc.end != fi.Size() {
		return 0, tlog.Hash{}, fmt.Errorf("entries.log: damaged at offset %d (entry %d): %s", sc.end, sc.next, sc.damage)
	}
	if _, err := offsets.Write(ob); err != nil {
		return 0, tlog.Hash{}, err
	}
	if err := hw.flush(); err != nil {
		return 0, tlog.Hash{}, err
	}
	n := sc.next
	root, err := tlog.TreeHash(n, hw)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	// Tiles: every hash tile of the tree, and the entry bundles of what
	// is not sealed (sealed ranges are read from their segments).
	for _, t := range tlog.NewTiles(tileHeight, 0, n) {
		data, err := tlog.ReadTileData(t, hw)
		if err != nil {
			return 0, tlog.Hash{}, err
		}
		if err := writeTile(dir, tilePath(strconv.Itoa(t.L), t.N, t.W), data); err != nil {
			return 0, tlog.Hash{}, err
		}
	}
	var bundle []byte
	for i := sealed; i < n; i++ {
		if i%bundleEntries == 0 {
			bundle = bundle[:0]
		}
		off, err := readOffset(offsets, i)
		if err != nil {
			return 0, tlog.Hash{}, err
		}
		e, err := readRecord(entries, off)
		if err != nil {
			return 0, tlog.Hash{}, err
		}
		bundle = append(bundle, byte(len(e)>>8), byte(len(e)))
		bundle = append(bundle, e...)
		if (i+1)%bundleEntries == 0 || i+1 == n {
			b := i / bundleEntries
			if err := writeTile(dir, tilePath("entries", b, int(i+1-b*bundleEntries)), bundle); err != nil {
				return 0, tlog.Hash{}, err
			}
		}
	}
	for _, f := range []*os.File{offsets, hashes, entries} {
		if err := f.Sync(); err != nil {
			return 0, tlog.Hash{}, err
		}
	}
	return n, root, nil
}

func readOffset(f *os.File, i int64) (int64, error) {
	var b [8]byte
	if _, err := f.ReadAt(b[:], 8*i); err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b[:])), nil
}

func readRecord(f *os.File, off int64) ([]byte, error) {
	var hdr [binary.MaxVarintLen64]byte
	k, _ := f.ReadAt(hdr[:], off)
	n, m := binary.Uvarint(hdr[:k])
	if m <= 0 || n > MaxEntrySize {
		return nil, fmt.Errorf("entries.log: bad record at offset %d", off)
	}
	b := make([]byte, n)
	_, err := f.ReadAt(b, off+int64(m))
	return b, err
}

// writeTile writes a tile without syncing it: a restore writes thousands,
// and makes the whole directory durable once at the end (see Rebuild).
func writeTile(dir, rel string, data []byte) error {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// hashWriter appends stored hashes to a file and reads them back (the
// ones not yet written from memory), as tlog.StoredHashes needs.
type hashWriter struct {
	f       *os.File
	written int64 // hashes in the file
	pending []tlog.Hash
}

func (w *hashWriter) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx >= w.written {
			j := idx - w.written
			if j >= int64(len(w.pending)) {
				return nil, fmt.Errorf("hash %d not computed", idx)
			}
			out[i] = w.pending[j]
			continue
		}
		if _, err := w.f.ReadAt(out[i][:], idx*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("read hash %d: %w", idx, err)
		}
	}
	return out, nil
}

func (w *hashWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	b := make([]byte, 0, len(w.pending)*tlog.HashSize)
	for _, h := range w.pending {
		b = append(b, h[:]...)
	}
	if _, err := w.f.WriteAt(b, w.written*tlog.HashSize); err != nil {
		return err
	}
	w.written += int64(len(w.pending))
	w.pending = w.pending[:0]
	return nil
}

// CheckCheckpoints checks every checkpoint of a rebuilt log directory
// (checkpoints/N and checkpoint) against the tree in its hashes.bin: each
// must be signed by verifier and name the root the entries produce. With
// Rebuild (which re-derives that tree from every entry) it is what a
// restore needs to trust the log, at a fraction of Verify's cost (which a
// drill runs in full).
func CheckCheckpoints(dir string, verifier note.Verifier) (int, error) {
	hf, err := os.Open(filepath.Join(dir, "hashes.bin"))
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	defer hf.Close()
	fi, err := hf.Stat()
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	size := leafCount(fi.Size())
	paths := []string{filepath.Join(dir, "checkpoint")}
	ents, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("audit: %w", err)
	}
	for _, e := range ents {
		paths = append(paths, filepath.Join(dir, "checkpoints", e.Name()))
	}
	n := 0
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return n, fmt.Errorf("audit: %w", err)
		}
		c, err := ParseCheckpoint(raw, verifier)
		if err != nil {
			return n, fmt.Errorf("audit: %s: %w", p, err)
		}
		if c.Size > size {
			return n, fmt.Errorf("audit: %s is signed for %d entries; the log has %d", p, c.Size, size)
		}
		h, err := tlog.TreeHash(c.Size, fileHashes{hf})
		if err != nil {
			return n, fmt.Errorf("audit: %s: %w", p, err)
		}
		if h != c.Hash {
			return n, fmt.Errorf("audit: %s: the entries do not produce the root it signed", p)
		}
		n++
	}
	return n, nil
}
