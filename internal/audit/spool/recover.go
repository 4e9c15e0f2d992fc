package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// Recovery from damaged segments (issue 25, "truncation on recovery").
//
// A record is framed by its length and CRC-32C, and its payload is the
// canonical JSON of an entry that names the spool's stream and its
// sequence number. Damage (a flipped bit, a zeroed block, bytes written by
// someone else) breaks the frame of one or more records, never the frames
// after them. So the spool never cuts a segment at the first bad record:
// it resynchronises. At each offset after the damage it looks for a frame
// whose length is in bounds, whose CRC matches, and whose payload parses as
// an entry of this stream with a sequence number above the last good one;
// the records from there on are kept and shipped, the damaged bytes are
// copied aside (damagedDir) and the loss is logged and recorded as an
// audit.entry_lost entry. The lost sequence numbers are never reused, so
// the server records the gap (audit.ingest.gap) as well.
//
// A false resynchronisation point inside an intact record is impossible:
// a length is at most auditentry.MaxSize, so a header starts with two zero
// bytes, which canonical JSON never contains (it escapes U+0000).
//
// Only a torn write at the end of the last segment found at Open (a header
// cut short, or fewer bytes than the header announces, and no intact
// record after it) is trimmed: the crash interrupted an append whose fsync
// never returned, so nothing in it was ever acknowledged to the writer.

// damagedDir is the subdirectory of the spool directory that keeps a copy
// of every segment found damaged. Nothing deletes it automatically.
const damagedDir = "damaged"

// minRecord bounds from below the size of a record (header and the
// smallest canonical entry of a stream, about 140 bytes), to bound how many
// sequence numbers a damaged run can have held.
const minRecord = 128

// span is an intact record of a segment.
type span struct {
	off, end int64
	seq      uint64
}

// damagedRun is a run of bytes in a segment holding no intact record.
type damagedRun struct {
	off, end int64
	// prev and next are the sequence numbers of the intact records around
	// the run (prev: the scan's lower bound when none; next: 0 when none).
	prev, next uint64
	// seen is the highest sequence number of the stream still readable in
	// the run (its JSON survived even if its frame did not), 0 if none.
	seen uint64
}

// scanned is what a segment holds.
type scanned struct {
	intact  []span
	damaged []damagedRun
	// torn is where a torn write at the end starts (only when scanned
	// with allowTorn), or the segment's length.
	torn int64
	// high is the highest sequence number the segment is known to have
	// held: intact, readable in a damaged run, or (for a run at the end
	// with nothing readable) one past the last intact record.
	high uint64
}

func (sc *scanned) damagedBytes() int64 {
	var n int64
	for _, d := range sc.damaged {
		n += d.end - d.off
	}
	return n
}

// scanSegment reads b, a segment of stream whose records have sequence
// numbers above after and, when below is not 0, below below. With
// allowTorn, a torn write at the end is reported in torn rather than as
// damage.
func scanSegment(b []byte, stream string, after, below uint64, allowTorn bool) scanned {
	sc := scanned{torn: int64(len(b)), high: after}
	last := after
	var off int64
	for off < int64(len(b)) {
		if end, seq, ok := frameAt(b, off, stream, last, below); ok {
			sc.intact = append(sc.intact, span{off: off, end: end, seq: seq})
			last, off = seq, end
			sc.high = max(sc.high, seq)
			continue
		}
		run := damagedRun{off: off, end: int64(len(b)), prev: last}
		for o := off + 1; o+recordHeader <= int64(len(b)); o++ {
			if b[o] != 0 || b[o+1] != 0 { // a length is below 1<<16
				continue
			}
			if _, seq, ok := frameAt(b, o, stream, last, below); ok {
				run.end, run.next = o, seq
				break
			}
		}
		if run.next == 0 && allowTorn && torn(b[off:]) {
			sc.torn = off
			break
		}
		run.seen = seenIn(b[run.off:run.end], stream, last, run)
		switch {
		case run.seen > 0:
			sc.high = max(sc.high, run.seen)
		case run.next == 0:
			// Nothing readable and nothing after: at least one entry
			// was there, whose number must not come back.
			sc.high = max(sc.high, last+1)
		}
		sc.damaged = append(sc.damaged, run)
		off = run.end
	}
	if below > 0 && sc.high >= below {
		sc.high = below - 1
	}
	return sc
}

