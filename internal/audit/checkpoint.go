package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// Checkpoint is a parsed, signature-verified checkpoint.
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   tlog.Hash
	Raw    []byte // the signed note
}

// checkpointText is the C2SP tlog-checkpoint body.
func checkpointText(origin string, size int64, h tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(h[:]))
}

// Checkpoint signs a checkpoint of the current tree with signer, publishes
// it (DIR/checkpoint and DIR/checkpoints/SIZE), writes the C2SP tiles for the
// entries added since the last checkpoint, and returns the signed note.
// Checkpoints are signed one at a time, so the published one never goes
// back to a smaller tree.
func (l *Log) Checkpoint(signer note.Signer) ([]byte, error) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	return l.checkpointLocked(signer)
}

// checkpointLocked is Checkpoint; the caller holds cpMu.
func (l *Log) checkpointLocked(signer note.Signer) ([]byte, error) {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	size := l.size
	h, err := tlog.TreeHash(size, l.hashReader())
	if err == nil {
		// The checkpoint vouches for the stored hashes up to size: they
		// must be on disk first (Open trusts them up to here).
		err = l.syncDerived()
	}
	l.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if err := l.writeTiles(min(l.checkpointedSize(), size), size); err != nil {
		return nil, err
	}
	signed, err := note.Sign(&note.Note{Text: checkpointText(l.origin, size, h)}, signer)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(l.dir, "checkpoints", strconv.FormatInt(size, 10)), signed, 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(l.dir, "checkpoint"), signed, 0o644); err != nil {
		return nil, err
	}
	return signed, nil
}

// ParseCheckpoint verifies a signed checkpoint with verifier and parses it.
func ParseCheckpoint(raw []byte, verifier note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, errors.New("audit: checkpoint: want origin, size and hash lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return nil, fmt.Errorf("audit: checkpoint: bad size %q", lines[1])
	}
	hb, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(hb) != tlog.HashSize {
		return nil, fmt.Errorf("audit: checkpoint: bad hash %q", lines[2])
	}
	c := &Checkpoint{Origin: lines[0], Size: size, Raw: bytes.Clone(raw)}
	copy(c.Hash[:], hb)
	return c, nil
}

// tilePath is a C2SP tlog-tiles path: N in three-digit groups, the leading
// ones prefixed "x"; ".p/W" for a partial tile of width W.
func tilePath(kind string, n int64, w int) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	p := "tile/" + kind + "/" + s
	if w < 256 {
		p += fmt.Sprintf(".p/%d", w)
	}
	return p
}

// writeTiles writes the hash tiles and entry bundles that changed between
// tree sizes old and size.
func (l *Log) writeTiles(old, size int64) error {
	if size == 0 {
		return nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, t := range tlog.NewTiles(8, old, size) {
		data, err := tlog.ReadTileData(t, l.hashReader())
		if err != nil {
			return fmt.Errorf("audit: tile: %w", err)
		}
		if err := l.writePublic(tilePath(strconv.Itoa(t.L), t.N, t.W), data); err != nil {
			return err
		}
		if t.W == 256 {
			l.removePartials(tilePath(strconv.Itoa(t.L), t.N, t.W))
		}
	}
	for b := old / 256; b*256 < size; b++ {
		end := min(size, b*256+256)
		var buf []byte
		for i := b * 256; i < end; i++ {
			e, err := l.entryLocked(i)
			if err != nil {
				return err
			}
			buf = append(buf, byte(len(e)>>8), byte(len(e)))
			buf = append(buf, e...)
		}
		if err := l.writePublic(tilePath("entries", b, int(end-b*256)), buf); err != nil {
			return err
		}
		if end-b*256 == 256 {
			l.removePartials(tilePath("entries", b, 256))
		}
	}
	return nil
}

// removePartials deletes the partial tiles a full tile supersedes (C2SP
// tlog-tiles lets logs delete them), so checkpoints every few seconds do
// not leave a partial tile each behind for years.
func (l *Log) removePartials(full string) {
	os.RemoveAll(filepath.Join(l.dir, filepath.FromSlash(full)+".p"))
}

func (l *Log) writePublic(rel string, data []byte) error {
	p := filepath.Join(l.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(p, data, 0o644)
}
