package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Operators (package operator) and the device codes of the OAuth device
// authorization grant (RFC 8628, package oauth) they sign in with.

// Operator kinds.
const (
	// OperatorUser: a person, the OAuth user of the same name.
	OperatorUser = "user"
	// OperatorWorkload: the workloads whose SPIFFE ID matches the
	// operator's name, a pattern (SPIRE's admin IDs).
	OperatorWorkload = "workload"
)

// Operator holds roles: a person or a pattern of workloads.
type Operator struct {
	// Name is the OAuth username (kind user) or a SPIFFE ID pattern
	// (kind workload).
	Name     string
	Kind     string
	Roles    []OperatorRole
	Disabled bool
	// RequireMFA: the operator's tokens must come from a login with a
	// second factor (amr contains "otp"). Users only; on by default.
	RequireMFA bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
	// By names who made the last change (an audit actor's user or SPIFFE ID).
	By string
}

// OperatorRole is one role held, optionally only for some services (SPIFFE
// ID patterns; empty: all).
type OperatorRole struct {
	Role     string   `json:"role"`
	Services []string `json:"services,omitempty"`
}

// DeviceCode is a pending RFC 8628 device authorization, stored by the
// SHA-256 of its device code and of its user code.
type DeviceCode struct {
	DeviceHash []byte
	UserHash   []byte
	ClientID   string
	Scope      string
	// Status: DevicePending, DeviceApproved, DeviceDenied, DeviceUsed.
	Status string
	// Subject and Data are set when a user approves: who, and the
	// issuer's own record of the login (authentication methods, time).
	Subject   string
	Data      []byte
	ExpiresAt time.Time
	// LastPoll and Interval pace the client's polling (RFC 8628 §3.5).
	LastPoll  time.Time
	Interval  time.Duration
	CreatedAt time.Time
}

// Device code statuses.
const (
	DevicePending  = "pending"
	DeviceApproved = "approved"
	DeviceDenied   = "denied"
	DeviceUsed     = "used"
)

// OperatorStore keeps operators and device codes. Both stores implement
// it; Operators asserts it.
type OperatorStore interface {
	// CreateOperator stores a new operator; one of the same name is
	// ErrConflict.
	CreateOperator(ctx context.Context, o Operator) error
	GetOperator(ctx context.Context, name string) (Operator, error)
	// ListOperators lists every operator by name.
	ListOperators(ctx context.Context) ([]Operator, error)
	// UpdateOperator replaces roles, disabled, MFA and by; it bumps the
	// revision so every replica drops what it cached.
	UpdateOperator(ctx context.Context, o Operator) error

	// CreateDeviceCode stores a pending device authorization; a device or
	// user code hash already stored is ErrConflict.
	CreateDeviceCode(ctx context.Context, d DeviceCode) error
	// GetDeviceCodeByUser finds a device authorization by its user code.
	GetDeviceCodeByUser(ctx context.Context, userHash []byte) (DeviceCode, error)
	// DecideDeviceCode approves (with subject and data) or denies a
	// pending, unexpired device authorization: once (ErrStateConflict if
	// it was decided or has expired).
	DecideDeviceCode(ctx context.Context, userHash []byte, approve bool, subject string, data []byte, now time.Time) error
	// PollDeviceCode records a poll at now and returns the authorization
	// as it was, with slowDown set (and the interval grown by five
	// seconds) if the client polled sooner than its interval allows. An
	// approved one is marked used in the same transaction, so only one
	// poll ever sees DeviceApproved.
	PollDeviceCode(ctx context.Context, deviceHash []byte, now time.Time) (d DeviceCode, slowDown bool, err error)
}

var _ OperatorStore = (*sqlStore)(nil)

// Operators returns the operator tables of a store, if it has them.
func Operators(s Store) (OperatorStore, bool) {
	os, ok := s.(OperatorStore)
	return os, ok
}

// operatorMigration creates the operator and device code tables.
func (d dialect) operatorMigration() []string {
	return []string{
		`CREATE TABLE operators (
			name       TEXT PRIMARY KEY,
			kind       TEXT NOT NULL,
			data       TEXT NOT NULL,
			disabled   INTEGER NOT NULL,
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL
		)`,
		`CREATE TABLE oauth_device_codes (
			device_hash ` + d.blob + ` PRIMARY KEY,
			user_hash   ` + d.blob + ` NOT NULL UNIQUE,
			client_id   TEXT NOT NULL,
			scope       TEXT NOT NULL,
			status      TEXT NOT NULL,
			subject     TEXT NOT NULL,
			data        ` + d.blob + ` NOT NULL,
			expires_at  BIGINT NOT NULL,
			last_poll   BIGINT NOT NULL,
			poll_every  BIGINT NOT NULL,
			created_at  BIGINT NOT NULL
		)`,
	}
}

// operatorData is the part of an operator no query selects on.
type operatorData struct {
	Roles      []OperatorRole `json:"roles"`
	RequireMFA bool           `json:"require_mfa,omitempty"`
	By         string         `json:"by,omitempty"`
}