// frameAt reports whether an intact record of stream with a sequence number
// above after (and below below, when not 0) starts at off, and where it ends.
func frameAt(b []byte, off int64, stream string, after, below uint64) (int64, uint64, bool) {
	if int64(len(b))-off < recordHeader {
		return 0, 0, false
	}
	n := int64(binary.BigEndian.Uint32(b[off:]))
	end := off + recordHeader + n
	if n == 0 || n > auditentry.MaxSize || end > int64(len(b)) {
		return 0, 0, false
	}
	p := b[off+recordHeader : end]
	if p[0] != '{' || p[n-1] != '}' || crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
		return 0, 0, false
	}
	e, err := auditentry.Parse(p)
	if err != nil || !belongs(e, stream, after, below) {
		return 0, 0, false
	}
	return end, e.Seq, true
}

func belongs(e *auditentry.Entry, stream string, after, below uint64) bool {
	return e.Stream == stream && e.Seq > after && (below == 0 || e.Seq < below)
}

// torn reports whether b, the rest of a segment from a bad record on, is
// an append cut short: a header cut short, or a header announcing more
// bytes than there are.
func torn(b []byte) bool {
	if len(b) < recordHeader {
		return true
	}
	n := int64(binary.BigEndian.Uint32(b))
	return n > 0 && n <= auditentry.MaxSize && recordHeader+n > int64(len(b))
}

// seenIn returns the highest sequence number of stream still readable in a
// damaged run b, between after and the run's plausible bounds, or 0. The
// canonical encoding writes "stream" and "seq" side by side, so a record
// whose frame is broken still says its number when that part survived.
// A flipped digit could make a number huge: a number is believed only
// below the next intact record, or within as many records as the run's
// bytes could hold.
func seenIn(b []byte, stream string, after uint64, run damagedRun) uint64 {
	limit := after + uint64(len(b))/minRecord + 1
	if run.next > 0 {
		limit = run.next - 1
	}
	pat := []byte(`"stream":"` + stream + `","seq":`)
	var seen uint64
	for i := bytes.Index(b, pat); i >= 0; {
		rest := b[i+len(pat):]
		j := 0
		for j < len(rest) && j < 20 && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if v, err := strconv.ParseUint(string(rest[:j]), 10, 64); err == nil && v > after && v <= limit {
			seen = max(seen, v)
		}
		k := bytes.Index(rest, pat)
		if k < 0 {
			break
		}
		i += len(pat) + k
	}
	return seen
}

// lostRange returns the sequence numbers run lost that the server does not
// hold (above acked), and whether the upper end is known. below is the
// scan's bound (the next segment's first number; 0 for the last segment).
func (run damagedRun) lostRange(acked, below uint64) (from, to uint64, known bool) {
	from = max(run.prev+1, acked+1)
	switch {
	case run.next > 0:
		to, known = run.next-1, true
	case below > 0:
		to, known = below-1, true
	case run.seen > 0:
		to, known = run.seen, true
	default:
		to = run.prev + 1 // at least one, how many is unknown
	}
	return from, to, known
}

// loss summarises what a damaged segment lost, for the log and the entry.
type loss struct {
	segment, copy string
	offset, bytes int64
	runs          int
	from, to      uint64 // 0, 0: none lost
	toKnown       bool
	count         uint64
}

func (sc *scanned) loss(segment, copyName string, acked, below uint64) loss {
	l := loss{segment: segment, copy: copyName, offset: sc.damaged[0].off, bytes: sc.damagedBytes(), runs: len(sc.damaged), toKnown: true}
	for _, run := range sc.damaged {
		from, to, known := run.lostRange(acked, below)
		if from > to {
			continue
		}
		if l.count == 0 || from < l.from {
			l.from = from
		}
		l.to = max(l.to, to)
		l.toKnown = l.toKnown && known
		l.count += to - from + 1
	}
	return l
}

func (l loss) String() string {
	lost := "no entry the server does not already hold was lost"
	switch {
	case l.count == 0:
	case !l.toKnown:
		lost = fmt.Sprintf("entries from %d on were lost (how many is unknown)", l.from)
	case l.from == l.to:
		lost = fmt.Sprintf("entry %d was lost", l.from)
	default:
		lost = fmt.Sprintf("entries %d to %d were lost", l.from, l.to)
	}
	kept := "the file was gone"
	if l.copy != "" {
		kept = "copy kept in " + l.copyPath("")
	}
	runs := "one damaged run"
	if l.runs > 1 {
		runs = strconv.Itoa(l.runs) + " damaged runs"
	}
	return fmt.Sprintf("spool segment %s damaged at offset %d (%d bytes in %s, %s): %s; the records after the damage are kept",
		l.segment, l.offset, l.bytes, runs, kept, lost)
}

