package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/selector"
)

// dialect is everything that differs between the SQL backends. The statements
// themselves are shared, so SQLite and PostgreSQL behave identically and one
// test suite covers both.
type dialect struct {
	name string
	// blob is the column type for byte strings.
	blob string
	// numbered placeholders ($1, $2, ...) replace the ? the statements are
	// written with.
	numbered bool
	// lockMigrations, when set, runs first in the migration transaction so
	// that replicas starting together do not migrate the same database twice.
	lockMigrations string
	// holdAuditLog and releaseAuditLog, when set, take and give back a
	// session lock (see HoldAuditLog); the first answers one boolean.
	holdAuditLog, releaseAuditLog string
	// lockKey, when set, runs in a transaction with one argument (a
	// key) and holds the transaction until others holding the same key
	// end. SQLite needs none: a transaction whose first statement writes
	// holds the database's write lock.
	lockKey string
}

// sqlStore implements Store over database/sql.
//
// Times are stored as int64 Unix nanoseconds in UTC, 0 for the zero time: both
// backends compare integers natively and identically, and no driver time
// conversion or time zone is involved.
type sqlStore struct {
	db *sql.DB
	d  dialect

	mu   sync.Mutex
	held *sql.Conn // the audit log lock's connection, if held

	stmts sync.Map // query -> *sql.Stmt: hot statements prepared once (acme.go)
}

var _ Store = (*sqlStore)(nil)

