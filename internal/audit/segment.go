package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/mod/sumdb/tlog"
)

// Sealed segments.
//
// A log kept for years cannot keep every entry twice and uncompressed. Once
// a checkpoint covers a whole segment (SegmentEntries entries, by default
// 65,536), Seal writes it to segments/FIRST.zst: one zstd frame per 256
// entries whose content is exactly the C2SP entry bundle of those entries
// (`zstd -d` on a segment prints the bundles back to back), then a zstd
// skippable frame holding the segment's index. Before a segment replaces
// anything it is read back from disk and every entry checked against the
// leaf hash recorded when it was appended; only then are its entries
// removed from entries.log (a hole is punched where the file system allows
// it, so offsets stay valid) and its full entry bundles deleted from tile/.
// Readers (Entry, Scan, Verify) take sealed entries from the segments.

// DefaultSegmentEntries is how many entries a sealed segment holds.
const DefaultSegmentEntries = 1 << 16

const (
	bundleEntries = 256
	segMagic      = "RAMPSEG1"
	// skippableMagic is a zstd skippable frame (RFC 8878 section 3.1.2):
	// decoders pass over it, so a segment stays one valid zstd stream.
	skippableMagic = 0x184D2A5E
	segSuffix      = ".zst"
	segDir         = "segments"
)

// segment describes one sealed segment file.
type segment struct {
	path   string
	first  int64   // index of its first entry
	count  int64   // entries it holds (a multiple of 256)
	start  int64   // byte range its entries had in entries.log
	end    int64   //
	frames []int64 // file offset of each bundle frame, then of the index
}

func (sg *segment) last() int64 { return sg.first + sg.count }

// segmentName is a segment's file name: its first index, zero-padded so
// names sort in log order.
func segmentName(first int64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// encodeSegmentIndex is the skippable frame that ends a segment file.
func encodeSegmentIndex(sg *segment) []byte {
	var p []byte
	p = append(p, segMagic...)
	for _, v := range []int64{sg.first, sg.count, sg.start, sg.end} {
		p = binary.BigEndian.AppendUint64(p, uint64(v))
	}
	for _, f := range sg.frames {
		p = binary.BigEndian.AppendUint64(p, uint64(f))
	}
	// A fixed footer finds the index from the end of the file.
	p = binary.BigEndian.AppendUint32(p, uint32(len(p)+8))
	p = append(p, "RSG1"...)
	out := binary.LittleEndian.AppendUint32(nil, skippableMagic)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(p)))
	return append(out, p...)
}

// readSegment reads a segment file's index.
func readSegment(path string) (*segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	bad := func(why string) error { return fmt.Errorf("audit: segment %s: %s", filepath.Base(path), why) }
	var foot [8]byte
	if fi.Size() < 8+8 {
		return nil, bad("too short")
	}
	if _, err := f.ReadAt(foot[:], fi.Size()-8); err != nil {
		return nil, err
	}
	n := int64(binary.BigEndian.Uint32(foot[:4]))
	if string(foot[4:]) != "RSG1" || n < int64(len(segMagic))+32+16 || n > fi.Size()-8 || n > 1<<24 {
		return nil, bad("no index at the end (not a sealed segment, or cut short)")
	}
	p := make([]byte, n)
	if _, err := f.ReadAt(p, fi.Size()-n); err != nil {
		return nil, err
	}
	if string(p[:len(segMagic)]) != segMagic {
		return nil, bad("index has the wrong magic")
	}
	q := p[len(segMagic) : len(p)-8]
	u := func() int64 { v := int64(binary.BigEndian.Uint64(q)); q = q[8:]; return v }
	sg := &segment{path: path, first: u(), count: u(), start: u(), end: u()}
	if sg.first < 0 || sg.count <= 0 || sg.count%bundleEntries != 0 || sg.start < 0 || sg.end < sg.start {
		return nil, bad("index has impossible values")
	}
	if int64(len(q)) != 8*(sg.count/bundleEntries+1) {
		return nil, bad("index does not list one frame per 256 entries")
	}
	for len(q) > 0 {
		sg.frames = append(sg.frames, u())
	}
	if !slices.IsSorted(sg.frames) || sg.frames[0] != 0 || sg.frames[len(sg.frames)-1] != fi.Size()-n-8 {
		return nil, bad("frame offsets out of order")
	}
	return sg, nil
}

