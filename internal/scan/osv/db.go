package osv

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// Limits on what an import reads: a zip bomb or a runaway directory is
// refused, not half-loaded.
const (
	MaxRecords     = 1 << 20
	MaxImportBytes = 4 << 30
)

// Meta says what a database holds and where it came from.
type Meta struct {
	Format     string    `json:"format"`
	Source     string    `json:"source"`      // what was imported (a path, a module version)
	ImportedAt time.Time `json:"imported_at"` // when
	Records    int       `json:"records"`
	Digest     string    `json:"digest"` // SHA-256 over the records, by id
}

// FileFormat names the local database file's layout.
const FileFormat = "rampart-osv-db/1"

// Entry is a record with the bytes it was read from (kept so that a copy
// is byte-identical).
type Entry struct {
	Raw    []byte
	Record *Record
}

// Source answers which records name a package.
type Source interface {
	// Lookup returns the records with an affected entry for the package
	// name in the ecosystem (as NormalizeEcosystem spells it).
	Lookup(ecosystem, name string) ([]*Record, error)
	Meta() Meta
}

// NormalizeEcosystem spells an ecosystem the way the index keys it: Ubuntu's
// ":LTS" and ":Pro" qualifiers are dropped (the release decides), the rest
// is kept.
func NormalizeEcosystem(eco string) string {
	if BaseEcosystem(eco) == Ubuntu {
		parts := strings.Split(eco, ":")
		if len(parts) > 2 {
			parts = parts[:2]
		}
		return strings.Join(parts, ":")
	}
	return eco
}

func key(eco, name string) string { return NormalizeEcosystem(eco) + "\x00" + name }

// ReadDir reads every *.json file under dir as one OSV record.
func ReadDir(dir string) ([]Entry, error) {
	var out []Entry
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".json") {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("osv: %s is not a regular file", p)
		}
		if len(out) >= MaxRecords {
			return fmt.Errorf("osv: more than %d records", MaxRecords)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxRecordSize+1))
		if err != nil {
			return err
		}
		if total += int64(len(b)); total > MaxImportBytes {
			return fmt.Errorf("osv: more than %d bytes of records", int64(MaxImportBytes))
		}
		r, err := Parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, Entry{Raw: b, Record: r})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("osv: read %s: %w", dir, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("osv: %s holds no OSV records (*.json)", dir)
	}
	return out, nil
}

// ReadZip reads every *.json member of a zip archive (osv.dev publishes
// each ecosystem as one) as one OSV record.
func ReadZip(r io.ReaderAt, size int64, name string) ([]Entry, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("osv: %s: not a zip archive: %w", name, err)
	}
	if len(zr.File) > MaxRecords {
		return nil, fmt.Errorf("osv: %s: more than %d members", name, MaxRecords)
	}
	var out []Entry
	var total int64
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || !strings.HasSuffix(f.Name, ".json") {
			continue
		}
		if f.UncompressedSize64 > MaxRecordSize {
			return nil, fmt.Errorf("osv: %s: %s: record of %d bytes is larger than the %d allowed", name, f.Name, f.UncompressedSize64, MaxRecordSize)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("osv: %s: %s: %w", name, f.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, MaxRecordSize+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("osv: %s: %s: %w", name, f.Name, err)
		}
		if total += int64(len(b)); total > MaxImportBytes {
			return nil, fmt.Errorf("osv: %s: more than %d bytes of records", name, int64(MaxImportBytes))
		}
		rec, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("osv: %s: %s: %w", name, f.Name, err)
		}
		out = append(out, Entry{Raw: b, Record: rec})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("osv: %s holds no OSV records (*.json)", name)
	}
	return out, nil
}

// ReadPath reads a directory or a zip archive of OSV records.
func ReadPath(p string) ([]Entry, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("osv: %w", err)
	}
	if st.IsDir() {
		return ReadDir(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("osv: %w", err)
	}
	defer f.Close()
	return ReadZip(f, st.Size(), p)
}

// Dedupe keeps one entry per id, the most recently modified, and sorts by
// id.
func Dedupe(entries []Entry) []Entry {
	byID := map[string]Entry{}
	for _, e := range entries {
		if old, ok := byID[e.Record.ID]; !ok || e.Record.Modified.After(old.Record.Modified) {
			byID[e.Record.ID] = e
		}
	}
	out := make([]Entry, 0, len(byID))
	for _, e := range byID {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Record.ID, b.Record.ID) })
	return out
}