// newSQLStore migrates db to the current schema and returns the store over
// it. It closes db if it fails.
func newSQLStore(ctx context.Context, db *sql.DB, d dialect) (*sqlStore, error) {
	s := &sqlStore{db: db, d: d}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// migrations[i] takes the schema from version i to i+1. Append only: a
// released migration is never edited, because databases have already run it.
func (d dialect) migrations() [][]string {
	return [][]string{{
		`CREATE TABLE ca_keys (
			id          TEXT PRIMARY KEY,
			kind        TEXT NOT NULL,
			state       TEXT NOT NULL,
			cert_der    ` + d.blob + ` NOT NULL,
			wrapped_key ` + d.blob + `,
			not_before  BIGINT NOT NULL,
			not_after   BIGINT NOT NULL,
			created_at  BIGINT NOT NULL
		)`,
		`CREATE TABLE join_tokens (
			hash       ` + d.blob + ` PRIMARY KEY,
			agent_id   TEXT NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL,
			used_at    BIGINT NOT NULL
		)`,
		`CREATE TABLE agents (
			spiffe_id      TEXT PRIMARY KEY,
			serial         TEXT NOT NULL,
			svid_not_after BIGINT NOT NULL,
			attested_at    BIGINT NOT NULL,
			last_seen      BIGINT NOT NULL,
			evicted        BOOLEAN NOT NULL,
			evicted_at     BIGINT NOT NULL
		)`,
		`CREATE TABLE entries (
			id         TEXT PRIMARY KEY,
			spiffe_id  TEXT NOT NULL,
			parent_id  TEXT NOT NULL,
			selectors  TEXT NOT NULL,
			x509_ttl   BIGINT NOT NULL,
			jwt_ttl    BIGINT NOT NULL,
			dns_names  TEXT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX entries_parent_id ON entries (parent_id)`,
		`CREATE TABLE svids (
			serial    TEXT PRIMARY KEY,
			spiffe_id TEXT NOT NULL,
			agent_id  TEXT NOT NULL,
			entry_id  TEXT NOT NULL,
			not_after BIGINT NOT NULL,
			issued_at BIGINT NOT NULL
		)`,
		`CREATE INDEX svids_spiffe_id ON svids (spiffe_id)`,
		`CREATE INDEX svids_agent_id ON svids (agent_id)`,
		`CREATE TABLE revocations (
			serial     TEXT PRIMARY KEY,
			spiffe_id  TEXT NOT NULL,
			reason     TEXT NOT NULL,
			revoked_at BIGINT NOT NULL,
			not_after  BIGINT NOT NULL
		)`,
		// One row, so bumping it serialises concurrent changes and a reader
		// sees the revision and the change it counts together.
		`CREATE TABLE revision (
			id    INTEGER PRIMARY KEY CHECK (id = 1),
			value BIGINT NOT NULL
		)`,
		`INSERT INTO revision (id, value) VALUES (1, 0)`,
	}, {
		// Every upload is kept: seq numbers the versions of one service's
		// policy; a deletion is a tombstone row, so history survives it.
		`CREATE TABLE policies (
			service    TEXT NOT NULL,
			seq        BIGINT NOT NULL,
			version    TEXT NOT NULL,
			source     ` + d.blob + ` NOT NULL,
			deleted    INTEGER NOT NULL,
			created_at BIGINT NOT NULL,
			PRIMARY KEY (service, seq)
		)`,
	}, {
		// Alerts raised by detection rules; the ID is derived from the
		// rule, the group and the entry that first fired it, so replaying
		// the audit log does not raise an alert twice.
		`CREATE TABLE alerts (
			id          TEXT PRIMARY KEY,
			rule        TEXT NOT NULL,
			severity    TEXT NOT NULL,
			group_key   TEXT NOT NULL,
			summary     TEXT NOT NULL,
			first_seen  BIGINT NOT NULL,
			last_seen   BIGINT NOT NULL,
			count       BIGINT NOT NULL,
			first_index BIGINT NOT NULL,
			last_index  BIGINT NOT NULL,
			status      TEXT NOT NULL,
			created_at  BIGINT NOT NULL,
			updated_at  BIGINT NOT NULL
		)`,
		`CREATE INDEX alerts_first_seen ON alerts (first_seen)`,
	}, {
		// OAuth 2.0 / OIDC. Client and user attributes that no query
		// selects on are one JSON document (data), so adding one needs no
		// migration. Codes and refresh tokens are grants, stored by the
		// SHA-256 of their value; family ties every token descended from
		// one authorisation, so reuse can revoke them all.
		`CREATE TABLE oauth_clients (
			id          TEXT PRIMARY KEY,
			secret_hash ` + d.blob + `,
			data        TEXT NOT NULL,
			created_at  BIGINT NOT NULL
		)`,
		`CREATE TABLE oauth_users (
			username      TEXT PRIMARY KEY,
			data          TEXT NOT NULL,
			failed_logins INTEGER NOT NULL,
			locked_until  BIGINT NOT NULL,
			created_at    BIGINT NOT NULL
		)`,
		`CREATE TABLE oauth_grants (
			hash       ` + d.blob + ` PRIMARY KEY,
			kind       TEXT NOT NULL,
			family     TEXT NOT NULL,
			client_id  TEXT NOT NULL,
			subject    TEXT NOT NULL,
			data       ` + d.blob + ` NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL,
			used_at    BIGINT NOT NULL,
			revoked    INTEGER NOT NULL
		)`,
		`CREATE INDEX oauth_grants_family ON oauth_grants (family)`,
		`CREATE TABLE oauth_revocations (
			id         TEXT PRIMARY KEY,
			reason     TEXT NOT NULL,
			revoked_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL
		)`,
	}, {
		// Key store: named keys and their versions. material is sealed
		// by keywrap and set to NULL when a version is destroyed.
		`CREATE TABLE kms_keys (
			name         TEXT PRIMARY KEY,
			type         TEXT NOT NULL,
			rotate_every BIGINT NOT NULL,
			latest       INTEGER NOT NULL,
			generation   BIGINT NOT NULL,
			created_at   BIGINT NOT NULL,
			rotated_at   BIGINT NOT NULL
		)`,
		`CREATE TABLE kms_key_versions (
			name       TEXT NOT NULL,
			version    INTEGER NOT NULL,
			state      TEXT NOT NULL,
			material   ` + d.blob + `,
			public     ` + d.blob + `,
			created_at BIGINT NOT NULL,
			destroy_at BIGINT NOT NULL,
			PRIMARY KEY (name, version)
		)`,
	}, {
		// OAuth grant families: every access token's sid names one, so
		// disabling a user or a client can find and revoke every line of
		// tokens issued for them, and revoking a family revokes the
		// families exchanged from it (parent).
		`CREATE TABLE oauth_families (
			id         TEXT PRIMARY KEY,
			parent     TEXT NOT NULL,
			client_id  TEXT NOT NULL,
			subject    TEXT NOT NULL,
			revoked    INTEGER NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX oauth_families_parent ON oauth_families (parent)`,
		`CREATE INDEX oauth_families_subject ON oauth_families (subject)`,
		`CREATE INDEX oauth_families_client_id ON oauth_families (client_id)`,
		`CREATE INDEX oauth_grants_subject ON oauth_grants (subject)`,
		`CREATE INDEX oauth_grants_client_id ON oauth_grants (client_id)`,
		// DPoP proofs seen at the token and userinfo endpoints, shared by
		// every replica so a proof cannot be replayed to another one.
		`CREATE TABLE oauth_dpop_proofs (
			jkt        TEXT NOT NULL,
			jti        TEXT NOT NULL,
			expires_at BIGINT NOT NULL,
			PRIMARY KEY (jkt, jti)
		)`,
		// The last accepted one-time code step, in a column so that
		// accepting a code is one conditional UPDATE.
		`ALTER TABLE oauth_users ADD COLUMN totp_last_step BIGINT NOT NULL DEFAULT 0`,
	},
		// Supply chain: the vulnerability database, exceptions, gates and
		// the inventory of what runs (scan.go).
		d.scanMigration(),
		// ACME (acme.go).
		d.acmeMigration(),
		// Network policy: placements agents report (netpol.go).
		d.netpolMigration(),
		// Operators and device codes (operator.go).
		d.operatorMigration(),
		// Respond: playbooks, quarantines, incidents, runs (respond.go).
		d.respondMigration(),
		// Entry fields SPIRE users rely on, and lookups by SPIFFE ID.
		{
			`ALTER TABLE entries ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false`,
			`ALTER TABLE entries ADD COLUMN downstream BOOLEAN NOT NULL DEFAULT false`,
			`ALTER TABLE entries ADD COLUMN hint TEXT NOT NULL DEFAULT ''`,
			`ALTER TABLE entries ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0`,
			`CREATE INDEX entries_spiffe_id ON entries (spiffe_id)`,
		},
		// Playbook runs are written compare-and-swap (respond.go).
		{
			`ALTER TABLE respond_runs ADD COLUMN revision BIGINT NOT NULL DEFAULT 1`,
		},
		// Federation relationships and the bundles of other trust
		// domains (federation.go).
		d.federationMigration(),
		// Node attestation challenges: x509pop and tpm (attest.go).
		d.attestMigration(),
		// The trust domains an entry's workloads are given the bundles of
		// (SPIRE's federates_with), a JSON array of names.
		{
			`ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]'`,
		},
	}
}

// migrate brings the schema up to date in one transaction, so a failed
// migration leaves the database as it was.
func (s *sqlStore) migrate(ctx context.Context) error {
	migrations := s.d.migrations()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d.lockMigrations != "" {
			if _, err := tx.ExecContext(ctx, s.d.lockMigrations); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if version > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this program's %d; upgrade the program", version, len(migrations))
		}
		for v := version; v < len(migrations); v++ {
			for _, stmt := range migrations[v] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", v+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_version (version) VALUES (?)`), v+1); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: %s: migrate: %w", s.d.name, err)
	}
	return nil
}

