package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is the height of the log's C2SP tiles (256 hashes wide).
const tileHeight = 8

// maxTileLevel is the highest tile level accepted: level 6 tiles already
// span 2^56 entries each.
const maxTileLevel = 6

// tileRef is a parsed tile path: a hash tile at a level, or an entry
// bundle (entries true).
type tileRef struct {
	entries bool
	level   int
	n       int64 // tile index at its level
	w       int   // width: 1 to 256
}

// first is the index of the first entry the tile covers.
func (t tileRef) first() int64 {
	if t.entries {
		return t.n * bundleEntries
	}
	return t.n << (tileHeight * (t.level + 1))
}

// end is the index after the last entry the tile covers.
func (t tileRef) end() int64 {
	if t.entries {
		return t.first() + int64(t.w)
	}
	return t.first() + int64(t.w)<<(tileHeight*t.level)
}

func (t tileRef) path() string {
	kind := "entries"
	if !t.entries {
		kind = strconv.Itoa(t.level)
	}
	return tilePath(kind, t.n, t.w)
}

func (t tileRef) String() string {
	kind := "entry bundle"
	if !t.entries {
		kind = fmt.Sprintf("level-%d hash tile", t.level)
	}
	return fmt.Sprintf("%s %d (width %d, entries %d to %d)", kind, t.n, t.w, t.first(), t.end()-1)
}

// parseTilePath reads a C2SP tlog-tiles path as tilePath writes it:
// tile/L/N[.p/W] or tile/entries/N[.p/W], N in three-digit groups with
// all but the last prefixed "x". Only the canonical spelling is accepted
// (the path tilePath gives back), so one tile has one name.
func parseTilePath(p string) (tileRef, error) {
	bad := func(why string) (tileRef, error) { return tileRef{}, fmt.Errorf("audit: tile path %q: %s", p, why) }
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return bad("not under tile/")
	}
	kind, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no tile index")
	}
	var t tileRef
	if kind == "entries" {
		t.entries = true
	} else {
		l, err := strconv.Atoi(kind)
		if err != nil || l < 0 || l > maxTileLevel {
			return bad(fmt.Sprintf("level %q: want entries or 0 to %d", kind, maxTileLevel))
		}
		t.level = l
	}
	t.w = 256
	if idx, w, ok := strings.Cut(rest, ".p/"); ok {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 || n > 255 {
			return bad(fmt.Sprintf("partial width %q: want 1 to 255", w))
		}
		t.w, rest = n, idx
	}
	groups := strings.Split(rest, "/")
	for i, g := range groups {
		if i < len(groups)-1 {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return bad("want x before every group but the last")
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return bad("want groups of three digits")
		}
		if t.n > (1<<62)/1000 {
			return bad("tile index too large")
		}
		d, _ := strconv.Atoi(g)
		t.n = t.n*1000 + int64(d)
	}
	// The entries a tile covers must be countable in an int64.
	limit := int64(1<<62) / bundleEntries
	if !t.entries {
		limit = int64(1<<62) >> (tileHeight * (t.level + 1))
	}
	if t.n > limit {
		return bad("tile index too large")
	}
	if t.path() != p {
		return bad("not the canonical spelling " + t.path())
	}
	return t, nil
}

// verifyTiles checks every tile under dir/tile against the tree re-derived
// from the entries (the first rep.Entries), and that a client reading the
// log at tree size newest (a checkpoint the entries produce) finds every
// tile it needs. A tile that differs from the entries but matches what
// hashes.bin recorded (recorded, nil without it) is not at fault: the
// entries are, and are reported as such.
func verifyTiles(dir string, rep *Report, tree *memHashes, recorded tlog.HashReader, sealed, newest int64) error {
	root := filepath.Join(dir, "tile")
	seen := map[string]bool{}
	type beyond struct {
		t    tileRef
		rel  string
		data []byte
	}
	var past []beyond
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked (a full tile replaced its partials)
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") { // atomicfile's temporary files
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		t, err := parseTilePath(rel)
		if err != nil {
			rep.Warnings = append(rep.Warnings, Problem{Index: -1, Kind: "tile", Path: rel, Detail: "not a tile this log writes; not checked"})
			return nil
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		seen[rel] = true
		if t.end() > rep.Entries {
			past = append(past, beyond{t, rel, data}) // appended since the pass began, or cut from the log
			return nil
		}
		if t.entries {
			rep.Bundles++
			checkBundle(rep, tree, recorded, t, rel, data)
		} else {
			rep.Tiles++
			checkHashTile(rep, tree, recorded, t, rel, data)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tiles: %w", err)
	}
	// A tile past the entries read was either written for entries
	// appended since the pass began (the log holds them now: not
	// checked), or holds entries the log no longer has: it was rolled
	// back, or a write was torn after its tiles were written. That is
	// evidence, and a warning.
	now, cerr := Count(dir)
	for _, b := range past {
		if cerr == nil && b.t.end() <= now {
			rep.TilesBeyond++
			continue
		}
		rep.TilesPastEnd++
		rep.Warnings = append(rep.Warnings, Problem{Index: b.t.first(), Kind: "tile", Path: b.rel, Detail: pastEnd(b.t, b.data, max(rep.Entries, now))})
	}
	// What a client reading the newest checkpoint needs: every hash tile
	// of that tree (a partial one, or the full tile that replaced it) and
	// the entry bundles not yet sealed.
	var has func(t tileRef) bool
	has = func(t tileRef) bool {
		if seen[t.path()] {
			return true
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(t.path()))); err == nil {
			return true
		}
		if t.w < 256 {
			t.w = 256
			return has(t)
		}
		return false
	}
	missing := func(t tileRef) {
		rep.Problems = append(rep.Problems, Problem{Index: t.first(), Kind: "tile", Path: t.path(),
			Detail: fmt.Sprintf("%s is missing: a client reading the log at tree size %d cannot fetch it", t, newest)})
	}
	for _, tt := range tlog.NewTiles(tileHeight, 0, newest) {
		if t := (tileRef{level: tt.L, n: tt.N, w: tt.W}); !has(t) {
			missing(t)
		}
	}
	// Sealing deletes the bundles it compresses: on a live log, what is
	// sealed now counts, not what was when the pass began.
	if now, err := sealedEnd(dir); err == nil {
		sealed = max(sealed, now)
	}
	for b := sealed / bundleEntries; b*bundleEntries < newest; b++ {
		t := tileRef{entries: true, n: b, w: int(min(bundleEntries, newest-b*bundleEntries))}
		if b*bundleEntries+bundleEntries <= sealed {
			continue // a sealed bundle lives in its segment
		}
		if !has(t) {
			missing(t)
		}
	}
	return nil
}

