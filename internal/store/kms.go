package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// KMSKey is a named key of the key store; its material lives in versions.
type KMSKey struct {
	Name string
	Type string // aes256-gcm, ecdsa-p256, ed25519 or hmac-sha256
	// RotateEvery is the scheduled rotation period; 0: manual only.
	RotateEvery time.Duration
	Latest      int // the version new encryptions, signatures and MACs use
	// Generation grows with every change to the key or its versions, so
	// a cache knows what to reload.
	Generation int64
	CreatedAt  time.Time
	RotatedAt  time.Time
}

// KMS key version states.
const (
	KMSEnabled          = "enabled"
	KMSDisabled         = "disabled"          // unusable until enabled again
	KMSDestroyScheduled = "destroy-scheduled" // unusable; destroyed at DestroyAt unless restored
	KMSDestroyed        = "destroyed"         // material erased; final
)

// KMSKeyVersion is one version's material.
type KMSKeyVersion struct {
	Name    string
	Version int
	State   string
	// Material is the key sealed by keywrap (never plaintext); nil once
	// destroyed.
	Material  []byte
	Public    []byte // PKIX DER public key of a signing key
	CreatedAt time.Time
	DestroyAt time.Time // destroy-scheduled: when
}

func (s *sqlStore) CreateKMSKey(ctx context.Context, k KMSKey, v KMSKeyVersion) error {
	if err := checkTimes(k.CreatedAt, k.RotatedAt, v.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertNew(ctx, tx, `INSERT INTO kms_keys (name, type, rotate_every, latest, generation, created_at, rotated_at)
			VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (name) DO NOTHING`,
			k.Name, k.Type, int64(k.RotateEvery), v.Version, ns(k.CreatedAt), ns(k.RotatedAt)); err != nil {
			return err
		}
		if err := s.insertVersion(ctx, tx, v); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: create kms key %s: %w", k.Name, err)
	}
	return nil
}

func (s *sqlStore) insertVersion(ctx context.Context, tx *sql.Tx, v KMSKeyVersion) error {
	return s.insertNew(ctx, tx, `INSERT INTO kms_key_versions (name, version, state, material, public, created_at, destroy_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING`,
		v.Name, v.Version, v.State, v.Material, v.Public, ns(v.CreatedAt), ns(v.DestroyAt))
}

func (s *sqlStore) GetKMSKey(ctx context.Context, name string) (KMSKey, []KMSKeyVersion, error) {
	k, err := scanKMSKey(s.db.QueryRowContext(ctx, s.q(`SELECT `+kmsKeyColumns+` FROM kms_keys WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return KMSKey{}, nil, fmt.Errorf("store: kms key %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return KMSKey{}, nil, fmt.Errorf("store: kms key %s: %w", name, err)
	}
	vs, err := queryAll(ctx, s, scanKMSVersion, `SELECT name, version, state, material, public, created_at, destroy_at
		FROM kms_key_versions WHERE name = ? ORDER BY version`, name)
	if err != nil {
		return KMSKey{}, nil, fmt.Errorf("store: kms key %s versions: %w", name, err)
	}
	return k, vs, nil
}

func (s *sqlStore) ListKMSKeys(ctx context.Context) ([]KMSKey, error) {
	ks, err := queryAll(ctx, s, scanKMSKey, `SELECT `+kmsKeyColumns+` FROM kms_keys ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list kms keys: %w", err)
	}
	return ks, nil
}

func (s *sqlStore) RotateKMSKey(ctx context.Context, v KMSKeyVersion) error {
	if err := checkTimes(v.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Only from the version before: two replicas rotating at once
		// cannot both win.
		if err := s.execOne(ctx, tx, `UPDATE kms_keys SET latest = ?, rotated_at = ?, generation = generation + 1
			WHERE name = ? AND latest = ?`, v.Version, ns(v.CreatedAt), v.Name, v.Version-1); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("version %d is not the next one: %w", v.Version, ErrConflict)
			}
			return err
		}
		if err := s.insertVersion(ctx, tx, v); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: rotate kms key %s: %w", v.Name, err)
	}
	return nil
}

func (s *sqlStore) SetKMSVersionState(ctx context.Context, name string, version int, from []string, state string, destroyAt time.Time) error {
	if err := checkTimes(destroyAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, s.q(`SELECT state FROM kms_key_versions WHERE name = ? AND version = ?`), name, version).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		ok := false
		for _, f := range from {
			ok = ok || f == cur
		}
		if !ok {
			return fmt.Errorf("version %d is %s: %w", version, cur, ErrStateConflict)
		}
		if err := s.execOne(ctx, tx, `UPDATE kms_key_versions SET state = ?, destroy_at = ? WHERE name = ? AND version = ? AND state = ?`,
			state, ns(destroyAt), name, version, cur); err != nil {
			return err
		}
		if err := s.execOne(ctx, tx, `UPDATE kms_keys SET generation = generation + 1 WHERE name = ?`, name); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: kms key %s version %d: %w", name, version, err)
	}
	return nil
}

func (s *sqlStore) DestroyDueKMSVersions(ctx context.Context, now time.Time) ([]KMSKeyVersion, error) {
	var done []KMSKeyVersion
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, s.q(`SELECT name, version, state, material, public, created_at, destroy_at
			FROM kms_key_versions WHERE state = ? AND destroy_at <= ?`), KMSDestroyScheduled, ns(now))
		if err != nil {
			return err
		}
		for rows.Next() {
			v, err := scanKMSVersion(rows)
			if err != nil {
				rows.Close()
				return err
			}
			done = append(done, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i, v := range done {
			if err := s.execOne(ctx, tx, `UPDATE kms_key_versions SET state = ?, material = NULL WHERE name = ? AND version = ? AND state = ?`,
				KMSDestroyed, v.Name, v.Version, KMSDestroyScheduled); err != nil {
				return err
			}
			if err := s.execOne(ctx, tx, `UPDATE kms_keys SET generation = generation + 1 WHERE name = ?`, v.Name); err != nil {
				return err
			}
			done[i].State, done[i].Material = KMSDestroyed, nil
		}
		if len(done) == 0 {
			return nil
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("store: destroy kms key versions: %w", err)
	}
	return done, nil
}

const kmsKeyColumns = `name, type, rotate_every, latest, generation, created_at, rotated_at`

func scanKMSKey(r scanner) (KMSKey, error) {
	var k KMSKey
	var every, created, rotated int64
	if err := r.Scan(&k.Name, &k.Type, &every, &k.Latest, &k.Generation, &created, &rotated); err != nil {
		return KMSKey{}, err
	}
	k.RotateEvery, k.CreatedAt, k.RotatedAt = time.Duration(every), fromNS(created), fromNS(rotated)
	return k, nil
}

func scanKMSVersion(r scanner) (KMSKeyVersion, error) {
	var v KMSKeyVersion
	var created, destroy int64
	if err := r.Scan(&v.Name, &v.Version, &v.State, &v.Material, &v.Public, &created, &destroy); err != nil {
		return KMSKeyVersion{}, err
	}
	v.CreatedAt, v.DestroyAt = fromNS(created), fromNS(destroy)
	return v, nil
}