// Digest is the SHA-256 over the records' bytes in id order.
func Digest(entries []Entry) string {
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%s %d\n", e.Record.ID, len(e.Raw))
		h.Write(e.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Index is an in-memory Source.
type Index struct {
	meta  Meta
	byPkg map[string][]*Record
}

// NewIndex indexes records.
func NewIndex(meta Meta, recs []*Record) *Index {
	ix := &Index{meta: meta, byPkg: map[string][]*Record{}}
	for _, r := range recs {
		for _, k := range packageKeys(r) {
			ix.byPkg[k] = append(ix.byPkg[k], r)
		}
	}
	return ix
}

func packageKeys(r *Record) []string {
	var ks []string
	for _, a := range r.Affected {
		if a.Package.Name == "" {
			continue
		}
		if k := key(a.Package.Ecosystem, a.Package.Name); !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// Lookup implements Source.
func (ix *Index) Lookup(eco, name string) ([]*Record, error) { return ix.byPkg[key(eco, name)], nil }

// Meta implements Source.
func (ix *Index) Meta() Meta { return ix.meta }

// WriteFile writes entries as a local database file (a zip: meta.json,
// index.json and one member per record), atomically, mode 0644: the
// records are public.
func WriteFile(file string, meta Meta, entries []Entry) error {
	entries = Dedupe(entries)
	meta.Format, meta.Records, meta.Digest = FileFormat, len(entries), Digest(entries)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	index := map[string][]string{}
	for _, e := range entries {
		for _, k := range packageKeys(e.Record) {
			index[k] = append(index[k], e.Record.ID)
		}
	}
	put := func(name string, b []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: meta.ImportedAt})
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	mb, _ := json.Marshal(meta)
	ib, _ := json.Marshal(index)
	if err := put("meta.json", mb); err != nil {
		return fmt.Errorf("osv: write %s: %w", file, err)
	}
	if err := put("index.json", ib); err != nil {
		return fmt.Errorf("osv: write %s: %w", file, err)
	}
	for _, e := range entries {
		if err := put("records/"+e.Record.ID+".json", e.Raw); err != nil {
			return fmt.Errorf("osv: write %s: %w", file, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("osv: write %s: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("osv: %w", err)
	}
	return atomicfile.Write(file, buf.Bytes(), 0o644)
}

// File is a local database file, read lazily: only the records of the
// packages looked up are decoded.
type File struct {
	f     *os.File
	zr    *zip.Reader
	meta  Meta
	index map[string][]string
	files map[string]*zip.File

	mu    sync.Mutex
	cache map[string]*Record
}

// OpenFile opens a local database file written by WriteFile.
func OpenFile(file string) (*File, error) {
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("osv: no vulnerability database at %s: import one with 'rampart scan db import DIR|ZIP'", file)
		}
		return nil, fmt.Errorf("osv: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("osv: %w", err)
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("osv: %s is not a Rampart vulnerability database: %w", file, err)
	}
	db := &File{f: f, zr: zr, files: map[string]*zip.File{}, cache: map[string]*Record{}}
	for _, m := range zr.File {
		db.files[m.Name] = m
	}
	if err := db.readJSON("meta.json", &db.meta); err != nil {
		f.Close()
		return nil, fmt.Errorf("osv: %s: %w", file, err)
	}
	if db.meta.Format != FileFormat {
		f.Close()
		return nil, fmt.Errorf("osv: %s: format %q, want %q", file, db.meta.Format, FileFormat)
	}
	if err := db.readJSON("index.json", &db.index); err != nil {
		f.Close()
		return nil, fmt.Errorf("osv: %s: %w", file, err)
	}
	return db, nil
}

func (db *File) readJSON(name string, v any) error {
	b, err := db.read(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (db *File) read(name string) ([]byte, error) {
	m, ok := db.files[name]
	if !ok {
		return nil, fmt.Errorf("no member %s", name)
	}
	rc, err := m.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<20))
}

// Close releases the file.
func (db *File) Close() error { return db.f.Close() }

// Meta implements Source.
func (db *File) Meta() Meta { return db.meta }

// Lookup implements Source.
func (db *File) Lookup(eco, name string) ([]*Record, error) {
	ids := db.index[key(eco, name)]
	out := make([]*Record, 0, len(ids))
	for _, id := range ids {
		r, err := db.Record(id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Record returns one record by id.
func (db *File) Record(id string) (*Record, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if r, ok := db.cache[id]; ok {
		return r, nil
	}
	b, err := db.read(path.Join("records", id+".json"))
	if err != nil {
		return nil, fmt.Errorf("osv: database: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("osv: database: %w", err)
	}
	db.cache[id] = r
	return r, nil
}

// Entries returns every record of the file, in id order.
func (db *File) Entries() ([]Entry, error) {
	var names []string
	for n := range db.files {
		if strings.HasPrefix(n, "records/") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		b, err := db.read(n)
		if err != nil {
			return nil, fmt.Errorf("osv: database: %w", err)
		}
		r, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("osv: database: %s: %w", n, err)
		}
		out = append(out, Entry{Raw: b, Record: r})
	}
	return out, nil
}

// Zip packs entries as a zip of ID.json files (the layout osv.dev
// publishes), to send to a server.
func Zip(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.Create(e.Record.ID + ".json")
		if err != nil {
			return nil, fmt.Errorf("osv: %w", err)
		}
		if _, err := w.Write(e.Raw); err != nil {
			return nil, fmt.Errorf("osv: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("osv: %w", err)
	}
	return buf.Bytes(), nil
}