// listSegments returns dir's sealed segments in order; they must follow
// each other from entry 0 without gaps.
func listSegments(dir string) ([]*segment, error) {
	ents, err := os.ReadDir(filepath.Join(dir, segDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var segs []*segment
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), segSuffix) {
			continue
		}
		sg, err := readSegment(filepath.Join(dir, segDir, e.Name()))
		if err != nil {
			return nil, err
		}
		if e.Name() != segmentName(sg.first) {
			return nil, fmt.Errorf("audit: segment %s holds entries from %d (renamed?)", e.Name(), sg.first)
		}
		segs = append(segs, sg)
	}
	var next int64
	for _, sg := range segs {
		if sg.first != next {
			return nil, fmt.Errorf("audit: sealed segments: entries %d to %d are in no segment (deleted?)", next, sg.first-1)
		}
		next = sg.last()
	}
	return segs, nil
}

// sealedCount is how many entries the segments hold.
func sealedCount(segs []*segment) int64 {
	if len(segs) == 0 {
		return 0
	}
	return segs[len(segs)-1].last()
}

// parseBundle splits a C2SP entry bundle into its entries.
func parseBundle(b []byte, want int) ([][]byte, error) {
	out := make([][]byte, 0, want)
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("entry bundle cut inside a length")
		}
		n := int(b[0])<<8 | int(b[1])
		if n == 0 || len(b) < 2+n {
			return nil, errors.New("entry bundle cut inside an entry")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	if len(out) != want {
		return nil, fmt.Errorf("entry bundle holds %d entries, want %d", len(out), want)
	}
	return out, nil
}

// segmentReader reads bundles from segments, keeping the last one decoded.
type segmentReader struct {
	dec    *zstd.Decoder
	file   *os.File
	seg    *segment
	frame  int64 // index of the cached bundle in seg, -1 for none
	cached [][]byte
	buf    []byte
}

func newSegmentReader() (*segmentReader, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<26))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &segmentReader{dec: dec, frame: -1}, nil
}

func (r *segmentReader) Close() {
	if r.file != nil {
		r.file.Close()
	}
	r.dec.Close()
}

// bundle returns the entries of bundle k (entries 256k to 256k+255 of the
// log) from segment sg.
func (r *segmentReader) bundle(sg *segment, k int64) ([][]byte, error) {
	if r.seg == sg && r.frame == k {
		return r.cached, nil
	}
	if r.seg != sg {
		if r.file != nil {
			r.file.Close()
		}
		f, err := os.Open(sg.path)
		if err != nil {
			r.seg, r.file = nil, nil
			return nil, fmt.Errorf("audit: %w", err)
		}
		r.seg, r.file = sg, f
	}
	j := k - sg.first/bundleEntries
	if j < 0 || j+1 >= int64(len(sg.frames)) {
		return nil, fmt.Errorf("audit: bundle %d is not in segment %s", k, filepath.Base(sg.path))
	}
	raw := make([]byte, sg.frames[j+1]-sg.frames[j])
	if _, err := r.file.ReadAt(raw, sg.frames[j]); err != nil {
		return nil, fmt.Errorf("audit: segment %s: %w", filepath.Base(sg.path), err)
	}
	var err error
	r.buf, err = r.dec.DecodeAll(raw, r.buf[:0])
	if err != nil {
		r.frame = -1
		return nil, fmt.Errorf("audit: segment %s, entries %d to %d: %w", filepath.Base(sg.path), k*bundleEntries, k*bundleEntries+bundleEntries-1, err)
	}
	es, err := parseBundle(r.buf, bundleEntries)
	if err != nil {
		r.frame = -1
		return nil, fmt.Errorf("audit: segment %s, entries %d to %d: %w", filepath.Base(sg.path), k*bundleEntries, k*bundleEntries+bundleEntries-1, err)
	}
	r.frame, r.cached = k, es
	return es, nil
}

// entry returns sealed entry i (which segs must hold).
func (r *segmentReader) entry(segs []*segment, i int64) ([]byte, error) {
	k, ok := slices.BinarySearchFunc(segs, i, func(sg *segment, i int64) int {
		switch {
		case i < sg.first:
			return 1
		case i >= sg.last():
			return -1
		}
		return 0
	})
	if !ok {
		return nil, fmt.Errorf("audit: entry %d is in no sealed segment", i)
	}
	es, err := r.bundle(segs[k], i/bundleEntries)
	if err != nil {
		return nil, err
	}
	return es[i%bundleEntries], nil
}