func (s *sqlStore) CreateOperator(ctx context.Context, o Operator) error {
	if err := checkTimes(o.CreatedAt); err != nil {
		return err
	}
	data, err := json.Marshal(operatorData{Roles: o.Roles, RequireMFA: o.RequireMFA, By: o.By})
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertNew(ctx, tx, `INSERT INTO operators (name, kind, data, disabled, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, o.Name, o.Kind, string(data), boolInt(o.Disabled), ns(o.CreatedAt), ns(o.CreatedAt)); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: create operator %s: %w", o.Name, err)
	}
	return nil
}

func scanOperator(r scanner) (Operator, error) {
	var o Operator
	var data string
	var disabled int
	var created, updated int64
	if err := r.Scan(&o.Name, &o.Kind, &data, &disabled, &created, &updated); err != nil {
		return Operator{}, err
	}
	var d operatorData
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		return Operator{}, fmt.Errorf("operator %s: %w", o.Name, err)
	}
	o.Roles, o.RequireMFA, o.By = d.Roles, d.RequireMFA, d.By
	o.Disabled, o.CreatedAt, o.UpdatedAt = disabled != 0, fromNS(created), fromNS(updated)
	return o, nil
}

const operatorColumns = `name, kind, data, disabled, created_at, updated_at`

func (s *sqlStore) GetOperator(ctx context.Context, name string) (Operator, error) {
	o, err := scanOperator(s.db.QueryRowContext(ctx, s.q(`SELECT `+operatorColumns+` FROM operators WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return Operator{}, ErrNotFound
	}
	if err != nil {
		return Operator{}, fmt.Errorf("store: get operator %s: %w", name, err)
	}
	return o, nil
}

func (s *sqlStore) ListOperators(ctx context.Context) ([]Operator, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+operatorColumns+` FROM operators ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list operators: %w", err)
	}
	defer rows.Close()
	var out []Operator
	for rows.Next() {
		o, err := scanOperator(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list operators: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

func (s *sqlStore) UpdateOperator(ctx context.Context, o Operator) error {
	if err := checkTimes(o.UpdatedAt); err != nil {
		return err
	}
	data, err := json.Marshal(operatorData{Roles: o.Roles, RequireMFA: o.RequireMFA, By: o.By})
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `UPDATE operators SET data = ?, disabled = ?, updated_at = ? WHERE name = ?`,
			string(data), boolInt(o.Disabled), ns(o.UpdatedAt), o.Name); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: update operator %s: %w", o.Name, err)
	}
	return nil
}

const deviceColumns = `device_hash, user_hash, client_id, scope, status, subject, data, expires_at, last_poll, poll_every, created_at`

func scanDevice(r scanner) (DeviceCode, error) {
	var d DeviceCode
	var exp, last, every, created int64
	if err := r.Scan(&d.DeviceHash, &d.UserHash, &d.ClientID, &d.Scope, &d.Status, &d.Subject, &d.Data, &exp, &last, &every, &created); err != nil {
		return DeviceCode{}, err
	}
	d.ExpiresAt, d.LastPoll, d.Interval, d.CreatedAt = fromNS(exp), fromNS(last), time.Duration(every), fromNS(created)
	return d, nil
}

func (s *sqlStore) CreateDeviceCode(ctx context.Context, d DeviceCode) error {
	if err := checkTimes(d.CreatedAt, d.ExpiresAt); err != nil {
		return err
	}
	if d.Data == nil {
		d.Data = []byte{}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO oauth_device_codes (`+deviceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			d.DeviceHash, d.UserHash, d.ClientID, d.Scope, DevicePending, "", d.Data, ns(d.ExpiresAt), ns(d.LastPoll), int64(d.Interval), ns(d.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: create device code: %w", err)
	}
	return nil
}

func (s *sqlStore) GetDeviceCodeByUser(ctx context.Context, userHash []byte) (DeviceCode, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, s.q(`SELECT `+deviceColumns+` FROM oauth_device_codes WHERE user_hash = ?`), userHash))
	if errors.Is(err, sql.ErrNoRows) {
		return DeviceCode{}, ErrNotFound
	}
	if err != nil {
		return DeviceCode{}, fmt.Errorf("store: get device code: %w", err)
	}
	return d, nil
}

func (s *sqlStore) DecideDeviceCode(ctx context.Context, userHash []byte, approve bool, subject string, data []byte, now time.Time) error {
	if err := checkTimes(now); err != nil {
		return err
	}
	status := DeviceDenied
	if approve {
		status = DeviceApproved
	}
	if data == nil {
		data = []byte{}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := s.execOne(ctx, tx, `UPDATE oauth_device_codes SET status = ?, subject = ?, data = ?
			WHERE user_hash = ? AND status = ? AND expires_at > ?`, status, subject, data, userHash, DevicePending, ns(now))
		if errors.Is(err, ErrNotFound) {
			var n int
			if tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM oauth_device_codes WHERE user_hash = ?`), userHash).Scan(&n); n > 0 {
				return ErrStateConflict
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: decide device code: %w", err)
	}
	return nil
}

func (s *sqlStore) PollDeviceCode(ctx context.Context, deviceHash []byte, now time.Time) (DeviceCode, bool, error) {
	if err := checkTimes(now); err != nil {
		return DeviceCode{}, false, err
	}
	var d DeviceCode
	slow := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Claim the row first (an UPDATE takes the write lock in both
		// backends), then read it: two polls at once are serialised.
		if err := s.execOne(ctx, tx, `UPDATE oauth_device_codes SET created_at = created_at WHERE device_hash = ?`, deviceHash); err != nil {
			return err
		}
		var err error
		if d, err = scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceColumns+` FROM oauth_device_codes WHERE device_hash = ?`), deviceHash)); err != nil {
			return err
		}
		every := d.Interval
		if !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < d.Interval {
			// RFC 8628 §3.5: slow_down, "the interval MUST be
			// increased by 5 seconds for this and all subsequent
			// requests".
			slow = true
			every += 5 * time.Second
		}
		next := d.Status
		if d.Status == DeviceApproved && !slow {
			next = DeviceUsed
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE oauth_device_codes SET last_poll = ?, poll_every = ?, status = ? WHERE device_hash = ?`),
			ns(now), int64(every), next, deviceHash)
		return err
	})
	if err != nil {
		return DeviceCode{}, false, fmt.Errorf("store: poll device code: %w", err)
	}
	return d, slow, nil
}