// copyPath is where the copy of the damaged segment is, under dir ("":
// relative to the spool directory), or "" without one.
func (l loss) copyPath(dir string) string {
	if l.copy == "" {
		return ""
	}
	return filepath.Join(dir, damagedDir, l.copy)
}

// entry is the audit.entry_lost entry that tells the server.
func (l loss) entry(now time.Time) *auditentry.Entry {
	d := map[string]string{"segment": l.segment, "offset": strconv.FormatInt(l.offset, 10),
		"bytes": strconv.FormatInt(l.bytes, 10), "runs": strconv.Itoa(l.runs), "count": strconv.FormatUint(l.count, 10)}
	if l.copy != "" {
		d["copy"] = l.copyPath("")
	}
	if l.count > 0 {
		d["from"] = strconv.FormatUint(l.from, 10)
		if l.toKnown {
			d["to"] = strconv.FormatUint(l.to, 10)
		} else {
			d["count"] = "unknown"
		}
	}
	return &auditentry.Entry{V: auditentry.SchemaVersion, Time: now, Actor: auditentry.Actor{User: "rampart-spool"},
		Action: "audit.entry_lost", Outcome: auditentry.OutcomeFailure, Reason: auditentry.Clip(l.String()), Details: d}
}

// frame appends the record of an encoded entry to b.
func frame(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(data, castagnoli))
	return append(b, data...)
}

// streamOfSegments returns the stream ID named by the first intact record
// of the segments, or nil.
func (s *Spool) streamOfSegments() []byte {
	for _, sg := range s.segments {
		b, err := os.ReadFile(filepath.Join(s.cfg.Dir, sg.name()))
		if err != nil {
			continue
		}
		for off := int64(0); off+recordHeader <= int64(len(b)); off++ {
			if b[off] != 0 || b[off+1] != 0 {
				continue
			}
			n := int64(binary.BigEndian.Uint32(b[off:]))
			end := off + recordHeader + n
			if n == 0 || end > int64(len(b)) || crc32.Checksum(b[off+recordHeader:end], castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
				continue
			}
			if e, err := auditentry.Parse(b[off+recordHeader : end]); err == nil && isStreamID(e.Stream) {
				return []byte(e.Stream)
			}
		}
	}
	return nil
}

func isStreamID(id string) bool {
	_, err := hex.DecodeString(id)
	return len(id) == 32 && err == nil
}

