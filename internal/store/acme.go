package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ACME (package acme): external account binding keys, accounts, orders,
// authorizations, issued certificates and spent nonces.
//
// Statuses the protocol derives (an order is "ready" when every
// authorization is valid; anything pending past its expiry is "expired")
// are computed by package acme from what is stored here; the store keeps
// only the transitions that need one writer to win: a challenge attempt
// starts once, an order is finalized once, a certificate is replaced and
// revoked once, an EAB key binds once.

// ErrExpired: the object's validity ended.
var ErrExpired = errors.New("store: expired")

// ACMEStore is the ACME server's state. Both stores implement it; the
// server asserts it the way it asserts Snapshotter.
type ACMEStore interface {
	CreateACMEEABKey(ctx context.Context, k ACMEEABKey) error
	GetACMEEABKey(ctx context.Context, kid string) (ACMEEABKey, error)
	ListACMEEABKeys(ctx context.Context) ([]ACMEEABKey, error)
	// RevokeACMEEABKey marks the key revoked (ErrStateConflict if it
	// already is); the accounts bound to it can order nothing more.
	RevokeACMEEABKey(ctx context.Context, kid string, at time.Time) error

	// CreateACMEAccount stores a new account, atomically binding its EAB
	// key (if EABKeyID is set): an unknown key is ErrNotFound, a revoked
	// one ErrRevoked, one past its ExpiresAt at now ErrExpired, and a
	// single-use key already bound ErrStateConflict. An account with the
	// same key thumbprint is ErrConflict.
	CreateACMEAccount(ctx context.Context, a ACMEAccount, now time.Time) error
	GetACMEAccount(ctx context.Context, id string) (ACMEAccount, error)
	GetACMEAccountByThumbprint(ctx context.Context, thumbprint string) (ACMEAccount, error)
	// UpdateACMEAccount replaces the contact and status of a valid
	// account (ErrStateConflict if it is no longer valid).
	UpdateACMEAccount(ctx context.Context, id string, contact []string, status string, at time.Time) error
	// ChangeACMEAccountKey replaces the account's key if it is still
	// oldThumbprint (ErrStateConflict otherwise); a key another account
	// holds is ErrConflict.
	ChangeACMEAccountKey(ctx context.Context, id, oldThumbprint, newThumbprint string, newJWK []byte, at time.Time) error

	// CreateACMEOrder stores an order and its authorizations in one
	// transaction. If the order replaces a certificate (RFC 9773), the
	// certificate is marked replaced by it, unless an order that is not
	// invalid (nor pending past its expiry at now) already replaces it:
	// ErrConflict.
	CreateACMEOrder(ctx context.Context, o ACMEOrder, authzs []ACMEAuthz, now time.Time) error
	GetACMEOrder(ctx context.Context, id string) (ACMEOrder, []ACMEAuthz, error)
	// ListACMEOrders lists the IDs of an account's orders, newest first,
	// at most limit.
	ListACMEOrders(ctx context.Context, accountID string, limit int) ([]string, error)
	GetACMEAuthz(ctx context.Context, id string) (ACMEAuthz, error)
	// FinishACMEChallenge records the result of a validation of challenge
	// type typ, started at started, on a pending authorization: it
	// becomes valid, or invalid with problem (JSON) and so does its
	// order. ErrStateConflict if it is no longer pending (the result of
	// another validation was recorded first): the first result decides.
	FinishACMEChallenge(ctx context.Context, authzID, typ string, valid bool, problem []byte, started, at time.Time) error
	// DeactivateACMEAuthz deactivates a pending or valid authorization.
	DeactivateACMEAuthz(ctx context.Context, id string, at time.Time) error
	// FinalizeACMEOrder moves a pending order to processing, once
	// (ErrStateConflict if it is not pending).
	FinalizeACMEOrder(ctx context.Context, id string, at time.Time) error
	// CompleteACMEOrder stores the certificate issued for a processing
	// order and makes the order valid.
	CompleteACMEOrder(ctx context.Context, orderID string, c ACMECert, at time.Time) error
	// FailACMEOrder makes a processing order invalid with problem (JSON).
	FailACMEOrder(ctx context.Context, orderID string, problem []byte, at time.Time) error

	GetACMECert(ctx context.Context, serial string) (ACMECert, error)
	// ListACMECerts lists certificates, newest first; unexpired ones at
	// now unless f.Expired.
	ListACMECerts(ctx context.Context, f ACMECertFilter, now time.Time) ([]ACMECert, error)
	// RevokeACMECert marks the certificate revoked and adds its serial to
	// the revocation list every relying party syncs, in one transaction
	// that bumps the revision. ErrStateConflict if it is already revoked.
	RevokeACMECert(ctx context.Context, serial string, reason int, at time.Time) error
	// CountACMECerts counts the unexpired, unrevoked certificates at now,
	// and those of them that no order replaced and that are in the last
	// quarter of their lives.
	CountACMECerts(ctx context.Context, now time.Time) (valid, nearExpiry int64, err error)

	// UseACMENonce records a nonce as spent until expires: a second use
	// is ErrConflict.
	UseACMENonce(ctx context.Context, id []byte, expires time.Time) error
	// PruneACME deletes spent nonces past their expiry, orders and
	// authorizations that expired unfinished before keepUntil, and
	// certificates that expired before keepUntil.
	PruneACME(ctx context.Context, now, keepUntil time.Time) error
}

