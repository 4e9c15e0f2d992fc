package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The supply-chain tables (scan, inventory) sit beside the Store interface
// rather than in it: ScanStore is what the server's scan and inventory
// handlers need, and both backends implement it.

// ScanDBMeta describes the vulnerability database in the store.
type ScanDBMeta struct {
	Source     string
	ImportedAt time.Time
	Records    int
	Digest     string
	// Generation bumps on every import and every change of an exception or
	// a gate: agents refresh their verdicts when it moves.
	Generation int64
}

// OSVRecord is one stored OSV record, kept as imported.
type OSVRecord struct {
	ID       string
	Modified time.Time
	Raw      []byte
}

// ScanException excepts a vulnerability (for a binary, a service, or
// everywhere) until it expires.
type ScanException struct {
	ID        string
	Vuln      string
	Binary    string
	Service   string
	Reason    string
	Expires   time.Time
	CreatedAt time.Time
	CreatedBy string
}

// ScanGate is the gate of one entry, or the trust domain's default (Entry "").
type ScanGate struct {
	Entry    string
	Severity string
	DryRun   bool
	Unknown  string
}

// InventoryBinary is what one agent reported about one executable (Info
// is the JSON of api.InventoryBinary, compressed). It is kept per host: an
// agent's report never speaks for a binary on another host, so a
// compromised agent cannot vouch for a hash that other agents run.
type InventoryBinary struct {
	SHA256    string
	Host      string
	Info      []byte
	FirstSeen time.Time
}

// Sighting is an executable seen running as a service on a host.
type Sighting struct {
	Service   string
	Host      string
	SHA256    string
	Exe       string
	FirstSeen time.Time
	LastSeen  time.Time
}

// SightingFilter selects sightings; empty fields match all.
type SightingFilter struct {
	Service, Host, SHA256 string
	SeenSince             time.Time
}

// ScanStore keeps the vulnerability database, exceptions, gates and the
// inventory of what runs.
type ScanStore interface {
	// ImportOSV replaces the vulnerability database with recs in one
	// transaction and bumps the generation, which it returns.
	ImportOSV(ctx context.Context, meta ScanDBMeta, recs []OSVRecord) (int64, error)
	ScanDB(ctx context.Context) (ScanDBMeta, error)
	// EachOSV calls fn with every stored record, in id order.
	EachOSV(ctx context.Context, fn func(OSVRecord) error) error

	CreateScanException(ctx context.Context, e ScanException) error
	ListScanExceptions(ctx context.Context) ([]ScanException, error)
	DeleteScanException(ctx context.Context, id string) error
	// PutScanGate sets a gate; a gate with no severity is removed.
	PutScanGate(ctx context.Context, g ScanGate) error
	ListScanGates(ctx context.Context) ([]ScanGate, error)

	// PutInventoryBinary records a host's report of a binary once; a
	// known (hash, host) is kept as it is (created false).
	PutInventoryBinary(ctx context.Context, b InventoryBinary) (created bool, err error)
	GetInventoryBinary(ctx context.Context, sha256, host string) (InventoryBinary, error)
	// UpsertSightings records sightings: a new (service, host, hash) is
	// inserted, a known one has its last-seen moved forward and its
	// executable path updated.
	UpsertSightings(ctx context.Context, ss []Sighting) error
	ListSightings(ctx context.Context, f SightingFilter) ([]Sighting, error)
}

var _ ScanStore = (*sqlStore)(nil)

// Scan returns the scan and inventory tables of a store, if it has them.
func Scan(s Store) (ScanStore, bool) {
	ss, ok := s.(ScanStore)
	return ss, ok
}

// scanMigration creates the supply-chain tables.
func (d dialect) scanMigration() []string {
	return []string{
		`CREATE TABLE scan_db (
			id          INTEGER PRIMARY KEY,
			source      TEXT NOT NULL,
			imported_at BIGINT NOT NULL,
			records     INTEGER NOT NULL,
			digest      TEXT NOT NULL,
			generation  BIGINT NOT NULL
		)`,
		`CREATE TABLE scan_osv (
			id       TEXT PRIMARY KEY,
			modified BIGINT NOT NULL,
			data     ` + d.blob + ` NOT NULL
		)`,
		`CREATE TABLE scan_exceptions (
			id         TEXT PRIMARY KEY,
			vuln       TEXT NOT NULL,
			binary_sha TEXT NOT NULL,
			service    TEXT NOT NULL,
			reason     TEXT NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL,
			created_by TEXT NOT NULL
		)`,
		`CREATE TABLE scan_gates (
			entry_id TEXT PRIMARY KEY,
			severity TEXT NOT NULL,
			dry_run  INTEGER NOT NULL,
			unknown  TEXT NOT NULL
		)`,
		`CREATE TABLE inventory_binaries (
			sha256     TEXT NOT NULL,
			host       TEXT NOT NULL,
			info       ` + d.blob + ` NOT NULL,
			first_seen BIGINT NOT NULL,
			PRIMARY KEY (sha256, host)
		)`,
		`CREATE TABLE inventory_sightings (
			service    TEXT NOT NULL,
			host       TEXT NOT NULL,
			sha256     TEXT NOT NULL,
			exe        TEXT NOT NULL,
			first_seen BIGINT NOT NULL,
			last_seen  BIGINT NOT NULL,
			PRIMARY KEY (service, host, sha256)
		)`,
		`CREATE INDEX inventory_sightings_sha256 ON inventory_sightings (sha256)`,
		`CREATE INDEX inventory_sightings_last_seen ON inventory_sightings (last_seen)`,
	}
}

