package store

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Snapshots for backups (package backup).
//
// SQLite: VACUUM INTO copies the database, as one read transaction, into a
// new file: a consistent, compact, directly usable database file that the
// sqlite3 shell opens. It runs on a connection of its own (WAL lets it read
// while the server writes), so the server's one connection is not held.
//
// PostgreSQL: one REPEATABLE READ, READ ONLY transaction (every table read
// from the same snapshot) exports every table of the store's schema as a
// dump (format below), which LoadPostgresDump loads into an empty schema.
//
// Dump format "rampart-store-dump" version 1, JSON lines (one JSON value
// per line, UTF-8):
//
//	{"format":"rampart-store-dump","version":1,"backend":"postgres","schema_version":5}
//	{"table":"agents","columns":[["spiffe_id","text"],["evicted","bool"],...]}
//	["spiffe://example.org/agent/a",false,...]      one line per row
//	{"end":"agents","rows":1}
//	...                                             every table, by name
//	{"end_dump":true,"tables":13}
//
// Column types: "text" (a JSON string), "bytes" (standard base64 in a JSON
// string), "int" (a JSON integer, 64-bit), "bool"; null for SQL NULL.
// schema_version is not dumped: it is the header's schema_version, and the
// loader runs the migrations up to it before loading the rows.

// SnapshotInfo describes a snapshot: what made it and how many rows each
// table held.
type SnapshotInfo struct {
	Backend       string           `json:"backend"` // "sqlite" or "postgres"
	SchemaVersion int              `json:"schema_version"`
	Tables        map[string]int64 `json:"tables"` // rows per table
}

// Snapshotter is implemented by both stores.
type Snapshotter interface {
	// Snapshot writes a consistent copy of the store to w: a SQLite
	// database file, or a PostgreSQL dump. scratch is a private directory
	// for temporary files.
	Snapshot(ctx context.Context, scratch string, w io.Writer) (SnapshotInfo, error)
	// Counts reads the schema version and the rows per table now.
	Counts(ctx context.Context) (SnapshotInfo, error)
}

var _ Snapshotter = (*sqlStore)(nil)

const dumpFormat = "rampart-store-dump"

// DumpVersion is the version of the dump format this program writes and
// reads.
const DumpVersion = 1

// maxDumpLine bounds one line of a dump (a row): a policy source or a
// wrapped key is kilobytes; 64 MiB is far beyond any row we write.
const maxDumpLine = 64 << 20

// Snapshot implements Snapshotter.
func (s *sqlStore) Snapshot(ctx context.Context, scratch string, w io.Writer) (SnapshotInfo, error) {
	var info SnapshotInfo
	var err error
	if s.d.name == "sqlite" {
		info, err = s.snapshotSQLite(ctx, scratch, w)
	} else {
		info, err = s.dumpPostgres(ctx, w)
	}
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("store: %s: snapshot: %w", s.d.name, err)
	}
	return info, nil
}

func (s *sqlStore) snapshotSQLite(ctx context.Context, scratch string, w io.Writer) (SnapshotInfo, error) {
	var seq int
	var name, path string
	if err := s.db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &path); err != nil {
		return SnapshotInfo{}, err
	}
	if path == "" {
		return SnapshotInfo{}, errors.New("an in-memory database has no file to copy")
	}
	tmp, err := os.MkdirTemp(scratch, "store-")
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "rampart.db")
	// VACUUM INTO accepts an empty file: creating it first gives it 0600.
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return SnapshotInfo{}, err
	}
	f.Close()
	src, err := sql.Open("sqlite", path+"?"+sqlitePragmas)
	if err != nil {
		return SnapshotInfo{}, err
	}
	_, err = src.ExecContext(ctx, `VACUUM INTO ?`, out)
	src.Close()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("vacuum into %s: %w", out, err)
	}
	cp, err := sql.Open("sqlite", out+"?_pragma=query_only(1)")
	if err != nil {
		return SnapshotInfo{}, err
	}
	info, err := counts(ctx, cp, dialect{name: "sqlite"})
	cp.Close()
	if err != nil {
		return SnapshotInfo{}, err
	}
	f, err = os.Open(out)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return SnapshotInfo{}, err
	}
	return info, nil
}