// q rewrites the ? placeholders of query for the dialect. The statements
// contain no ? other than placeholders.
func (s *sqlStore) q(query string) string {
	if !s.d.numbered {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// inTx runs fn in a transaction, committing if it returns nil.
func (s *sqlStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// bump increases the revision inside tx, the transaction of the change it
// counts.
func (s *sqlStore) bump(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE revision SET value = value + 1 WHERE id = 1`)
	return err
}

// execOne runs a statement that must change exactly one row; none is
// ErrNotFound.
func (s *sqlStore) execOne(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// insertNew runs an INSERT ... ON CONFLICT DO NOTHING; no row inserted is
// ErrConflict. Letting the database decide is race-free in both backends,
// unlike looking first, and needs no driver-specific error codes.
func (s *sqlStore) insertNew(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrConflict
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, s *sqlStore, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// checkTimes rejects times that Unix nanoseconds cannot hold, which would
// otherwise be stored as garbage.
func checkTimes(ts ...time.Time) error {
	lo, hi := time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)
	for _, t := range ts {
		if !t.IsZero() && (t.Before(lo) || t.After(hi)) {
			return fmt.Errorf("store: time %s out of range (years 1678 to 2262)", t.UTC())
		}
	}
	return nil
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// CA keys.

const caKeyColumns = `id, kind, state, cert_der, wrapped_key, not_before, not_after, created_at`

// PutCAKey adds a new key and bumps the revision, since the bundle agents
// fetch changes. A key with the same ID is ErrConflict: a wrapped private key
// is never silently replaced.
func (s *sqlStore) PutCAKey(ctx context.Context, k CAKey) error {
	if err := checkTimes(k.NotBefore, k.NotAfter, k.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := s.insertNew(ctx, tx, `INSERT INTO ca_keys (`+caKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			k.ID, string(k.Kind), string(k.State), k.CertDER, k.WrappedKey, ns(k.NotBefore), ns(k.NotAfter), ns(k.CreatedAt))
		if err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("%w: CA key %s", ErrConflict, k.ID)
	}
	if err != nil {
		return fmt.Errorf("store: put CA key %s: %w", k.ID, err)
	}
	return nil
}

// ListCAKeys lists every CA key, oldest first.
func (s *sqlStore) ListCAKeys(ctx context.Context) ([]CAKey, error) {
	keys, err := queryAll(ctx, s, scanCAKey, `SELECT `+caKeyColumns+` FROM ca_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list CA keys: %w", err)
	}
	return keys, nil
}

func scanCAKey(r scanner) (CAKey, error) {
	var k CAKey
	var kind, state string
	var notBefore, notAfter, created int64
	if err := r.Scan(&k.ID, &kind, &state, &k.CertDER, &k.WrappedKey, &notBefore, &notAfter, &created); err != nil {
		return CAKey{}, err
	}
	k.Kind, k.State = CAKeyKind(kind), CAKeyState(state)
	k.NotBefore, k.NotAfter, k.CreatedAt = fromNS(notBefore), fromNS(notAfter), fromNS(created)
	return k, nil
}

func (s *sqlStore) SetCAKeyState(ctx context.Context, id string, state CAKeyState) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `UPDATE ca_keys SET state = ? WHERE id = ?`, string(state), id); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: CA key %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("store: set CA key %s state: %w", id, err)
	}
	return nil
}

