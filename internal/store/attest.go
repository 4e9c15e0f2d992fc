package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Node attestation challenges (x509pop, tpm): a nonce the server issued
// to one would-be agent, kept (as its SHA-256) until it is answered or
// expires, in the store every replica shares, so it is answered once.

// AttestChallenge is an issued, unanswered challenge.
type AttestChallenge struct {
	Hash      []byte // SHA-256 of the nonce; the nonce itself is never stored
	Kind      string // the attestor: "x509pop", "tpm"
	Subject   string // who it was issued to (the agent ID it would attest)
	State     []byte // what the attestor must remember (the TPM credential's secret hash)
	ExpiresAt time.Time
	CreatedAt time.Time
}

func (d dialect) attestMigration() []string {
	return []string{
		`CREATE TABLE attest_challenges (
			hash       ` + d.blob + ` PRIMARY KEY,
			kind       TEXT NOT NULL,
			subject    TEXT NOT NULL,
			state      ` + d.blob + ` NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX attest_challenges_subject ON attest_challenges (kind, subject)`,
	}
}

// CreateAttestChallenge records c. Expired challenges of the same subject
// are dropped first; a subject with quota live ones gets ErrQuota (anyone
// holding a copy of a node's public certificate may ask for challenges in
// its name, and must not fill the table).
func (s *sqlStore) CreateAttestChallenge(ctx context.Context, c AttestChallenge, now time.Time, quota int) error {
	if err := checkTimes(c.ExpiresAt, c.CreatedAt, now); err != nil {
		return err
	}
	if quota < 1 {
		return fmt.Errorf("store: attest challenge quota %d: must be positive", quota)
	}
	if c.State == nil {
		c.State = []byte{}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// As UseDPoPProof: count and insert in one step (a lock per
		// subject in PostgreSQL; SQLite's first statement writes).
		if s.d.lockKey != "" {
			if _, err := tx.ExecContext(ctx, s.q(s.d.lockKey), "attest:"+c.Kind+":"+c.Subject); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM attest_challenges WHERE expires_at <= ?`), ns(now)); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM attest_challenges WHERE kind = ? AND subject = ?`), c.Kind, c.Subject).Scan(&n); err != nil {
			return err
		}
		if n >= quota {
			return ErrQuota
		}
		return s.insertNew(ctx, tx, `INSERT INTO attest_challenges (hash, kind, subject, state, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`,
			c.Hash, c.Kind, c.Subject, c.State, ns(c.ExpiresAt), ns(c.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: create %s challenge: %w", c.Kind, err)
	}
	return nil
}

// ConsumeAttestChallenge deletes and returns the live challenge of kind
// with hash: one DELETE, so of two replicas answering the same nonce at
// once exactly one gets it. Unknown, answered, expired and other-kind
// challenges all return ErrTokenInvalid itself.
func (s *sqlStore) ConsumeAttestChallenge(ctx context.Context, hash []byte, kind string, now time.Time) (AttestChallenge, error) {
	if err := checkTimes(now); err != nil {
		return AttestChallenge{}, err
	}
	c := AttestChallenge{Hash: hash, Kind: kind}
	var expires, created int64
	err := s.db.QueryRowContext(ctx, s.q(`DELETE FROM attest_challenges
		WHERE hash = ? AND kind = ? AND expires_at > ?
		RETURNING subject, state, expires_at, created_at`),
		hash, kind, ns(now)).Scan(&c.Subject, &c.State, &expires, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return AttestChallenge{}, ErrTokenInvalid
	}
	if err != nil {
		return AttestChallenge{}, fmt.Errorf("store: consume %s challenge: %w", kind, err)
	}
	c.ExpiresAt, c.CreatedAt = fromNS(expires), fromNS(created)
	return c, nil
}