// bumpScan increases the generation, creating the database's one row the
// first time (no migration seeds it, so a restored dump brings its own).
func (s *sqlStore) bumpScan(ctx context.Context, tx *sql.Tx) (int64, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO scan_db (id, source, imported_at, records, digest, generation) VALUES (1, '', 0, 0, '', 1)
		ON CONFLICT (id) DO UPDATE SET generation = scan_db.generation + 1`); err != nil {
		return 0, err
	}
	var g int64
	err := tx.QueryRowContext(ctx, `SELECT generation FROM scan_db WHERE id = 1`).Scan(&g)
	return g, err
}

func (s *sqlStore) ImportOSV(ctx context.Context, meta ScanDBMeta, recs []OSVRecord) (int64, error) {
	if err := checkTimes(meta.ImportedAt); err != nil {
		return 0, err
	}
	var gen int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM scan_osv`); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO scan_osv (id, modified, data) VALUES (?, ?, ?)`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, r := range recs {
			if _, err := stmt.ExecContext(ctx, r.ID, ns(r.Modified), r.Raw); err != nil {
				return fmt.Errorf("record %s: %w", r.ID, err)
			}
		}
		if gen, err = s.bumpScan(ctx, tx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE scan_db SET source = ?, imported_at = ?, records = ?, digest = ? WHERE id = 1`),
			meta.Source, ns(meta.ImportedAt), len(recs), meta.Digest)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: import vulnerability database: %w", err)
	}
	return gen, nil
}

func (s *sqlStore) ScanDB(ctx context.Context) (ScanDBMeta, error) {
	var m ScanDBMeta
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT source, imported_at, records, digest, generation FROM scan_db WHERE id = 1`).
		Scan(&m.Source, &at, &m.Records, &m.Digest, &m.Generation)
	if errors.Is(err, sql.ErrNoRows) {
		return m, nil // nothing imported, nothing changed yet
	}
	if err != nil {
		return m, fmt.Errorf("store: vulnerability database: %w", err)
	}
	m.ImportedAt = fromNS(at)
	return m, nil
}

func (s *sqlStore) EachOSV(ctx context.Context, fn func(OSVRecord) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, modified, data FROM scan_osv ORDER BY id`)
	if err != nil {
		return fmt.Errorf("store: vulnerability records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r OSVRecord
		var mod int64
		if err := rows.Scan(&r.ID, &mod, &r.Raw); err != nil {
			return fmt.Errorf("store: vulnerability records: %w", err)
		}
		r.Modified = fromNS(mod)
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (s *sqlStore) CreateScanException(ctx context.Context, e ScanException) error {
	if err := checkTimes(e.Expires, e.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO scan_exceptions (id, vuln, binary_sha, service, reason, expires_at, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			e.ID, e.Vuln, e.Binary, e.Service, e.Reason, ns(e.Expires), ns(e.CreatedAt), e.CreatedBy); err != nil {
			return err
		}
		_, err := s.bumpScan(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create scan exception: %w", err)
	}
	return nil
}

func (s *sqlStore) ListScanExceptions(ctx context.Context) ([]ScanException, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, vuln, binary_sha, service, reason, expires_at, created_at, created_by FROM scan_exceptions ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list scan exceptions: %w", err)
	}
	defer rows.Close()
	var out []ScanException
	for rows.Next() {
		var e ScanException
		var exp, created int64
		if err := rows.Scan(&e.ID, &e.Vuln, &e.Binary, &e.Service, &e.Reason, &exp, &created, &e.CreatedBy); err != nil {
			return nil, fmt.Errorf("store: list scan exceptions: %w", err)
		}
		e.Expires, e.CreatedAt = fromNS(exp), fromNS(created)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *sqlStore) DeleteScanException(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `DELETE FROM scan_exceptions WHERE id = ?`, id); err != nil {
			return err
		}
		_, err := s.bumpScan(ctx, tx)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: scan exception %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("store: delete scan exception: %w", err)
	}
	return nil
}

func (s *sqlStore) PutScanGate(ctx context.Context, g ScanGate) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM scan_gates WHERE entry_id = ?`), g.Entry); err != nil {
			return err
		}
		if g.Severity != "" {
			dry := 0
			if g.DryRun {
				dry = 1
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO scan_gates (entry_id, severity, dry_run, unknown) VALUES (?, ?, ?, ?)`),
				g.Entry, g.Severity, dry, g.Unknown); err != nil {
				return err
			}
		}
		_, err := s.bumpScan(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put scan gate: %w", err)
	}
	return nil
}