// Counts implements Snapshotter.
func (s *sqlStore) Counts(ctx context.Context) (SnapshotInfo, error) {
	info, err := counts(ctx, s.db, s.d)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("store: %s: count rows: %w", s.d.name, err)
	}
	return info, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func counts(ctx context.Context, db queryer, d dialect) (SnapshotInfo, error) {
	info := SnapshotInfo{Backend: d.name, Tables: map[string]int64{}}
	tables, err := tableNames(ctx, db, d)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&info.SchemaVersion); err != nil {
		return SnapshotInfo{}, fmt.Errorf("schema version: %w", err)
	}
	for _, t := range tables {
		if t == "schema_version" {
			continue
		}
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(t)).Scan(&n); err != nil {
			return SnapshotInfo{}, fmt.Errorf("count %s: %w", t, err)
		}
		info.Tables[t] = n
	}
	return info, nil
}

// tableNames lists the store's tables, sorted.
func tableNames(ctx context.Context, db queryer, d dialect) ([]string, error) {
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`
	if d.name == "postgres" {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, rows.Err()
}

// quoteIdent quotes a table or column name (both dialects use "").
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

type dumpHeader struct {
	Format        string `json:"format"`
	Version       int    `json:"version"`
	Backend       string `json:"backend"`
	SchemaVersion int    `json:"schema_version"`
}

type dumpTable struct {
	Table   string      `json:"table"`
	Columns [][2]string `json:"columns"`
}

type dumpEnd struct {
	End  string `json:"end"`
	Rows int64  `json:"rows"`
}

type dumpTrailer struct {
	EndDump bool `json:"end_dump"`
	Tables  int  `json:"tables"`
}

// columnKind maps a PostgreSQL data type to a dump column type.
func columnKind(pgType string) (string, bool) {
	switch pgType {
	case "text", "character varying":
		return "text", true
	case "bytea":
		return "bytes", true
	case "bigint", "integer", "smallint":
		return "int", true
	case "boolean":
		return "bool", true
	}
	return "", false
}

func (s *sqlStore) dumpPostgres(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer tx.Rollback()
	info, err := counts(ctx, tx, s.d)
	if err != nil {
		return SnapshotInfo{}, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(dumpHeader{Format: dumpFormat, Version: DumpVersion, Backend: s.d.name, SchemaVersion: info.SchemaVersion}); err != nil {
		return SnapshotInfo{}, err
	}
	tables := slices.Sorted(func(yield func(string) bool) {
		for t := range info.Tables {
			if !yield(t) {
				return
			}
		}
	})
	for _, t := range tables {
		n, err := dumpTableRows(ctx, tx, t, enc)
		if err != nil {
			return SnapshotInfo{}, fmt.Errorf("table %s: %w", t, err)
		}
		if n != info.Tables[t] {
			// One snapshot: the count and the rows cannot disagree.
			return SnapshotInfo{}, fmt.Errorf("table %s: counted %d rows, exported %d", t, info.Tables[t], n)
		}
	}
	if err := enc.Encode(dumpTrailer{EndDump: true, Tables: len(tables)}); err != nil {
		return SnapshotInfo{}, err
	}
	if err := bw.Flush(); err != nil {
		return SnapshotInfo{}, err
	}
	return info, nil
}

func dumpTableRows(ctx context.Context, tx *sql.Tx, table string, enc *json.Encoder) (int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return 0, err
	}
	var cols [][2]string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return 0, err
		}
		kind, ok := columnKind(typ)
		if !ok {
			rows.Close()
			return 0, fmt.Errorf("column %s has type %s, which the dump format does not carry", name, typ)
		}
		cols = append(cols, [2]string{name, kind})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := enc.Encode(dumpTable{Table: table, Columns: cols}); err != nil {
		return 0, err
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(c[0])
	}
	rows, err = tx.QueryContext(ctx, `SELECT `+strings.Join(names, ", ")+` FROM `+quoteIdent(table))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	out := make([]any, len(cols))
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
		for i, v := range vals {
			out[i], err = dumpValue(cols[i], v)
			if err != nil {
				return 0, err
			}
		}
		if err := enc.Encode(out); err != nil {
			return 0, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return n, enc.Encode(dumpEnd{End: table, Rows: n})
}

func dumpValue(col [2]string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch col[1] {
	case "text":
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		}
	case "bytes":
		if b, ok := v.([]byte); ok {
			return base64.StdEncoding.EncodeToString(b), nil
		}
	case "int":
		switch x := v.(type) {
		case int64:
			return x, nil
		case int32:
			return int64(x), nil
		}
	case "bool":
		if b, ok := v.(bool); ok {
			return b, nil
		}
	}
	return nil, fmt.Errorf("column %s: a %T where %s was expected", col[0], v, col[1])
}

// LoadPostgresDump loads a dump (see Snapshot) into the PostgreSQL schema
// dsn names, which must hold no table: it runs the migrations up to the
// dump's schema version, inserts every row in one transaction, then brings
// the schema up to date. It returns what it loaded.
func LoadPostgresDump(ctx context.Context, dsn string, r io.Reader) (SnapshotInfo, error) {
	info, err := loadPostgresDump(ctx, dsn, r)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("store: postgres: load dump: %w", err)
	}
	st, err := OpenPostgres(ctx, dsn) // the remaining migrations
	if err != nil {
		return SnapshotInfo{}, err
	}
	return info, st.Close()
}

func loadPostgresDump(ctx context.Context, dsn string, r io.Reader) (SnapshotInfo, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return SnapshotInfo{}, err
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	d := postgresDialect
	dec := newDumpReader(r)
	var h dumpHeader
	if err := dec.object(&h); err != nil {
		return SnapshotInfo{}, fmt.Errorf("header: %w", err)
	}
	if h.Format != dumpFormat || h.Version != DumpVersion {
		return SnapshotInfo{}, fmt.Errorf("header: format %q version %d, want %q version %d", h.Format, h.Version, dumpFormat, DumpVersion)
	}
	if h.Backend != "postgres" {
		return SnapshotInfo{}, fmt.Errorf("header: a %q dump, want postgres", h.Backend)
	}
	migrations := d.migrations()
	if h.SchemaVersion < 1 || h.SchemaVersion > len(migrations) {
		return SnapshotInfo{}, fmt.Errorf("schema version %d: this program knows versions 1 to %d", h.SchemaVersion, len(migrations))
	}
	info := SnapshotInfo{Backend: "postgres", SchemaVersion: h.SchemaVersion, Tables: map[string]int64{}}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer tx.Rollback()
	existing, err := tableNames(ctx, tx, d)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if len(existing) > 0 {
		var schema string
		tx.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema)
		return SnapshotInfo{}, fmt.Errorf("schema %q is not empty (it holds %s): a restore loads into an empty schema only", schema, strings.Join(existing, ", "))
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_version (version INTEGER PRIMARY KEY)`); err != nil {
		return SnapshotInfo{}, err
	}
	for v := 0; v < h.SchemaVersion; v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return SnapshotInfo{}, fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, v+1); err != nil {
			return SnapshotInfo{}, err
		}
	}
	known, err := tableNames(ctx, tx, d)
	if err != nil {
		return SnapshotInfo{}, err
	}
	// The migrations seed the revision row; the dump brings its value.
	if _, err := tx.ExecContext(ctx, `DELETE FROM revision`); err != nil {
		return SnapshotInfo{}, err
	}
	for {
		line, err := dec.line()
		if err != nil {
			return SnapshotInfo{}, err
		}
		if bytes.HasPrefix(line, []byte(`{"end_dump"`)) {
			var t dumpTrailer
			if err := strictUnmarshal(line, &t); err != nil || !t.EndDump {
				return SnapshotInfo{}, fmt.Errorf("line %d: bad trailer", dec.n)
			}
			if t.Tables != len(info.Tables) {
				return SnapshotInfo{}, fmt.Errorf("trailer counts %d tables, the dump holds %d", t.Tables, len(info.Tables))
			}
			break
		}
		var tb dumpTable
		if err := strictUnmarshal(line, &tb); err != nil {
			return SnapshotInfo{}, fmt.Errorf("line %d: want a table header: %w", dec.n, err)
		}
		if !slices.Contains(known, tb.Table) || tb.Table == "schema_version" {
			return SnapshotInfo{}, fmt.Errorf("line %d: table %q is not in schema version %d", dec.n, tb.Table, h.SchemaVersion)
		}
		if _, dup := info.Tables[tb.Table]; dup {
			return SnapshotInfo{}, fmt.Errorf("line %d: table %q appears twice", dec.n, tb.Table)
		}
		n, err := loadTable(ctx, tx, dec, tb)
		if err != nil {
			return SnapshotInfo{}, fmt.Errorf("table %s: %w", tb.Table, err)
		}
		info.Tables[tb.Table] = n
	}
	if extra, err := dec.line(); err == nil || !errors.Is(err, io.EOF) {
		_ = extra
		return SnapshotInfo{}, fmt.Errorf("line %d: data after the trailer", dec.n)
	}
	if err := tx.Commit(); err != nil {
		return SnapshotInfo{}, err
	}
	return info, nil
}