// pastEnd says what a tile reaching past the end of a log of n entries
// holds: for an entry bundle, the entries the log does not have.
func pastEnd(t tileRef, data []byte, n int64) string {
	from := max(t.first(), n)
	msg := fmt.Sprintf("%s reaches past the end of the log (%d entries): it was written for entries %d to %d, which the log does not hold; "+
		"the log was rolled back or cut after they were written (compare with a witness's checkpoints)", t, n, from, t.end()-1)
	if !t.entries {
		return msg
	}
	es, err := parseBundle(data, t.w)
	if err != nil {
		return msg + fmt.Sprintf("; the bundle does not read (%v)", err)
	}
	var held []string
	for j := from - t.first(); j < int64(len(es)); j++ {
		if len(held) == 5 {
			held = append(held, fmt.Sprintf("and %d more", int64(len(es))-j))
			break
		}
		e, err := ParseEntry(es[j])
		if err != nil {
			held = append(held, fmt.Sprintf("%d: unreadable (%v)", t.first()+j, err))
			continue
		}
		held = append(held, fmt.Sprintf("%d: %s %s by %s at %s", t.first()+j, e.Action, e.Outcome, actorString(e.Actor), e.Time.UTC().Format(time.RFC3339Nano)))
	}
	return msg + "; it holds " + strings.Join(held, "; ")
}

func actorString(a Actor) string {
	switch {
	case a.SpiffeID != "" && a.User != "":
		return a.User + " via " + a.SpiffeID
	case a.SpiffeID != "":
		return a.SpiffeID
	}
	return a.User
}

func checkHashTile(rep *Report, tree *memHashes, recorded tlog.HashReader, t tileRef, rel string, data []byte) {
	tt := tlog.Tile{H: tileHeight, L: t.level, N: t.n, W: t.w}
	want, err := tlog.ReadTileData(tt, tree)
	if err != nil {
		rep.Problems = append(rep.Problems, Problem{Index: t.first(), Kind: "tile", Path: rel, Detail: fmt.Sprintf("%s: %v", t, err)})
		return
	}
	if bytes.Equal(data, want) {
		return
	}
	if recorded != nil {
		if rec, err := tlog.ReadTileData(tt, recorded); err == nil && bytes.Equal(data, rec) {
			return // the entries changed, not the tile
		}
	}
	if len(data) != len(want) {
		rep.Problems = append(rep.Problems, Problem{Index: t.first(), Kind: "tile", Path: rel,
			Detail: fmt.Sprintf("%s has %d bytes, want %d: clients reading tiles cannot check entries against it", t, len(data), len(want))})
		return
	}
	j := 0
	for bytes.Equal(data[j*tlog.HashSize:(j+1)*tlog.HashSize], want[j*tlog.HashSize:(j+1)*tlog.HashSize]) {
		j++
	}
	rep.Problems = append(rep.Problems, Problem{Index: t.first() + int64(j)<<(tileHeight*t.level), Kind: "tile", Path: rel,
		Detail: fmt.Sprintf("%s disagrees with the entries: its hash %d is not the one they produce (clients reading tiles see another tree)", t, j)})
}

func checkBundle(rep *Report, tree *memHashes, recorded tlog.HashReader, t tileRef, rel string, data []byte) {
	es, err := parseBundle(data, t.w)
	if err != nil {
		rep.Problems = append(rep.Problems, Problem{Index: t.first(), Kind: "tile", Path: rel, Detail: fmt.Sprintf("%s: %v", t, err)})
		return
	}
	for j, e := range es {
		i := t.first() + int64(j)
		leaf, err := tree.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Index: i, Kind: "tile", Path: rel, Detail: fmt.Sprintf("%s: %v", t, err)})
			return
		}
		if h := tlog.RecordHash(e); h != leaf[0] {
			if recorded != nil {
				if rec, err := recorded.ReadHashes([]int64{tlog.StoredHashIndex(0, i)}); err == nil && rec[0] == h {
					continue // the entries changed, not the bundle
				}
			}
			rep.Problems = append(rep.Problems, Problem{Index: i, Kind: "tile", Path: rel,
				Detail: fmt.Sprintf("%s disagrees with the entries: entry %d in it is not the log's entry %d", t, j, i)})
			return
		}
	}
}

// fileHashes reads stored hashes from a hashes.bin.
type fileHashes struct{ f io.ReaderAt }

func (r fileHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if _, err := r.f.ReadAt(out[i][:], idx*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("audit: read hash %d: %w", idx, err)
		}
	}
	return out, nil
}