var _ ACMEStore = (*sqlStore)(nil)

// KindACMENonce is the MAC key of ACME nonces (package acme); WrappedKey
// holds it sealed, CertDER is empty.
const KindACMENonce CAKeyKind = "acme-nonce"

// ACME statuses the store records (RFC 8555 §7.1.6).
const (
	ACMEPending     = "pending"
	ACMEProcessing  = "processing"
	ACMEValid       = "valid"
	ACMEInvalid     = "invalid"
	ACMEDeactivated = "deactivated"
	ACMERevoked     = "revoked"
)

// ACMEEABKey is an external account binding key an operator created.
type ACMEEABKey struct {
	KeyID string
	// Sealed is the HMAC key sealed by keywrap (never plaintext).
	Sealed []byte
	Label  string
	// AllowedNames are the name patterns the accounts bound to the key
	// may order (empty: the server's).
	AllowedNames []string
	ClientAuth   bool // may ask for the client-auth EKU
	Reusable     bool // may bind more than one account
	Accounts     int  // accounts bound so far
	CreatedAt    time.Time
	ExpiresAt    time.Time // zero: no binding deadline
	RevokedAt    time.Time // zero unless revoked
}

// ACMEAccount is an ACME account (RFC 8555 §7.1.2).
type ACMEAccount struct {
	ID         string
	Thumbprint string // RFC 7638 SHA-256 thumbprint of the key, base64url
	JWK        []byte // the public key, JSON
	Status     string
	Contact    []string
	EABKeyID   string // empty: registered without one
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// ACMEIdentifier is an order's identifier (RFC 8555 §9.7.7, RFC 8738).
type ACMEIdentifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// ACMEOrder is an order (RFC 8555 §7.1.3).
type ACMEOrder struct {
	ID          string
	AccountID   string
	Status      string // pending, processing, valid or invalid
	Identifiers []ACMEIdentifier
	Profile     string
	Replaces    string // serial of the certificate it replaces
	Error       []byte // problem document, JSON
	CertSerial  string
	ExpiresAt   time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// ACMEAuthz is an authorization (RFC 8555 §7.1.4). Its challenges share
// Token; one of them may be attempted.
type ACMEAuthz struct {
	ID          string
	OrderID     string
	AccountID   string
	Identifier  ACMEIdentifier
	Wildcard    bool
	Status      string // pending, valid, invalid or deactivated
	Token       string
	Attempted   string // challenge type attempted; empty: none yet
	AttemptedAt time.Time
	ValidatedAt time.Time
	Error       []byte // problem document of the failed attempt, JSON
	ExpiresAt   time.Time
	CreatedAt   time.Time
}

// ACMECert is a certificate issued through ACME.
type ACMECert struct {
	Serial           string // lower-case hex
	AccountID        string
	OrderID          string
	Names            []string // DNS names and IP addresses
	Chain            []byte   // PEM, leaf first
	AKI              []byte   // authority key identifier (for RFC 9773 CertIDs)
	NotBefore        time.Time
	NotAfter         time.Time
	IssuedAt         time.Time
	RevokedAt        time.Time // zero unless revoked
	RevocationReason int       // RFC 5280 CRLReason
	ReplacedBy       string    // the order that replaces it (RFC 9773)
}

// ACMECertFilter selects certificates; empty fields match anything.
type ACMECertFilter struct {
	AccountID string
	Expired   bool // include expired certificates
	Limit     int  // 0: no limit
}

// acmeMigration is the ACME tables' migration.
func (d dialect) acmeMigration() []string {
	return []string{
		// Lists and small documents that no query selects on are JSON
		// text. Statuses the protocol derives are not stored (see the
		// comment at the top of acme.go).
		`CREATE TABLE acme_eab_keys (
			kid           TEXT PRIMARY KEY,
			sealed        ` + d.blob + ` NOT NULL,
			label         TEXT NOT NULL,
			allowed_names TEXT NOT NULL,
			client_auth   INTEGER NOT NULL,
			reusable      INTEGER NOT NULL,
			accounts      BIGINT NOT NULL,
			created_at    BIGINT NOT NULL,
			expires_at    BIGINT NOT NULL,
			revoked_at    BIGINT NOT NULL
		)`,
		`CREATE TABLE acme_accounts (
			id         TEXT PRIMARY KEY,
			thumbprint TEXT NOT NULL UNIQUE,
			jwk        TEXT NOT NULL,
			status     TEXT NOT NULL,
			contact    TEXT NOT NULL,
			eab_kid    TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL
		)`,
		`CREATE INDEX acme_accounts_eab_kid ON acme_accounts (eab_kid)`,
		`CREATE TABLE acme_orders (
			id          TEXT PRIMARY KEY,
			account_id  TEXT NOT NULL,
			status      TEXT NOT NULL,
			identifiers TEXT NOT NULL,
			profile     TEXT NOT NULL,
			replaces    TEXT NOT NULL,
			error       TEXT NOT NULL,
			cert_serial TEXT NOT NULL,
			expires_at  BIGINT NOT NULL,
			created_at  BIGINT NOT NULL,
			updated_at  BIGINT NOT NULL
		)`,
		`CREATE INDEX acme_orders_account_id ON acme_orders (account_id, created_at)`,
		`CREATE TABLE acme_authzs (
			id           TEXT PRIMARY KEY,
			order_id     TEXT NOT NULL,
			account_id   TEXT NOT NULL,
			id_type      TEXT NOT NULL,
			id_value     TEXT NOT NULL,
			wildcard     INTEGER NOT NULL,
			status       TEXT NOT NULL,
			token        TEXT NOT NULL,
			attempted    TEXT NOT NULL,
			attempted_at BIGINT NOT NULL,
			validated_at BIGINT NOT NULL,
			error        TEXT NOT NULL,
			expires_at   BIGINT NOT NULL,
			created_at   BIGINT NOT NULL
		)`,
		`CREATE INDEX acme_authzs_order_id ON acme_authzs (order_id)`,
		`CREATE TABLE acme_certs (
			serial            TEXT PRIMARY KEY,
			account_id        TEXT NOT NULL,
			order_id          TEXT NOT NULL,
			names             TEXT NOT NULL,
			chain             ` + d.blob + ` NOT NULL,
			aki               ` + d.blob + ` NOT NULL,
			not_before        BIGINT NOT NULL,
			not_after         BIGINT NOT NULL,
			issued_at         BIGINT NOT NULL,
			revoked_at        BIGINT NOT NULL,
			revocation_reason INTEGER NOT NULL,
			replaced_by       TEXT NOT NULL
		)`,
		`CREATE INDEX acme_certs_account_id ON acme_certs (account_id)`,
		`CREATE INDEX acme_certs_not_after ON acme_certs (not_after)`,
		// Spent nonces, shared by replicas: a nonce is accepted once.
		`CREATE TABLE acme_nonces (
			id         ` + d.blob + ` PRIMARY KEY,
			expires_at BIGINT NOT NULL
		)`,
	}
}

// stmt returns query (with ? placeholders) prepared once: the ACME
// server runs the same few statements for every request, and parsing
// them again each time was a tenth of its CPU.
func (s *sqlStore) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// warm prepares statements before a transaction uses them: with one
// SQLite connection, preparing inside the transaction would wait for the
// connection the transaction holds.
func (s *sqlStore) warm(ctx context.Context, queries ...string) error {
	for _, q := range queries {
		if _, err := s.stmt(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// queryRow runs a prepared single-row query.
func (s *sqlStore) queryRow(ctx context.Context, query string, args ...any) scanner {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// txExec runs in tx a statement warm prepared.
func (s *sqlStore) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, ok := s.stmts.Load(query)
	if !ok {
		return nil, fmt.Errorf("statement not prepared before the transaction: %.40s", query)
	}
	return tx.StmtContext(ctx, st.(*sql.Stmt)).ExecContext(ctx, args...)
}

// txOne runs a prepared statement in tx that must change one row; none
// is ErrNotFound.
func (s *sqlStore) txOne(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	res, err := s.txExec(ctx, tx, query, args...)
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

// txNew runs a prepared INSERT ... ON CONFLICT DO NOTHING in tx; no row
// inserted is ErrConflict.
func (s *sqlStore) txNew(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	err := s.txOne(ctx, tx, query, args...)
	if errors.Is(err, ErrNotFound) {
		return ErrConflict
	}
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// EAB keys.

const eabColumns = `kid, sealed, label, allowed_names, client_auth, reusable, accounts, created_at, expires_at, revoked_at`

func (s *sqlStore) CreateACMEEABKey(ctx context.Context, k ACMEEABKey) error {
	if err := checkTimes(k.CreatedAt, k.ExpiresAt, k.RevokedAt); err != nil {
		return err
	}
	names, err := jsonText(nonNil(k.AllowedNames))
	if err != nil {
		return fmt.Errorf("store: create ACME EAB key: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO acme_eab_keys (`+eabColumns+`) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (kid) DO NOTHING`,
			k.KeyID, k.Sealed, k.Label, names, boolInt(k.ClientAuth), boolInt(k.Reusable), ns(k.CreatedAt), ns(k.ExpiresAt), ns(k.RevokedAt))
	})
	if err != nil {
		return fmt.Errorf("store: create ACME EAB key %s: %w", k.KeyID, err)
	}
	return nil
}

func scanEAB(r scanner) (ACMEEABKey, error) {
	var k ACMEEABKey
	var names string
	var clientAuth, reusable int
	var created, expires, revoked int64
	if err := r.Scan(&k.KeyID, &k.Sealed, &k.Label, &names, &clientAuth, &reusable, &k.Accounts, &created, &expires, &revoked); err != nil {
		return ACMEEABKey{}, err
	}
	if err := json.Unmarshal([]byte(names), &k.AllowedNames); err != nil {
		return ACMEEABKey{}, fmt.Errorf("allowed_names: %w", err)
	}
	k.ClientAuth, k.Reusable = clientAuth != 0, reusable != 0
	k.CreatedAt, k.ExpiresAt, k.RevokedAt = fromNS(created), fromNS(expires), fromNS(revoked)
	return k, nil
}

func (s *sqlStore) GetACMEEABKey(ctx context.Context, kid string) (ACMEEABKey, error) {
	k, err := scanEAB(s.queryRow(ctx, `SELECT `+eabColumns+` FROM acme_eab_keys WHERE kid = ?`, kid))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMEEABKey{}, fmt.Errorf("store: ACME EAB key %s: %w", kid, ErrNotFound)
	}
	if err != nil {
		return ACMEEABKey{}, fmt.Errorf("store: ACME EAB key %s: %w", kid, err)
	}
	return k, nil
}

func (s *sqlStore) ListACMEEABKeys(ctx context.Context) ([]ACMEEABKey, error) {
	ks, err := queryAll(ctx, s, scanEAB, `SELECT `+eabColumns+` FROM acme_eab_keys ORDER BY created_at, kid`)
	if err != nil {
		return nil, fmt.Errorf("store: list ACME EAB keys: %w", err)
	}
	return ks, nil
}

func (s *sqlStore) RevokeACMEEABKey(ctx context.Context, kid string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := s.execOne(ctx, tx, `UPDATE acme_eab_keys SET revoked_at = ? WHERE kid = ? AND revoked_at = 0`, ns(at), kid)
		if errors.Is(err, ErrNotFound) {
			var n int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM acme_eab_keys WHERE kid = ?`), kid).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return ErrStateConflict
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: revoke ACME EAB key %s: %w", kid, err)
	}
	return nil
}

// Accounts.

const accountColumns = `id, thumbprint, jwk, status, contact, eab_kid, created_at, updated_at`

func (s *sqlStore) CreateACMEAccount(ctx context.Context, a ACMEAccount, now time.Time) error {
	if err := checkTimes(a.CreatedAt, a.UpdatedAt, now); err != nil {
		return err
	}
	contact, err := jsonText(nonNil(a.Contact))
	if err != nil {
		return fmt.Errorf("store: create ACME account: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if a.EABKeyID != "" {
			var revoked, expires int64
			var reusable int
			err := tx.QueryRowContext(ctx, s.q(`SELECT revoked_at, expires_at, reusable FROM acme_eab_keys WHERE kid = ?`), a.EABKeyID).
				Scan(&revoked, &expires, &reusable)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("EAB key %s: %w", a.EABKeyID, ErrNotFound)
			case err != nil:
				return err
			case revoked != 0:
				return fmt.Errorf("EAB key %s: %w", a.EABKeyID, ErrRevoked)
			case expires != 0 && expires <= ns(now):
				return fmt.Errorf("EAB key %s: %w", a.EABKeyID, ErrExpired)
			}
			// Single-use keys bind once: the conditional update lets one
			// of two concurrent registrations win.
			q := `UPDATE acme_eab_keys SET accounts = accounts + 1 WHERE kid = ? AND revoked_at = 0`
			if reusable == 0 {
				q += ` AND accounts = 0`
			}
			if err := s.execOne(ctx, tx, q, a.EABKeyID); errors.Is(err, ErrNotFound) {
				return fmt.Errorf("EAB key %s is already bound to an account: %w", a.EABKeyID, ErrStateConflict)
			} else if err != nil {
				return err
			}
		}
		err := s.insertNew(ctx, tx, `INSERT INTO acme_accounts (`+accountColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			a.ID, a.Thumbprint, string(a.JWK), a.Status, contact, a.EABKeyID, ns(a.CreatedAt), ns(a.UpdatedAt))
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("an account holds this key: %w", ErrConflict)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create ACME account: %w", err)
	}
	return nil
}

func scanAccount(r scanner) (ACMEAccount, error) {
	var a ACMEAccount
	var jwk, contact string
	var created, updated int64
	if err := r.Scan(&a.ID, &a.Thumbprint, &jwk, &a.Status, &contact, &a.EABKeyID, &created, &updated); err != nil {
		return ACMEAccount{}, err
	}
	if err := json.Unmarshal([]byte(contact), &a.Contact); err != nil {
		return ACMEAccount{}, fmt.Errorf("contact: %w", err)
	}
	a.JWK = []byte(jwk)
	a.CreatedAt, a.UpdatedAt = fromNS(created), fromNS(updated)
	return a, nil
}

func (s *sqlStore) getAccount(ctx context.Context, where string, arg any) (ACMEAccount, error) {
	a, err := scanAccount(s.queryRow(ctx, `SELECT `+accountColumns+` FROM acme_accounts WHERE `+where+` = ?`, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMEAccount{}, fmt.Errorf("store: ACME account: %w", ErrNotFound)
	}
	if err != nil {
		return ACMEAccount{}, fmt.Errorf("store: ACME account: %w", err)
	}
	return a, nil
}

func (s *sqlStore) GetACMEAccount(ctx context.Context, id string) (ACMEAccount, error) {
	return s.getAccount(ctx, "id", id)
}

func (s *sqlStore) GetACMEAccountByThumbprint(ctx context.Context, thumbprint string) (ACMEAccount, error) {
	return s.getAccount(ctx, "thumbprint", thumbprint)
}

func (s *sqlStore) UpdateACMEAccount(ctx context.Context, id string, contact []string, status string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	c, err := jsonText(nonNil(contact))
	if err != nil {
		return fmt.Errorf("store: update ACME account %s: %w", id, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return s.execOne(ctx, tx, `UPDATE acme_accounts SET contact = ?, status = ?, updated_at = ? WHERE id = ? AND status = 'valid'`,
			c, status, ns(at), id)
	})
	if errors.Is(err, ErrNotFound) {
		err = ErrStateConflict
	}
	if err != nil {
		return fmt.Errorf("store: update ACME account %s: %w", id, err)
	}
	return nil
}

func (s *sqlStore) ChangeACMEAccountKey(ctx context.Context, id, oldThumbprint, newThumbprint string, newJWK []byte, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM acme_accounts WHERE thumbprint = ?`), newThumbprint).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrConflict
		}
		err := s.execOne(ctx, tx, `UPDATE acme_accounts SET thumbprint = ?, jwk = ?, updated_at = ? WHERE id = ? AND thumbprint = ? AND status = 'valid'`,
			newThumbprint, string(newJWK), ns(at), id, oldThumbprint)
		if errors.Is(err, ErrNotFound) {
			return ErrStateConflict
		}
		return err
	})
	if err != nil {
		// A concurrent change to the same new key trips the unique
		// constraint instead of the count.
		if !errors.Is(err, ErrConflict) && !errors.Is(err, ErrStateConflict) {
			if _, gerr := s.GetACMEAccountByThumbprint(ctx, newThumbprint); gerr == nil {
				err = ErrConflict
			}
		}
		return fmt.Errorf("store: change ACME account %s key: %w", id, err)
	}
	return nil
}

// Orders and authorizations.

const orderColumns = `id, account_id, status, identifiers, profile, replaces, error, cert_serial, expires_at, created_at, updated_at`

const authzColumns = `id, order_id, account_id, id_type, id_value, wildcard, status, token, attempted, attempted_at, validated_at, error, expires_at, created_at`

// The statements of every order, prepared once (stmt).
const (
	qInsertOrder   = `INSERT INTO acme_orders (` + orderColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qInsertAuthz   = `INSERT INTO acme_authzs (` + authzColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qFinishAuthz   = `UPDATE acme_authzs SET status = ?, attempted = ?, attempted_at = ?, validated_at = ?, error = ? WHERE id = ? AND status = 'pending' RETURNING order_id`
	qCompleteOrder = `UPDATE acme_orders SET status = 'valid', cert_serial = ?, updated_at = ? WHERE id = ? AND status = 'processing'`
	qInsertCert    = `INSERT INTO acme_certs (` + certColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`
	qInsertNonce   = `INSERT INTO acme_nonces (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`
)

func (s *sqlStore) CreateACMEOrder(ctx context.Context, o ACMEOrder, authzs []ACMEAuthz, now time.Time) error {
	if err := checkTimes(o.ExpiresAt, o.CreatedAt, o.UpdatedAt, now); err != nil {
		return err
	}
	ids, err := jsonText(o.Identifiers)
	if err != nil {
		return fmt.Errorf("store: create ACME order: %w", err)
	}
	if err := s.warm(ctx, qInsertOrder, qInsertAuthz); err != nil {
		return fmt.Errorf("store: create ACME order %s: %w", o.ID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if o.Replaces != "" {
			if err := s.markReplaced(ctx, tx, o.Replaces, o.ID, now); err != nil {
				return err
			}
		}
		if err := s.txNew(ctx, tx, qInsertOrder,
			o.ID, o.AccountID, o.Status, ids, o.Profile, o.Replaces, string(o.Error), o.CertSerial, ns(o.ExpiresAt), ns(o.CreatedAt), ns(o.UpdatedAt)); err != nil {
			return err
		}
		for _, a := range authzs {
			if err := checkTimes(a.AttemptedAt, a.ValidatedAt, a.ExpiresAt, a.CreatedAt); err != nil {
				return err
			}
			if err := s.txNew(ctx, tx, qInsertAuthz,
				a.ID, o.ID, o.AccountID, a.Identifier.Type, a.Identifier.Value, boolInt(a.Wildcard), a.Status, a.Token, a.Attempted,
				ns(a.AttemptedAt), ns(a.ValidatedAt), string(a.Error), ns(a.ExpiresAt), ns(a.CreatedAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: create ACME order %s: %w", o.ID, err)
	}
	return nil
}

// markReplaced marks certificate serial replaced by order, unless a live
// order already replaces it (RFC 9773 §5): one that is not invalid and not
// pending past its expiry.
func (s *sqlStore) markReplaced(ctx context.Context, tx *sql.Tx, serial, order string, now time.Time) error {
	var prev string
	err := tx.QueryRowContext(ctx, s.q(`SELECT replaced_by FROM acme_certs WHERE serial = ?`), serial).Scan(&prev)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if prev != "" {
		var status string
		var expires int64
		err := tx.QueryRowContext(ctx, s.q(`SELECT status, expires_at FROM acme_orders WHERE id = ?`), prev).Scan(&status, &expires)
		switch {
		case errors.Is(err, sql.ErrNoRows): // pruned
		case err != nil:
			return err
		case status == ACMEInvalid, status == ACMEPending && expires <= ns(now):
		default:
			return fmt.Errorf("certificate %s is already replaced by order %s: %w", serial, prev, ErrConflict)
		}
	}
	// Compare-and-set: of two orders replacing the same certificate at
	// once, one wins.
	if err := s.execOne(ctx, tx, `UPDATE acme_certs SET replaced_by = ? WHERE serial = ? AND replaced_by = ?`, order, serial, prev); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("certificate %s was replaced concurrently: %w", serial, ErrConflict)
		}
		return err
	}
	return nil
}

func scanOrder(r scanner) (ACMEOrder, error) {
	var o ACMEOrder
	var ids, problem string
	var expires, created, updated int64
	if err := r.Scan(&o.ID, &o.AccountID, &o.Status, &ids, &o.Profile, &o.Replaces, &problem, &o.CertSerial, &expires, &created, &updated); err != nil {
		return ACMEOrder{}, err
	}
	if err := json.Unmarshal([]byte(ids), &o.Identifiers); err != nil {
		return ACMEOrder{}, fmt.Errorf("identifiers: %w", err)
	}
	if problem != "" {
		o.Error = []byte(problem)
	}
	o.ExpiresAt, o.CreatedAt, o.UpdatedAt = fromNS(expires), fromNS(created), fromNS(updated)
	return o, nil
}

func scanAuthz(r scanner) (ACMEAuthz, error) {
	var a ACMEAuthz
	var wildcard int
	var problem string
	var attempted, validated, expires, created int64
	if err := r.Scan(&a.ID, &a.OrderID, &a.AccountID, &a.Identifier.Type, &a.Identifier.Value, &wildcard, &a.Status, &a.Token,
		&a.Attempted, &attempted, &validated, &problem, &expires, &created); err != nil {
		return ACMEAuthz{}, err
	}
	a.Wildcard = wildcard != 0
	if problem != "" {
		a.Error = []byte(problem)
	}
	a.AttemptedAt, a.ValidatedAt, a.ExpiresAt, a.CreatedAt = fromNS(attempted), fromNS(validated), fromNS(expires), fromNS(created)
	return a, nil
}

func (s *sqlStore) GetACMEOrder(ctx context.Context, id string) (ACMEOrder, []ACMEAuthz, error) {
	o, err := scanOrder(s.queryRow(ctx, `SELECT `+orderColumns+` FROM acme_orders WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMEOrder{}, nil, fmt.Errorf("store: ACME order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return ACMEOrder{}, nil, fmt.Errorf("store: ACME order %s: %w", id, err)
	}
	as, err := s.authzsOf(ctx, id)
	if err != nil {
		return ACMEOrder{}, nil, fmt.Errorf("store: ACME order %s authorizations: %w", id, err)
	}
	return o, as, nil
}

func (s *sqlStore) authzsOf(ctx context.Context, orderID string) ([]ACMEAuthz, error) {
	st, err := s.stmt(ctx, `SELECT `+authzColumns+` FROM acme_authzs WHERE order_id = ? ORDER BY id`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, orderID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ACMEAuthz
	for rows.Next() {
		a, err := scanAuthz(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *sqlStore) ListACMEOrders(ctx context.Context, accountID string, limit int) ([]string, error) {
	ids, err := queryAll(ctx, s, func(r scanner) (string, error) {
		var id string
		return id, r.Scan(&id)
	}, `SELECT id FROM acme_orders WHERE account_id = ? ORDER BY created_at DESC, id LIMIT ?`, accountID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list ACME orders: %w", err)
	}
	return ids, nil
}

func (s *sqlStore) GetACMEAuthz(ctx context.Context, id string) (ACMEAuthz, error) {
	a, err := scanAuthz(s.queryRow(ctx, `SELECT `+authzColumns+` FROM acme_authzs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMEAuthz{}, fmt.Errorf("store: ACME authorization %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return ACMEAuthz{}, fmt.Errorf("store: ACME authorization %s: %w", id, err)
	}
	return a, nil
}

// changeOne runs one conditional UPDATE in a transaction; no row changed
// is ErrStateConflict.
func (s *sqlStore) changeOne(ctx context.Context, what, query string, args ...any) error {
	err := s.warm(ctx, query)
	if err == nil {
		err = s.inTx(ctx, func(tx *sql.Tx) error { return s.txOne(ctx, tx, query, args...) })
	}
	if errors.Is(err, ErrNotFound) {
		err = ErrStateConflict
	}
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	return nil
}

func (s *sqlStore) FinishACMEChallenge(ctx context.Context, authzID, typ string, valid bool, problem []byte, started, at time.Time) error {
	if err := checkTimes(started, at); err != nil {
		return err
	}
	status := ACMEValid
	if !valid {
		status = ACMEInvalid
	}
	st, err := s.stmt(ctx, qFinishAuthz)
	if err != nil {
		return fmt.Errorf("store: finish ACME challenge %s/%s: %w", authzID, typ, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var orderID string
		err := tx.StmtContext(ctx, st).QueryRowContext(ctx, status, typ, ns(started), ns(at), string(problem), authzID).Scan(&orderID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrStateConflict
		}
		if err != nil || valid {
			return err
		}
		// One failed authorization fails its order (RFC 8555 §7.1.6).
		_, err = tx.ExecContext(ctx, s.q(`UPDATE acme_orders SET status = 'invalid', error = ?, updated_at = ? WHERE id = ? AND status = 'pending'`),
			string(problem), ns(at), orderID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: finish ACME challenge %s/%s: %w", authzID, typ, err)
	}
	return nil
}

func (s *sqlStore) DeactivateACMEAuthz(ctx context.Context, id string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	return s.changeOne(ctx, "deactivate ACME authorization "+id,
		`UPDATE acme_authzs SET status = 'deactivated', validated_at = ? WHERE id = ? AND status IN ('pending', 'valid')`, ns(at), id)
}

func (s *sqlStore) FinalizeACMEOrder(ctx context.Context, id string, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	return s.changeOne(ctx, "finalize ACME order "+id,
		`UPDATE acme_orders SET status = 'processing', updated_at = ? WHERE id = ? AND status = 'pending'`, ns(at), id)
}

const certColumns = `serial, account_id, order_id, names, chain, aki, not_before, not_after, issued_at, revoked_at, revocation_reason, replaced_by`

func (s *sqlStore) CompleteACMEOrder(ctx context.Context, orderID string, c ACMECert, at time.Time) error {
	if err := checkTimes(c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt, at); err != nil {
		return err
	}
	names, err := jsonText(nonNil(c.Names))
	if err != nil {
		return fmt.Errorf("store: complete ACME order %s: %w", orderID, err)
	}
	if err := s.warm(ctx, qCompleteOrder, qInsertCert); err != nil {
		return fmt.Errorf("store: complete ACME order %s: %w", orderID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.txOne(ctx, tx, qCompleteOrder,
			c.Serial, ns(at), orderID); err != nil {
			if errors.Is(err, ErrNotFound) {
				return ErrStateConflict
			}
			return err
		}
		return s.txNew(ctx, tx, qInsertCert,
			c.Serial, c.AccountID, orderID, names, c.Chain, nonNilBytes(c.AKI), ns(c.NotBefore), ns(c.NotAfter), ns(c.IssuedAt), ns(c.RevokedAt), c.RevocationReason, c.ReplacedBy)
	})
	if err != nil {
		return fmt.Errorf("store: complete ACME order %s: %w", orderID, err)
	}
	return nil
}

func (s *sqlStore) FailACMEOrder(ctx context.Context, orderID string, problem []byte, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	return s.changeOne(ctx, "fail ACME order "+orderID,
		`UPDATE acme_orders SET status = 'invalid', error = ?, updated_at = ? WHERE id = ? AND status = 'processing'`, string(problem), ns(at), orderID)
}

func scanCert(r scanner) (ACMECert, error) {
	var c ACMECert
	var names string
	var notBefore, notAfter, issued, revoked int64
	if err := r.Scan(&c.Serial, &c.AccountID, &c.OrderID, &names, &c.Chain, &c.AKI, &notBefore, &notAfter, &issued, &revoked,
		&c.RevocationReason, &c.ReplacedBy); err != nil {
		return ACMECert{}, err
	}
	if err := json.Unmarshal([]byte(names), &c.Names); err != nil {
		return ACMECert{}, fmt.Errorf("names: %w", err)
	}
	c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt = fromNS(notBefore), fromNS(notAfter), fromNS(issued), fromNS(revoked)
	return c, nil
}

func (s *sqlStore) GetACMECert(ctx context.Context, serial string) (ACMECert, error) {
	c, err := scanCert(s.queryRow(ctx, `SELECT `+certColumns+` FROM acme_certs WHERE serial = ?`, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMECert{}, fmt.Errorf("store: ACME certificate %s: %w", serial, ErrNotFound)
	}
	if err != nil {
		return ACMECert{}, fmt.Errorf("store: ACME certificate %s: %w", serial, err)
	}
	return c, nil
}

func (s *sqlStore) ListACMECerts(ctx context.Context, f ACMECertFilter, now time.Time) ([]ACMECert, error) {
	if err := checkTimes(now); err != nil {
		return nil, err
	}
	q := `SELECT ` + certColumns + ` FROM acme_certs WHERE 1 = 1`
	var args []any
	if f.AccountID != "" {
		q += ` AND account_id = ?`
		args = append(args, f.AccountID)
	}
	if !f.Expired {
		q += ` AND not_after > ?`
		args = append(args, ns(now))
	}
	q += ` ORDER BY issued_at DESC, serial`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	cs, err := queryAll(ctx, s, scanCert, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list ACME certificates: %w", err)
	}
	return cs, nil
}

func (s *sqlStore) RevokeACMECert(ctx context.Context, serial string, reason int, at time.Time) error {
	if err := checkTimes(at); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var notAfter int64
		err := tx.QueryRowContext(ctx, s.q(`UPDATE acme_certs SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at = 0 RETURNING not_after`),
			ns(at), reason, serial).Scan(&notAfter)
		if errors.Is(err, sql.ErrNoRows) {
			var n int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM acme_certs WHERE serial = ?`), serial).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return ErrNotFound
			}
			return ErrStateConflict
		}
		if err != nil {
			return err
		}
		// Relying parties that sync revocations (proxies, the SDK) refuse
		// it too.
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO revocations (`+revocationColumns+`) VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`),
			serial, "", fmt.Sprintf("acme: CRLReason %d", reason), ns(at), notAfter); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: revoke ACME certificate %s: %w", serial, err)
	}
	return nil
}

func (s *sqlStore) CountACMECerts(ctx context.Context, now time.Time) (valid, nearExpiry int64, err error) {
	if err := checkTimes(now); err != nil {
		return 0, 0, err
	}
	// The last quarter of a life: not_after - now < (not_after - not_before) / 4,
	// in integers: 4 * (not_after - now) < not_after - not_before.
	err = s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*),
		COALESCE(SUM(CASE WHEN replaced_by = '' AND 4 * (not_after - ?) < not_after - not_before THEN 1 ELSE 0 END), 0)
		FROM acme_certs WHERE not_after > ? AND revoked_at = 0`), ns(now), ns(now)).Scan(&valid, &nearExpiry)
	if err != nil {
		return 0, 0, fmt.Errorf("store: count ACME certificates: %w", err)
	}
	return valid, nearExpiry, nil
}

func (s *sqlStore) UseACMENonce(ctx context.Context, id []byte, expires time.Time) error {
	if err := checkTimes(expires); err != nil {
		return err
	}
	err := s.warm(ctx, qInsertNonce)
	if err == nil {
		err = s.inTx(ctx, func(tx *sql.Tx) error { return s.txNew(ctx, tx, qInsertNonce, id, ns(expires)) })
	}
	if err != nil {
		return fmt.Errorf("store: use ACME nonce: %w", err)
	}
	return nil
}

func (s *sqlStore) PruneACME(ctx context.Context, now, keepUntil time.Time) error {
	if err := checkTimes(now, keepUntil); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, st := range []struct {
			q   string
			arg time.Time
		}{
			{`DELETE FROM acme_nonces WHERE expires_at < ?`, now},
			{`DELETE FROM acme_authzs WHERE expires_at < ?`, keepUntil},
			{`DELETE FROM acme_orders WHERE expires_at < ? AND status <> 'valid'`, keepUntil},
			{`DELETE FROM acme_certs WHERE not_after < ?`, keepUntil},
			{`DELETE FROM acme_orders WHERE status = 'valid' AND cert_serial NOT IN (SELECT serial FROM acme_certs)`, time.Time{}},
		} {
			args := []any{}
			if !st.arg.IsZero() {
				args = append(args, ns(st.arg))
			}
			if _, err := tx.ExecContext(ctx, s.q(st.q), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: prune ACME: %w", err)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