// keepDamaged copies a damaged segment's bytes into damagedDir (0600,
// synced) and returns the copy's name.
func (s *Spool) keepDamaged(name string, b []byte) (string, error) {
	dir := filepath.Join(s.cfg.Dir, damagedDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	stamp := strings.ReplaceAll(s.cfg.Now().UTC().Format("20060102T150405.000000000Z"), ".", "")
	for i := 0; ; i++ {
		copyName := name + "." + stamp
		if i > 0 {
			copyName += "." + strconv.Itoa(i)
		}
		f, err := os.OpenFile(filepath.Join(dir, copyName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = syncDir(dir)
		}
		if err == nil {
			err = syncDir(s.cfg.Dir)
		}
		return copyName, err
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// intactBytes returns the intact records of b, in order.
func (sc *scanned) intactBytes(b []byte) []byte {
	var out []byte
	for _, r := range sc.intact {
		out = append(out, b[r.off:r.end]...)
	}
	return out
}

// errNoDamage: a segment reported damaged read back whole (the read error
// did not last).
var errNoDamage = errors.New("no damage found on a second read")

// repairLocked replaces segment seg, which holds damage, with its intact
// records, after keeping a copy of it, and records the loss; with s.wmu
// held (the writer appends to the last segment). atOpen: the spool is
// being opened (a torn write at the end of the last segment is trimmed).
func (s *Spool) repairLocked(seg segment, atOpen bool) error {
	s.mu.Lock()
	i := -1
	for j := range s.segments {
		if s.segments[j].first == seg.first {
			i = j
		}
	}
	if i < 0 {
		s.mu.Unlock()
		return fmt.Errorf("segment %s is gone", seg.name())
	}
	isLast := i == len(s.segments)-1
	size, written, acked := s.segments[i].size, s.written, s.acked
	// Every number in the segment is below the next segment's first, and
	// (once the spool runs) in the last one at most written.
	var below uint64
	switch {
	case !isLast:
		below = s.segments[i+1].first
	case !atOpen:
		below = written + 1
	}
	s.mu.Unlock()

	path := filepath.Join(s.cfg.Dir, seg.name())
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && size == 0:
		return s.replaceSegment(path, nil, false) // nothing was in it
	case errors.Is(err, fs.ErrNotExist):
		// Removed by someone: everything in it is lost (below).
	case err != nil:
		return err
	}
	// Past the recorded size is an append in progress or one that failed
	// (at Open the recorded size is the file's).
	b := raw[:min(int64(len(raw)), size)]
	sc := scanSegment(b, s.stream, seg.first-1, below, atOpen && isLast)
	if missing := size - int64(len(b)); missing > 0 {
		// Shorter than what was written and synced: cut by someone.
		run := damagedRun{off: int64(len(b)), end: size, prev: seg.first - 1}
		if len(sc.intact) > 0 {
			run.prev = sc.intact[len(sc.intact)-1].seq
		}
		if n := len(sc.damaged); n > 0 && sc.damaged[n-1].end == int64(len(b)) {
			run = sc.damaged[n-1]
			run.end = size
			sc.damaged = sc.damaged[:n-1]
		}
		sc.damaged = append(sc.damaged, run)
		if sc.high = max(sc.high, run.prev+1); below > 0 && sc.high >= below {
			sc.high = below - 1
		}
	}
	if len(sc.damaged) == 0 && sc.torn == int64(len(b)) {
		return errNoDamage
	}
	var lostEntry *auditentry.Entry
	content := b[:sc.torn]
	if len(sc.damaged) > 0 {
		var copyName string
		if len(raw) > 0 {
			if copyName, err = s.keepDamaged(seg.name(), raw); err != nil {
				return fmt.Errorf("keeping a copy of damaged segment %s: %w", seg.name(), err)
			}
		}
		l := sc.loss(seg.name(), copyName, acked, below)
		s.cfg.Log.Error("audit spool: damaged segment; the records after the damage are kept and shipped, the damaged bytes are kept aside",
			"segment", seg.name(), "offset", l.offset, "bytes", l.bytes, "runs", l.runs, "lost_from", l.from, "lost_to", l.to,
			"lost_to_known", l.toKnown, "lost", l.count, "copy", l.copyPath(s.cfg.Dir))
		lostEntry = l.entry(s.cfg.Now())
		content = sc.intactBytes(b)
	} else {
		s.cfg.Log.Warn("audit spool: cutting off a torn write at the end (an append the crash interrupted before its fsync)",
			"segment", seg.name(), "offset", sc.torn, "bytes", int64(len(b))-sc.torn)
	}
	if isLast {
		// Numbers never go back: the loss record takes the number after
		// every one the segment is known to have held, and goes in the
		// same atomic rewrite, so a crash cannot forget the loss.
		next := max(written, acked, sc.high)
		if lostEntry != nil {
			next++
			lostEntry.Stream, lostEntry.Seq = s.stream, next
			data, err := lostEntry.Marshal()
			if err != nil {
				return err
			}
			content = frame(content, data)
		}
		if err := s.replaceSegment(path, content, lostEntry == nil && atOpen); err != nil {
			return err
		}
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
		s.mu.Lock()
		s.setSizeLocked(seg.first, int64(len(content)))
		s.written = max(s.written, next)
		s.cond.Broadcast()
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return nil
	}
	// An earlier segment: the loss is recorded (durably, in the last
	// segment) before the damage is removed from this one. A crash
	// between records it twice, never not at all.
	s.writeLocked([]*auditentry.Entry{lostEntry}, false)
	if err := s.replaceSegment(path, content, false); err != nil {
		return err
	}
	s.mu.Lock()
	s.setSizeLocked(seg.first, int64(len(content)))
	s.mu.Unlock()
	return nil
}

// replaceSegment writes content as the segment at path: by truncating when
// it is a prefix (a torn tail), else by an atomic replacement.
func (s *Spool) replaceSegment(path string, content []byte, prefix bool) error {
	if prefix {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		err = f.Truncate(int64(len(content)))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return atomicfile.Write(path, content, 0o600)
}

func (s *Spool) setSizeLocked(first uint64, size int64) {
	for j := range s.segments {
		if s.segments[j].first == first {
			s.bytes += size - s.segments[j].size
			s.segments[j].size = size
		}
	}
}
