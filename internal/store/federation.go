package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Federation (package federation): the trust domains this one federates
// with, each with the endpoint its bundle is fetched from and the last
// bundle accepted. Like the scan and netpol tables they sit beside the
// Store interface: FederationStore is what the server's federation
// handlers and refresher need, and both backends implement it.

// Federation is one federation relationship.
type Federation struct {
	TrustDomain string // the other trust domain's name; the key
	BundleURL   string // https URL of its bundle endpoint
	Profile     string // "https_spiffe" or "https_web"
	EndpointID  string // https_spiffe: the SPIFFE ID the endpoint must present
	// Bundle is the last SPIFFE bundle accepted (JSON, as the endpoint
	// served it, or as the operator supplied it at creation); nil: none
	// yet.
	Bundle      []byte
	RefreshedAt time.Time // when Bundle was last accepted or confirmed
	NextRefresh time.Time // when the refresher fetches again
	LastAttempt time.Time
	LastError   string // the last fetch's failure; empty after a success
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// FederationStore keeps federation relationships.
type FederationStore interface {
	// CreateFederation stores a new relationship (ErrConflict if one for
	// the trust domain exists) and bumps the revision.
	CreateFederation(ctx context.Context, f Federation) error
	GetFederation(ctx context.Context, trustDomain string) (Federation, error)
	// ListFederations lists every relationship, ordered by trust domain.
	ListFederations(ctx context.Context) ([]Federation, error)
	// UpdateFederation replaces every field of the relationship but its
	// trust domain and creation time, and bumps the revision.
	UpdateFederation(ctx context.Context, f Federation) error
	// DeleteFederation removes the relationship and its bundle, and bumps
	// the revision.
	DeleteFederation(ctx context.Context, trustDomain string) error
	// SetFederatedBundle records a bundle the refresher accepted, and
	// bumps the revision when it differs from the one held (agents and
	// proxies must learn it).
	SetFederatedBundle(ctx context.Context, trustDomain string, bundle []byte, at, next time.Time) error
	// RecordFederationAttempt records a fetch that failed (errText) or
	// brought the bundle already held (empty errText); the bundle is kept
	// and the revision does not move.
	RecordFederationAttempt(ctx context.Context, trustDomain string, at, next time.Time, errText string) error
}

var _ FederationStore = (*sqlStore)(nil)

// Federations returns the federation table of a store, if it has one.
func Federations(s Store) (FederationStore, bool) {
	fs, ok := s.(FederationStore)
	return fs, ok
}

func (d dialect) federationMigration() []string {
	return []string{
		`CREATE TABLE federations (
			trust_domain TEXT PRIMARY KEY,
			bundle_url   TEXT NOT NULL,
			profile      TEXT NOT NULL,
			endpoint_id  TEXT NOT NULL,
			bundle       ` + d.blob + `,
			refreshed_at BIGINT NOT NULL,
			next_refresh BIGINT NOT NULL,
			last_attempt BIGINT NOT NULL,
			last_error   TEXT NOT NULL,
			created_at   BIGINT NOT NULL,
			updated_at   BIGINT NOT NULL
		)`,
	}
}

const federationColumns = `trust_domain, bundle_url, profile, endpoint_id, bundle, refreshed_at, next_refresh, last_attempt, last_error, created_at, updated_at`

func scanFederation(r scanner) (Federation, error) {
	var f Federation
	var refreshed, next, attempt, created, updated int64
	if err := r.Scan(&f.TrustDomain, &f.BundleURL, &f.Profile, &f.EndpointID, &f.Bundle, &refreshed, &next, &attempt, &f.LastError, &created, &updated); err != nil {
		return Federation{}, err
	}
	f.RefreshedAt, f.NextRefresh, f.LastAttempt = fromNS(refreshed), fromNS(next), fromNS(attempt)
	f.CreatedAt, f.UpdatedAt = fromNS(created), fromNS(updated)
	if len(f.Bundle) == 0 {
		f.Bundle = nil
	}
	return f, nil
}

func (s *sqlStore) CreateFederation(ctx context.Context, f Federation) error {
	if err := checkTimes(f.RefreshedAt, f.NextRefresh, f.LastAttempt, f.CreatedAt, f.UpdatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertNew(ctx, tx, `INSERT INTO federations (`+federationColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trust_domain) DO NOTHING`,
			f.TrustDomain, f.BundleURL, f.Profile, f.EndpointID, f.Bundle, ns(f.RefreshedAt), ns(f.NextRefresh), ns(f.LastAttempt), f.LastError, ns(f.CreatedAt), ns(f.UpdatedAt)); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: create federation with %s: %w", f.TrustDomain, err)
	}
	return nil
}

func (s *sqlStore) GetFederation(ctx context.Context, trustDomain string) (Federation, error) {
	f, err := scanFederation(s.db.QueryRowContext(ctx, s.q(`SELECT `+federationColumns+` FROM federations WHERE trust_domain = ?`), trustDomain))
	if errors.Is(err, sql.ErrNoRows) {
		return Federation{}, fmt.Errorf("%w: federation with %s", ErrNotFound, trustDomain)
	}
	if err != nil {
		return Federation{}, fmt.Errorf("store: federation with %s: %w", trustDomain, err)
	}
	return f, nil
}

func (s *sqlStore) ListFederations(ctx context.Context) ([]Federation, error) {
	out, err := queryAll(ctx, s, scanFederation, `SELECT `+federationColumns+` FROM federations ORDER BY trust_domain`)
	if err != nil {
		return nil, fmt.Errorf("store: list federations: %w", err)
	}
	return out, nil
}

func (s *sqlStore) UpdateFederation(ctx context.Context, f Federation) error {
	if err := checkTimes(f.RefreshedAt, f.NextRefresh, f.LastAttempt, f.UpdatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `UPDATE federations SET bundle_url = ?, profile = ?, endpoint_id = ?, bundle = ?, refreshed_at = ?, next_refresh = ?, last_attempt = ?, last_error = ?, updated_at = ? WHERE trust_domain = ?`,
			f.BundleURL, f.Profile, f.EndpointID, f.Bundle, ns(f.RefreshedAt), ns(f.NextRefresh), ns(f.LastAttempt), f.LastError, ns(f.UpdatedAt), f.TrustDomain); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: update federation with %s: %w", f.TrustDomain, err)
	}
	return nil
}

func (s *sqlStore) DeleteFederation(ctx context.Context, trustDomain string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `DELETE FROM federations WHERE trust_domain = ?`, trustDomain); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: delete federation with %s: %w", trustDomain, err)
	}
	return nil
}

func (s *sqlStore) SetFederatedBundle(ctx context.Context, trustDomain string, bundle []byte, at, next time.Time) error {
	if err := checkTimes(at, next); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var old []byte
		if err := tx.QueryRowContext(ctx, s.q(`SELECT bundle FROM federations WHERE trust_domain = ?`), trustDomain).Scan(&old); errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if err := s.execOne(ctx, tx, `UPDATE federations SET bundle = ?, refreshed_at = ?, next_refresh = ?, last_attempt = ?, last_error = '' WHERE trust_domain = ?`,
			bundle, ns(at), ns(next), ns(at), trustDomain); err != nil {
			return err
		}
		if string(old) == string(bundle) {
			return nil
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: set the bundle of %s: %w", trustDomain, err)
	}
	return nil
}

func (s *sqlStore) RecordFederationAttempt(ctx context.Context, trustDomain string, at, next time.Time, errText string) error {
	if err := checkTimes(at, next); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		q := `UPDATE federations SET next_refresh = ?, last_attempt = ?, last_error = ? WHERE trust_domain = ?`
		args := []any{ns(next), ns(at), errText, trustDomain}
		if errText == "" {
			q = `UPDATE federations SET next_refresh = ?, last_attempt = ?, last_error = ?, refreshed_at = ? WHERE trust_domain = ?`
			args = []any{ns(next), ns(at), errText, ns(at), trustDomain}
		}
		return s.execOne(ctx, tx, q, args...)
	})
	if err != nil {
		return fmt.Errorf("store: record a fetch of %s: %w", trustDomain, err)
	}
	return nil
}