// Seal seals every whole segment that the last checkpoint covers and that
// is not sealed yet, and returns how many it sealed. It checks each against
// the stored leaf hashes before removing anything, so a log edited on disk
// is refused rather than sealed (run rampart audit verify).
func (l *Log) Seal() (int, error) {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	n := 0
	for {
		l.mu.RLock()
		next, closed := sealedCount(l.segs), l.closed
		l.mu.RUnlock()
		if closed {
			return n, ErrClosed
		}
		if next+l.segEntries > l.checkpointedSize() {
			return n, nil
		}
		if err := l.sealOne(next); err != nil {
			return n, err
		}
		n++
	}
}

func (l *Log) sealOne(first int64) error {
	last := first + l.segEntries
	l.mu.RLock()
	if last > l.size {
		l.mu.RUnlock()
		return nil
	}
	start, err := l.offsetLocked(first)
	var end int64
	if err == nil {
		end, err = l.endOffsetLocked(last)
	}
	var leaves []tlog.Hash
	if err == nil {
		var idx []int64
		for i := first; i < last; i++ {
			idx = append(idx, tlog.StoredHashIndex(0, i))
		}
		leaves, err = l.hashReader().ReadHashes(idx)
	}
	l.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("audit: seal %d: %w", first, err)
	}
	// The bytes of sealed-to-be entries never change: read them unlocked.
	raw := make([]byte, end-start)
	if _, err := l.entries.ReadAt(raw, start); err != nil {
		return fmt.Errorf("audit: seal %d: read entries: %w", first, err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return fmt.Errorf("audit: seal: %w", err)
	}
	defer enc.Close()
	sg := &segment{first: first, count: l.segEntries, start: start, end: end}
	var out, bundle []byte
	p := raw
	for i := first; i < last; i++ {
		size, k := binary.Uvarint(p)
		if k <= 0 || size == 0 || size > MaxEntrySize || uint64(len(p)-k) < size {
			return fmt.Errorf("audit: seal: entry %d unreadable in entries.log (run rampart audit verify)", i)
		}
		e := p[k : k+int(size)]
		p = p[k+int(size):]
		if tlog.RecordHash(e) != leaves[i-first] {
			return fmt.Errorf("audit: seal: entry %d no longer matches its leaf hash; not sealing (run rampart audit verify)", i)
		}
		bundle = append(bundle, byte(len(e)>>8), byte(len(e)))
		bundle = append(bundle, e...)
		if (i+1)%bundleEntries == 0 {
			sg.frames = append(sg.frames, int64(len(out)))
			out = enc.EncodeAll(bundle, out)
			bundle = bundle[:0]
		}
	}
	sg.frames = append(sg.frames, int64(len(out)))
	out = append(out, encodeSegmentIndex(sg)...)

	dir := filepath.Join(l.dir, segDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: seal: %w", err)
	}
	final := filepath.Join(dir, segmentName(first))
	tmp := final + ".tmp"
	if err := writeSynced(tmp, out); err != nil {
		return fmt.Errorf("audit: seal: %w", err)
	}
	// Read it back from disk and check every entry before it replaces
	// anything.
	if err := checkSegmentFile(tmp, first, leaves); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("audit: seal: written segment does not read back: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("audit: seal: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("audit: seal: %w", err)
	}
	sg.path = final
	l.mu.Lock()
	l.segs = append(l.segs, sg)
	l.mu.Unlock()
	// The segment is durable and checked: free what it replaces.
	if err := punchHole(l.entries, start, end-start); err != nil {
		return fmt.Errorf("audit: seal: free entries.log range: %w", err)
	}
	for b := first / bundleEntries; b < last/bundleEntries; b++ {
		os.Remove(filepath.Join(l.dir, filepath.FromSlash(tilePath("entries", b, bundleEntries))))
	}
	return nil
}

// checkSegmentFile reads a segment file back and checks each entry
// against its leaf hash.
func checkSegmentFile(path string, first int64, leaves []tlog.Hash) error {
	sg, err := readSegment(path)
	if err != nil {
		return err
	}
	if sg.first != first || sg.count != int64(len(leaves)) {
		return fmt.Errorf("index says entries %d+%d, want %d+%d", sg.first, sg.count, first, len(leaves))
	}
	r, err := newSegmentReader()
	if err != nil {
		return err
	}
	defer r.Close()
	for i := first; i < first+sg.count; i += bundleEntries {
		es, err := r.bundle(sg, i/bundleEntries)
		if err != nil {
			return err
		}
		for j, e := range es {
			if tlog.RecordHash(e) != leaves[i-first+int64(j)] {
				return fmt.Errorf("entry %d differs from its leaf hash", i+int64(j))
			}
		}
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