// Join tokens.

func (s *sqlStore) CreateJoinToken(ctx context.Context, t JoinToken) error {
	if err := checkTimes(t.ExpiresAt, t.CreatedAt, t.UsedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO join_tokens (hash, agent_id, expires_at, created_at, used_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`,
			t.Hash, t.AgentID, ns(t.ExpiresAt), ns(t.CreatedAt), ns(t.UsedAt))
	})
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("%w: join token", ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("store: create join token: %w", err)
	}
	return nil
}

// ConsumeJoinToken is one conditional UPDATE: the database lets exactly one of
// two concurrent calls see the token unused. Unknown, used and expired tokens
// all return ErrTokenInvalid itself.
func (s *sqlStore) ConsumeJoinToken(ctx context.Context, hash []byte, now time.Time) (JoinToken, error) {
	if now.IsZero() {
		// used_at 0 means unused: consuming at the zero time would not stick.
		return JoinToken{}, errors.New("store: consume join token: zero time")
	}
	if err := checkTimes(now); err != nil {
		return JoinToken{}, err
	}
	t := JoinToken{Hash: hash}
	var expires, created, used int64
	err := s.db.QueryRowContext(ctx, s.q(`UPDATE join_tokens SET used_at = ?
		WHERE hash = ? AND used_at = 0 AND expires_at > ?
		RETURNING agent_id, expires_at, created_at, used_at`),
		ns(now), hash, ns(now)).Scan(&t.AgentID, &expires, &created, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return JoinToken{}, ErrTokenInvalid
	}
	if err != nil {
		return JoinToken{}, fmt.Errorf("store: consume join token: %w", err)
	}
	t.ExpiresAt, t.CreatedAt, t.UsedAt = fromNS(expires), fromNS(created), fromNS(used)
	return t, nil
}

// Agents.

const agentColumns = `spiffe_id, serial, svid_not_after, attested_at, last_seen, evicted, evicted_at`

// UpsertAgent stores a, replacing every field of an existing agent with the
// same SPIFFE ID. It does not bump the revision: agents learn of evictions,
// not of attestations.
func (s *sqlStore) UpsertAgent(ctx context.Context, a Agent) error {
	if err := checkTimes(a.SVIDNotAfter, a.AttestedAt, a.LastSeen, a.EvictedAt); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO agents (`+agentColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (spiffe_id) DO UPDATE SET
			serial = excluded.serial,
			svid_not_after = excluded.svid_not_after,
			attested_at = excluded.attested_at,
			last_seen = excluded.last_seen,
			evicted = agents.evicted OR excluded.evicted,
			evicted_at = CASE WHEN agents.evicted THEN agents.evicted_at ELSE excluded.evicted_at END`),
		a.SpiffeID, a.Serial, ns(a.SVIDNotAfter), ns(a.AttestedAt), ns(a.LastSeen), a.Evicted, ns(a.EvictedAt))
	if err != nil {
		return fmt.Errorf("store: upsert agent %s: %w", a.SpiffeID, err)
	}
	return nil
}

func (s *sqlStore) TouchAgent(ctx context.Context, spiffeID string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET last_seen = ? WHERE spiffe_id = ?`), ns(at), spiffeID); err != nil {
		return fmt.Errorf("store: touch agent %s: %w", spiffeID, err)
	}
	return nil
}