func (s *sqlStore) ListScanGates(ctx context.Context) ([]ScanGate, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT entry_id, severity, dry_run, unknown FROM scan_gates ORDER BY entry_id`)
	if err != nil {
		return nil, fmt.Errorf("store: list scan gates: %w", err)
	}
	defer rows.Close()
	var out []ScanGate
	for rows.Next() {
		var g ScanGate
		var dry int
		if err := rows.Scan(&g.Entry, &g.Severity, &dry, &g.Unknown); err != nil {
			return nil, fmt.Errorf("store: list scan gates: %w", err)
		}
		g.DryRun = dry != 0
		out = append(out, g)
	}
	return out, rows.Err()
}

func (s *sqlStore) PutInventoryBinary(ctx context.Context, b InventoryBinary) (bool, error) {
	if err := checkTimes(b.FirstSeen); err != nil {
		return false, err
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO inventory_binaries (sha256, host, info, first_seen) VALUES (?, ?, ?, ?) ON CONFLICT (sha256, host) DO NOTHING`),
		b.SHA256, b.Host, b.Info, ns(b.FirstSeen))
	if err != nil {
		return false, fmt.Errorf("store: put inventory binary: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (s *sqlStore) GetInventoryBinary(ctx context.Context, sha, host string) (InventoryBinary, error) {
	b := InventoryBinary{SHA256: sha, Host: host}
	var first int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT info, first_seen FROM inventory_binaries WHERE sha256 = ? AND host = ?`), sha, host).Scan(&b.Info, &first)
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("%w: inventory binary %s", ErrNotFound, sha)
	}
	if err != nil {
		return b, fmt.Errorf("store: get inventory binary: %w", err)
	}
	b.FirstSeen = fromNS(first)
	return b, nil
}

func (s *sqlStore) UpsertSightings(ctx context.Context, ss []Sighting) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, x := range ss {
			if err := checkTimes(x.FirstSeen, x.LastSeen); err != nil {
				return err
			}
			// Last seen only moves forward; first seen only backward.
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO inventory_sightings (service, host, sha256, exe, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (service, host, sha256) DO UPDATE SET exe = excluded.exe,
				last_seen = CASE WHEN excluded.last_seen > inventory_sightings.last_seen THEN excluded.last_seen ELSE inventory_sightings.last_seen END,
				first_seen = CASE WHEN excluded.first_seen < inventory_sightings.first_seen THEN excluded.first_seen ELSE inventory_sightings.first_seen END`),
				x.Service, x.Host, x.SHA256, x.Exe, ns(x.FirstSeen), ns(x.LastSeen)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: upsert sightings: %w", err)
	}
	return nil
}

func (s *sqlStore) ListSightings(ctx context.Context, f SightingFilter) ([]Sighting, error) {
	q := `SELECT service, host, sha256, exe, first_seen, last_seen FROM inventory_sightings WHERE last_seen >= ?`
	args := []any{ns(f.SeenSince)}
	for col, v := range map[string]string{"service": f.Service, "host": f.Host, "sha256": f.SHA256} {
		if v != "" {
			q += ` AND ` + col + ` = ?`
			args = append(args, v)
		}
	}
	q += ` ORDER BY service, host, last_seen DESC`
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list sightings: %w", err)
	}
	defer rows.Close()
	var out []Sighting
	for rows.Next() {
		var x Sighting
		var first, last int64
		if err := rows.Scan(&x.Service, &x.Host, &x.SHA256, &x.Exe, &first, &last); err != nil {
			return nil, fmt.Errorf("store: list sightings: %w", err)
		}
		x.FirstSeen, x.LastSeen = fromNS(first), fromNS(last)
		out = append(out, x)
	}
	return out, rows.Err()
}