// insertBatch is how many rows one INSERT carries (PostgreSQL allows 65,535
// parameters per statement).
const insertBatch = 256

func loadTable(ctx context.Context, tx *sql.Tx, dec *dumpReader, tb dumpTable) (int64, error) {
	if len(tb.Columns) == 0 {
		return 0, errors.New("no columns")
	}
	names := make([]string, len(tb.Columns))
	for i, c := range tb.Columns {
		switch c[1] {
		case "text", "bytes", "int", "bool":
		default:
			return 0, fmt.Errorf("column %q: unknown type %q", c[0], c[1])
		}
		names[i] = quoteIdent(c[0])
	}
	prefix := `INSERT INTO ` + quoteIdent(tb.Table) + ` (` + strings.Join(names, ", ") + `) VALUES `
	var args []any
	rows := 0
	var n int64
	flush := func() error {
		if rows == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString(prefix)
		p := 1
		for r := range rows {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for c := range tb.Columns {
				if c > 0 {
					b.WriteString(", ")
				}
				b.WriteString("$" + strconv.Itoa(p))
				p++
			}
			b.WriteByte(')')
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return err
		}
		args, rows = args[:0], 0
		return nil
	}
	for {
		line, err := dec.line()
		if err != nil {
			return 0, err
		}
		if len(line) > 0 && line[0] == '{' {
			var end dumpEnd
			if err := strictUnmarshal(line, &end); err != nil || end.End != tb.Table {
				return 0, fmt.Errorf("line %d: want a row or the end of table %s", dec.n, tb.Table)
			}
			if err := flush(); err != nil {
				return 0, err
			}
			if end.Rows != n {
				return 0, fmt.Errorf("line %d: the end says %d rows, the dump holds %d", dec.n, end.Rows, n)
			}
			return n, nil
		}
		row, err := parseRow(line, tb.Columns)
		if err != nil {
			return 0, fmt.Errorf("line %d: %w", dec.n, err)
		}
		args = append(args, row...)
		rows++
		n++
		if rows == insertBatch {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
}

func parseRow(line []byte, cols [][2]string) ([]any, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var raw []any
	if err := d.Decode(&raw); err != nil {
		return nil, fmt.Errorf("row: %w", err)
	}
	if d.More() {
		return nil, errors.New("row: data after the array")
	}
	if len(raw) != len(cols) {
		return nil, fmt.Errorf("row: %d values for %d columns", len(raw), len(cols))
	}
	out := make([]any, len(raw))
	for i, v := range raw {
		if v == nil {
			continue
		}
		bad := fmt.Errorf("row: column %s: %v is not %s", cols[i][0], v, cols[i][1])
		switch cols[i][1] {
		case "text":
			s, ok := v.(string)
			if !ok {
				return nil, bad
			}
			out[i] = s
		case "bytes":
			s, ok := v.(string)
			if !ok {
				return nil, bad
			}
			b, err := base64.StdEncoding.Strict().DecodeString(s)
			if err != nil {
				return nil, bad
			}
			out[i] = b
		case "int":
			num, ok := v.(json.Number)
			if !ok {
				return nil, bad
			}
			x, err := strconv.ParseInt(num.String(), 10, 64)
			if err != nil {
				return nil, bad
			}
			out[i] = x
		case "bool":
			b, ok := v.(bool)
			if !ok {
				return nil, bad
			}
			out[i] = b
		}
	}
	return out, nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the object")
	}
	return nil
}

// dumpReader reads a dump line by line, bounding each line.
type dumpReader struct {
	r *bufio.Reader
	n int // lines read
}

func newDumpReader(r io.Reader) *dumpReader {
	return &dumpReader{r: bufio.NewReaderSize(r, 1<<20)}
}

func (d *dumpReader) line() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := d.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxDumpLine {
			return nil, fmt.Errorf("line %d: longer than %d bytes", d.n+1, maxDumpLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(buf) == 0 {
			return nil, fmt.Errorf("line %d: %w (the dump is cut short)", d.n+1, io.EOF)
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if err == io.EOF {
			return nil, fmt.Errorf("line %d: no newline at the end (the dump is cut short)", d.n+1)
		}
		d.n++
		return buf[:len(buf)-1], nil
	}
}

func (d *dumpReader) object(v any) error {
	line, err := d.line()
	if err != nil {
		return err
	}
	return strictUnmarshal(line, v)
}