func (s *sqlStore) ReadmitAgent(ctx context.Context, spiffeID string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE agents SET evicted = ?, evicted_at = 0 WHERE spiffe_id = ? AND evicted`), false, spiffeID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: readmit agent %s: %w", spiffeID, err)
	}
	return nil
}

func (s *sqlStore) GetAgent(ctx context.Context, spiffeID string) (Agent, error) {
	a, err := scanAgent(s.db.QueryRowContext(ctx, s.q(`SELECT `+agentColumns+` FROM agents WHERE spiffe_id = ?`), spiffeID))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("%w: agent %s", ErrNotFound, spiffeID)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("store: get agent %s: %w", spiffeID, err)
	}
	return a, nil
}

// ListAgents lists every agent, evicted ones included, ordered by SPIFFE ID.
func (s *sqlStore) ListAgents(ctx context.Context) ([]Agent, error) {
	agents, err := queryAll(ctx, s, scanAgent, `SELECT `+agentColumns+` FROM agents ORDER BY spiffe_id`)
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	return agents, nil
}

func scanAgent(r scanner) (Agent, error) {
	var a Agent
	var svidNotAfter, attested, lastSeen, evictedAt int64
	if err := r.Scan(&a.SpiffeID, &a.Serial, &svidNotAfter, &attested, &lastSeen, &a.Evicted, &evictedAt); err != nil {
		return Agent{}, err
	}
	a.SVIDNotAfter, a.AttestedAt, a.LastSeen, a.EvictedAt = fromNS(svidNotAfter), fromNS(attested), fromNS(lastSeen), fromNS(evictedAt)
	return a, nil
}

func (s *sqlStore) EvictAgent(ctx context.Context, spiffeID string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `UPDATE agents SET evicted = ?, evicted_at = ? WHERE spiffe_id = ?`, true, ns(at), spiffeID); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: agent %s", ErrNotFound, spiffeID)
	}
	if err != nil {
		return fmt.Errorf("store: evict agent %s: %w", spiffeID, err)
	}
	return nil
}

// Registration entries.

const entryColumns = `id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, created_at, admin, downstream, hint, expires_at, federates_with`

func entryArgs(e Entry) ([]any, error) {
	if err := checkTimes(e.CreatedAt, e.ExpiresAt); err != nil {
		return nil, err
	}
	selectors, err := json.Marshal(e.Selectors)
	if err != nil {
		return nil, err
	}
	dnsNames, err := json.Marshal(e.DNSNames)
	if err != nil {
		return nil, err
	}
	fedWith := []byte("[]")
	if len(e.FederatesWith) > 0 {
		if fedWith, err = json.Marshal(e.FederatesWith); err != nil {
			return nil, err
		}
	}
	return []any{e.ID, e.SpiffeID, e.ParentID, string(selectors), int64(e.X509TTL), int64(e.JWTTTL), string(dnsNames), ns(e.CreatedAt),
		e.Admin, e.Downstream, e.Hint, ns(e.ExpiresAt), string(fedWith)}, nil
}

func (s *sqlStore) CreateEntry(ctx context.Context, e Entry) error {
	return s.CreateEntries(ctx, []Entry{e})
}

func (s *sqlStore) CreateEntries(ctx context.Context, es []Entry) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			args, err := entryArgs(e)
			if err != nil {
				return fmt.Errorf("entry %s: %w", e.ID, err)
			}
			err = s.insertNew(ctx, tx, `INSERT INTO entries (`+entryColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, args...)
			if errors.Is(err, ErrConflict) {
				return fmt.Errorf("%w: entry %s", ErrConflict, e.ID)
			}
			if err != nil {
				return err
			}
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: create entries: %w", err)
	}
	return nil
}

func (s *sqlStore) UpdateEntries(ctx context.Context, es []Entry) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			args, err := entryArgs(e)
			if err != nil {
				return fmt.Errorf("entry %s: %w", e.ID, err)
			}
			// Everything but the ID and when it was created.
			err = s.execOne(ctx, tx, `UPDATE entries SET spiffe_id = ?, parent_id = ?, selectors = ?, x509_ttl = ?, jwt_ttl = ?, dns_names = ?,
				admin = ?, downstream = ?, hint = ?, expires_at = ?, federates_with = ? WHERE id = ?`, append(args[1:7], append(args[8:], e.ID)...)...)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: entry %s", ErrNotFound, e.ID)
			}
			if err != nil {
				return err
			}
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: update entries: %w", err)
	}
	return nil
}

func (s *sqlStore) GetEntry(ctx context.Context, id string) (Entry, error) {
	e, err := scanEntry(s.db.QueryRowContext(ctx, s.q(`SELECT `+entryColumns+` FROM entries WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, fmt.Errorf("%w: entry %s", ErrNotFound, id)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("store: get entry %s: %w", id, err)
	}
	return e, nil
}

func (s *sqlStore) ListEntries(ctx context.Context, parentID string) ([]Entry, error) {
	return s.FindEntries(ctx, EntryFilter{ParentID: parentID})
}

func (s *sqlStore) FindEntries(ctx context.Context, f EntryFilter) ([]Entry, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{{"parent_id", f.ParentID}, {"spiffe_id", f.SpiffeID}, {"hint", f.Hint}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	query := `SELECT ` + entryColumns + ` FROM entries`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	entries, err := queryAll(ctx, s, scanEntry, query+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list entries: %w", err)
	}
	if len(f.Selectors) > 0 {
		entries = slices.DeleteFunc(entries, func(e Entry) bool {
			return !selector.NewSet(e.Selectors...).Matches(f.Selectors)
		})
	}
	if f.FederatesWith != "" {
		entries = slices.DeleteFunc(entries, func(e Entry) bool { return !slices.Contains(e.FederatesWith, f.FederatesWith) })
	}
	return entries, nil
}

func scanEntry(r scanner) (Entry, error) {
	var e Entry
	var selectors, dnsNames, fedWith string
	var x509TTL, jwtTTL, created, expires int64
	if err := r.Scan(&e.ID, &e.SpiffeID, &e.ParentID, &selectors, &x509TTL, &jwtTTL, &dnsNames, &created,
		&e.Admin, &e.Downstream, &e.Hint, &expires, &fedWith); err != nil {
		return Entry{}, err
	}
	if err := json.Unmarshal([]byte(selectors), &e.Selectors); err != nil {
		return Entry{}, fmt.Errorf("entry %s: selectors: %w", e.ID, err)
	}
	if err := json.Unmarshal([]byte(dnsNames), &e.DNSNames); err != nil {
		return Entry{}, fmt.Errorf("entry %s: DNS names: %w", e.ID, err)
	}
	if fedWith != "[]" {
		if err := json.Unmarshal([]byte(fedWith), &e.FederatesWith); err != nil {
			return Entry{}, fmt.Errorf("entry %s: federates_with: %w", e.ID, err)
		}
	}
	e.X509TTL, e.JWTTTL, e.CreatedAt, e.ExpiresAt = time.Duration(x509TTL), time.Duration(jwtTTL), fromNS(created), fromNS(expires)
	return e, nil
}

func (s *sqlStore) DeleteEntry(ctx context.Context, id string) error {
	return s.DeleteEntries(ctx, []string{id})
}

func (s *sqlStore) DeleteEntries(ctx context.Context, ids []string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			err := s.execOne(ctx, tx, `DELETE FROM entries WHERE id = ?`, id)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: entry %s", ErrNotFound, id)
			}
			if err != nil {
				return err
			}
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: delete entries: %w", err)
	}
	return nil
}

// Issued SVIDs.

const svidColumns = `serial, spiffe_id, agent_id, entry_id, not_after, issued_at`

// RecordSVIDs records all of svids or none; a serial already recorded is
// ErrConflict, since a CA never reuses one.
func (s *sqlStore) RecordSVIDs(ctx context.Context, svids []IssuedSVID) error {
	if len(svids) == 0 {
		return nil
	}
	for _, v := range svids {
		if err := checkTimes(v.NotAfter, v.IssuedAt); err != nil {
			return err
		}
	}
	var dup string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, v := range svids {
			err := s.insertNew(ctx, tx, `INSERT INTO svids (`+svidColumns+`) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`,
				v.Serial, v.SpiffeID, v.AgentID, v.EntryID, ns(v.NotAfter), ns(v.IssuedAt))
			if err != nil {
				dup = v.Serial
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("%w: SVID serial %s", ErrConflict, dup)
	}
	if err != nil {
		return fmt.Errorf("store: record SVIDs: %w", err)
	}
	return nil
}

// ListSVIDs lists matching unexpired SVIDs ordered by serial.
func (s *sqlStore) ListSVIDs(ctx context.Context, f SVIDFilter, now time.Time) ([]IssuedSVID, error) {
	if err := checkTimes(now); err != nil {
		return nil, err
	}
	query, args := `SELECT `+svidColumns+` FROM svids WHERE not_after > ?`, []any{ns(now)}
	if f.SpiffeID != "" {
		query, args = query+` AND spiffe_id = ?`, append(args, f.SpiffeID)
	}
	if f.AgentID != "" {
		query, args = query+` AND agent_id = ?`, append(args, f.AgentID)
	}
	svids, err := queryAll(ctx, s, scanSVID, query+` ORDER BY serial`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list SVIDs: %w", err)
	}
	return svids, nil
}

func scanSVID(r scanner) (IssuedSVID, error) {
	var v IssuedSVID
	var notAfter, issued int64
	if err := r.Scan(&v.Serial, &v.SpiffeID, &v.AgentID, &v.EntryID, &notAfter, &issued); err != nil {
		return IssuedSVID{}, err
	}
	v.NotAfter, v.IssuedAt = fromNS(notAfter), fromNS(issued)
	return v, nil
}

// Revocations.

const revocationColumns = `serial, spiffe_id, reason, revoked_at, not_after`

// AddRevocations bumps the revision once if at least one serial was new;
// revoking only serials already revoked changes nothing agents must learn.
func (s *sqlStore) AddRevocations(ctx context.Context, rs []Revocation) error {
	if len(rs) == 0 {
		return nil
	}
	for _, r := range rs {
		if err := checkTimes(r.RevokedAt, r.NotAfter); err != nil {
			return err
		}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		added := false
		for _, r := range rs {
			err := s.insertNew(ctx, tx, `INSERT INTO revocations (`+revocationColumns+`) VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`,
				r.Serial, r.SpiffeID, r.Reason, ns(r.RevokedAt), ns(r.NotAfter))
			switch {
			case err == nil:
				added = true
			case !errors.Is(err, ErrConflict):
				return err
			}
		}
		if !added {
			return nil
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: add revocations: %w", err)
	}
	return nil
}

// ListRevocations lists revocations of unexpired certificates ordered by
// serial.
func (s *sqlStore) ListRevocations(ctx context.Context, now time.Time) ([]Revocation, error) {
	if err := checkTimes(now); err != nil {
		return nil, err
	}
	revs, err := queryAll(ctx, s, scanRevocation, `SELECT `+revocationColumns+` FROM revocations WHERE not_after > ? ORDER BY serial`, ns(now))
	if err != nil {
		return nil, fmt.Errorf("store: list revocations: %w", err)
	}
	return revs, nil
}

func scanRevocation(r scanner) (Revocation, error) {
	var v Revocation
	var revoked, notAfter int64
	if err := r.Scan(&v.Serial, &v.SpiffeID, &v.Reason, &revoked, &notAfter); err != nil {
		return Revocation{}, err
	}
	v.RevokedAt, v.NotAfter = fromNS(revoked), fromNS(notAfter)
	return v, nil
}

// PruneExpired does not bump the revision: a revocation is only dropped once
// its certificate has expired and is refused anyway.
func (s *sqlStore) PruneExpired(ctx context.Context, now time.Time) error {
	if err := checkTimes(now); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, stmt := range []string{
			`DELETE FROM svids WHERE not_after < ?`,
			`DELETE FROM revocations WHERE not_after < ?`,
			`DELETE FROM join_tokens WHERE expires_at < ?`,
			`DELETE FROM oauth_grants WHERE expires_at < ?`,
			`DELETE FROM oauth_revocations WHERE expires_at < ?`,
			`DELETE FROM oauth_families WHERE expires_at < ?`,
			`DELETE FROM oauth_dpop_proofs WHERE expires_at < ?`,
			`DELETE FROM oauth_device_codes WHERE expires_at < ?`,
		} {
			if _, err := tx.ExecContext(ctx, s.q(stmt), ns(now)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: prune expired: %w", err)
	}
	return nil
}

func (s *sqlStore) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("store: revision: %w", err)
	}
	return rev, nil
}

// Policies.

const policyColumns = `service, seq, version, source, deleted, created_at`

func (s *sqlStore) PutPolicy(ctx context.Context, p Policy) (Policy, error) {
	if err := checkTimes(p.CreatedAt); err != nil {
		return Policy{}, err
	}
	p.Deleted = false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if p.Seq, err = s.nextPolicySeq(ctx, tx, p.Service); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO policies (`+policyColumns+`) VALUES (?, ?, ?, ?, 0, ?)`),
			p.Service, p.Seq, p.Version, p.Source, ns(p.CreatedAt)); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return Policy{}, fmt.Errorf("store: put policy %s: %w", p.Service, err)
	}
	return p, nil
}

func (s *sqlStore) nextPolicySeq(ctx context.Context, tx *sql.Tx, service string) (int64, error) {
	var seq int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(seq), 0) FROM policies WHERE service = ?`), service).Scan(&seq)
	return seq + 1, err
}

func (s *sqlStore) GetPolicy(ctx context.Context, service string) (Policy, error) {
	p, err := scanPolicy(s.db.QueryRowContext(ctx, s.q(`SELECT `+policyColumns+` FROM policies WHERE service = ? ORDER BY seq DESC LIMIT 1`), service))
	if errors.Is(err, sql.ErrNoRows) || (err == nil && p.Deleted) {
		return Policy{}, fmt.Errorf("%w: policy for %s", ErrNotFound, service)
	}
	if err != nil {
		return Policy{}, fmt.Errorf("store: get policy %s: %w", service, err)
	}
	return p, nil
}

func (s *sqlStore) ListPolicies(ctx context.Context) ([]Policy, error) {
	all, err := queryAll(ctx, s, scanPolicy, `SELECT `+policyColumns+` FROM policies p WHERE seq = (SELECT MAX(seq) FROM policies q WHERE q.service = p.service) AND deleted = 0 ORDER BY service`)
	if err != nil {
		return nil, fmt.Errorf("store: list policies: %w", err)
	}
	return all, nil
}

func (s *sqlStore) PolicyHistory(ctx context.Context, service string) ([]Policy, error) {
	all, err := queryAll(ctx, s, scanPolicy, `SELECT `+policyColumns+` FROM policies WHERE service = ? ORDER BY seq`, service)
	if err != nil {
		return nil, fmt.Errorf("store: policy history %s: %w", service, err)
	}
	return all, nil
}

func (s *sqlStore) DeletePolicy(ctx context.Context, service string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var deleted int
		err := tx.QueryRowContext(ctx, s.q(`SELECT deleted FROM policies WHERE service = ? ORDER BY seq DESC LIMIT 1`), service).Scan(&deleted)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && deleted == 1) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		seq, err := s.nextPolicySeq(ctx, tx, service)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO policies (`+policyColumns+`) VALUES (?, ?, '', ?, 1, ?)`),
			service, seq, []byte{}, ns(at)); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: policy for %s", ErrNotFound, service)
	}
	if err != nil {
		return fmt.Errorf("store: delete policy %s: %w", service, err)
	}
	return nil
}

const alertColumns = `id, rule, severity, group_key, summary, first_seen, last_seen, count, first_index, last_index, status, created_at, updated_at`

func (s *sqlStore) UpsertAlert(ctx context.Context, a Alert) (bool, error) {
	if err := checkTimes(a.FirstSeen, a.LastSeen, a.CreatedAt); err != nil {
		return false, err
	}
	if a.Status == "" {
		a.Status = AlertOpen
	}
	created := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO alerts (`+alertColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
			a.ID, a.Rule, a.Severity, a.Group, a.Summary, ns(a.FirstSeen), ns(a.LastSeen), a.Count, a.FirstIndex, a.LastIndex, a.Status, ns(a.CreatedAt), ns(a.CreatedAt))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			created = true
			return nil
		}
		// Known: only the counters move forward (a replay brings the same
		// or older values; the status an operator set is kept).
		_, err = tx.ExecContext(ctx, s.q(`UPDATE alerts SET last_seen = ?, count = ?, last_index = ?, updated_at = ? WHERE id = ? AND last_index < ?`),
			ns(a.LastSeen), a.Count, a.LastIndex, ns(a.CreatedAt), a.ID, a.LastIndex)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: upsert alert %s: %w", a.ID, err)
	}
	return created, nil
}

func (s *sqlStore) GetAlert(ctx context.Context, id string) (Alert, error) {
	a, err := scanAlert(s.db.QueryRowContext(ctx, s.q(`SELECT `+alertColumns+` FROM alerts WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Alert{}, fmt.Errorf("%w: alert %s", ErrNotFound, id)
	}
	if err != nil {
		return Alert{}, fmt.Errorf("store: get alert %s: %w", id, err)
	}
	return a, nil
}

func (s *sqlStore) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	q := `SELECT ` + alertColumns + ` FROM alerts WHERE first_seen >= ?`
	args := []any{ns(f.Since)}
	if f.Rule != "" {
		q += ` AND rule = ?`
		args = append(args, f.Rule)
	}
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	q += ` ORDER BY first_seen, id`
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	all, err := queryAll(ctx, s, scanAlert, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list alerts: %w", err)
	}
	return all, nil
}

func (s *sqlStore) SetAlertStatus(ctx context.Context, id, status string, at time.Time) error {
	switch status {
	case AlertOpen, AlertAcknowledged, AlertResolved:
	default:
		return fmt.Errorf("store: alert status %q: want open, acknowledged or resolved", status)
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE alerts SET status = ?, updated_at = ? WHERE id = ?`), status, ns(at), id)
	if err != nil {
		return fmt.Errorf("store: set alert %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: alert %s", ErrNotFound, id)
	}
	return nil
}

func scanAlert(r scanner) (Alert, error) {
	var a Alert
	var first, last, created, updated int64
	if err := r.Scan(&a.ID, &a.Rule, &a.Severity, &a.Group, &a.Summary, &first, &last, &a.Count, &a.FirstIndex, &a.LastIndex, &a.Status, &created, &updated); err != nil {
		return Alert{}, err
	}
	a.FirstSeen, a.LastSeen, a.CreatedAt, a.UpdatedAt = fromNS(first), fromNS(last), fromNS(created), fromNS(updated)
	return a, nil
}

func scanPolicy(r scanner) (Policy, error) {
	var p Policy
	var deleted int
	var created int64
	if err := r.Scan(&p.Service, &p.Seq, &p.Version, &p.Source, &deleted, &created); err != nil {
		return Policy{}, err
	}
	p.Deleted, p.CreatedAt = deleted == 1, fromNS(created)
	return p, nil
}

func (s *sqlStore) Close() error {
	s.mu.Lock()
	if s.held != nil {
		s.held.ExecContext(context.Background(), s.d.releaseAuditLog)
		s.held.Close()
		s.held = nil
	}
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: %s: close: %w", s.d.name, err)
	}
	return nil
}

// HoldAuditLog implements Store: a session-level lock on a connection kept
// out of the pool until release, so a replica that dies releases it with
// its connection.
func (s *sqlStore) HoldAuditLog(ctx context.Context) (func(), error) {
	if s.d.holdAuditLog == "" {
		return func() {}, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: audit log lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, s.d.holdAuditLog).Scan(&ok); err != nil {
		conn.Close()
		return nil, fmt.Errorf("store: audit log lock: %w", err)
	}
	if !ok {
		conn.Close()
		return nil, ErrAuditLogHeld
	}
	s.mu.Lock()
	s.held = conn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held == conn {
			conn.ExecContext(context.Background(), s.d.releaseAuditLog)
			conn.Close()
			s.held = nil
		}
	}, nil
}
