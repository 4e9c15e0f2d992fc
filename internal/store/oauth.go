package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OAuthClient is a registered OAuth 2.0 client.
type OAuthClient struct {
	ID         string `json:"-"`
	SecretHash []byte `json:"-"` // SHA-256 of the secret; nil unless the client uses one
	Name       string `json:"name,omitempty"`
	// AuthMethod is how it authenticates at the token endpoint: none
	// (public, PKCE required), client_secret_basic, client_secret_post,
	// private_key_jwt or tls_client_auth (RFC 8705, with an SVID).
	AuthMethod   string   `json:"auth_method"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	GrantTypes   []string `json:"grant_types"`
	Scopes       []string `json:"scopes,omitempty"`   // scopes it may be granted
	Audience     []string `json:"audience,omitempty"` // resources it may get tokens for
	// JWKS holds its public keys for private_key_jwt.
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// SPIFFEID is the ID its SVID must carry for tls_client_auth; tokens
	// issued to such a client are bound to the certificate (cnf.x5t#S256).
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	CreatedAt time.Time `json:"-"`
}

// OAuthUser is a user of the built-in user store.
type OAuthUser struct {
	Username     string `json:"-"`
	PasswordHash string `json:"password_hash"`         // argon2id, PHC string format
	TOTPSecret   []byte `json:"totp_secret,omitempty"` // sealed by keywrap; nil: no second factor
	// TOTPLastStep is the time step of the last code accepted; a code is
	// never accepted twice.
	TOTPLastStep int64    `json:"totp_last_step,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Disabled     bool     `json:"disabled,omitempty"`
	// FailedLogins and LockedUntil are kept by LoginFailed and
	// LoginSucceeded only.
	FailedLogins int       `json:"-"`
	LockedUntil  time.Time `json:"-"`
	CreatedAt    time.Time `json:"-"`
}

// Grant kinds.
const (
	GrantCode    = "code"
	GrantRefresh = "refresh"
)

// OAuthGrant is an authorisation code or a refresh token, stored by the
// hash of its value. Data is the issuer's own encoding of what was granted.
type OAuthGrant struct {
	Hash      []byte
	Kind      string
	Family    string // ID shared by every token descended from one authorisation
	ClientID  string
	Subject   string // the user, or "" when the client acts for itself
	Data      []byte
	ExpiresAt time.Time
	CreatedAt time.Time
	UsedAt    time.Time // zero until used
	Revoked   bool
}

// TokenRevocation puts an access token (by jti) or a whole grant family
// (by its ID) on the revocation list that proxies honour.
type TokenRevocation struct {
	ID        string
	Reason    string
	RevokedAt time.Time
	ExpiresAt time.Time // when the last token it covers expires; kept until then
}

func (s *sqlStore) CreateOAuthClient(ctx context.Context, c OAuthClient) error {
	if err := checkTimes(c.CreatedAt); err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: oauth client %s: %w", c.ID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.insertNew(ctx, tx, `INSERT INTO oauth_clients (id, secret_hash, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			c.ID, c.SecretHash, string(data), ns(c.CreatedAt)); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: create oauth client %s: %w", c.ID, err)
	}
	return nil
}

func (s *sqlStore) GetOAuthClient(ctx context.Context, id string) (OAuthClient, error) {
	c, err := scanOAuthClient(s.db.QueryRowContext(ctx, s.q(`SELECT id, secret_hash, data, created_at FROM oauth_clients WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthClient{}, fmt.Errorf("store: oauth client %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return OAuthClient{}, fmt.Errorf("store: oauth client %s: %w", id, err)
	}
	return c, nil
}

func (s *sqlStore) ListOAuthClients(ctx context.Context) ([]OAuthClient, error) {
	cs, err := queryAll(ctx, s, scanOAuthClient, `SELECT id, secret_hash, data, created_at FROM oauth_clients ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: list oauth clients: %w", err)
	}
	return cs, nil
}

func scanOAuthClient(r scanner) (OAuthClient, error) {
	var c OAuthClient
	var data string
	var created int64
	var id string
	var hash []byte
	if err := r.Scan(&id, &hash, &data, &created); err != nil {
		return OAuthClient{}, err
	}
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		return OAuthClient{}, fmt.Errorf("decode: %w", err)
	}
	c.ID, c.SecretHash, c.CreatedAt = id, hash, fromNS(created)
	return c, nil
}

func (s *sqlStore) DeleteOAuthClient(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `DELETE FROM oauth_clients WHERE id = ?`, id); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: delete oauth client %s: %w", id, err)
	}
	return nil
}

const userColumns = `username, data, failed_logins, locked_until, created_at`

func (s *sqlStore) CreateOAuthUser(ctx context.Context, u OAuthUser) error {
	if err := checkTimes(u.CreatedAt); err != nil {
		return err
	}
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("store: oauth user %s: %w", u.Username, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO oauth_users (`+userColumns+`) VALUES (?, ?, 0, 0, ?) ON CONFLICT (username) DO NOTHING`,
			u.Username, string(data), ns(u.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: create oauth user %s: %w", u.Username, err)
	}
	return nil
}

func (s *sqlStore) GetOAuthUser(ctx context.Context, username string) (OAuthUser, error) {
	u, err := scanOAuthUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userColumns+` FROM oauth_users WHERE username = ?`), username))
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthUser{}, fmt.Errorf("store: oauth user %s: %w", username, ErrNotFound)
	}
	if err != nil {
		return OAuthUser{}, fmt.Errorf("store: oauth user %s: %w", username, err)
	}
	return u, nil
}

func (s *sqlStore) ListOAuthUsers(ctx context.Context) ([]OAuthUser, error) {
	us, err := queryAll(ctx, s, scanOAuthUser, `SELECT `+userColumns+` FROM oauth_users ORDER BY username`)
	if err != nil {
		return nil, fmt.Errorf("store: list oauth users: %w", err)
	}
	return us, nil
}

func scanOAuthUser(r scanner) (OAuthUser, error) {
	var u OAuthUser
	var username, data string
	var failed int
	var locked, created int64
	if err := r.Scan(&username, &data, &failed, &locked, &created); err != nil {
		return OAuthUser{}, err
	}
	if err := json.Unmarshal([]byte(data), &u); err != nil {
		return OAuthUser{}, fmt.Errorf("decode: %w", err)
	}
	u.Username, u.FailedLogins, u.LockedUntil, u.CreatedAt = username, failed, fromNS(locked), fromNS(created)
	return u, nil
}

func (s *sqlStore) UpdateOAuthUser(ctx context.Context, u OAuthUser) error {
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("store: oauth user %s: %w", u.Username, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return s.execOne(ctx, tx, `UPDATE oauth_users SET data = ? WHERE username = ?`, string(data), u.Username)
	})
	if err != nil {
		return fmt.Errorf("store: update oauth user %s: %w", u.Username, err)
	}
	return nil
}

func (s *sqlStore) DeleteOAuthUser(ctx context.Context, username string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.execOne(ctx, tx, `DELETE FROM oauth_users WHERE username = ?`, username)
	})
	if err != nil {
		return fmt.Errorf("store: delete oauth user %s: %w", username, err)
	}
	return nil
}

func (s *sqlStore) LoginFailed(ctx context.Context, username string, now time.Time, max int, lockFor time.Duration) (OAuthUser, error) {
	if err := checkTimes(now.Add(lockFor)); err != nil {
		return OAuthUser{}, err
	}
	var u OAuthUser
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// One statement, so concurrent failures are each counted.
		err := s.execOne(ctx, tx, `UPDATE oauth_users SET
			locked_until = CASE WHEN failed_logins + 1 >= ? THEN ? ELSE locked_until END,
			failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 ELSE failed_logins + 1 END
			WHERE username = ?`, max, ns(now.Add(lockFor)), max, username)
		if err != nil {
			return err
		}
		u, err = scanOAuthUser(tx.QueryRowContext(ctx, s.q(`SELECT `+userColumns+` FROM oauth_users WHERE username = ?`), username))
		return err
	})
	if err != nil {
		return OAuthUser{}, fmt.Errorf("store: login failed %s: %w", username, err)
	}
	return u, nil
}

func (s *sqlStore) LoginSucceeded(ctx context.Context, username string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.execOne(ctx, tx, `UPDATE oauth_users SET failed_logins = 0, locked_until = 0 WHERE username = ?`, username)
	})
	if err != nil {
		return fmt.Errorf("store: login succeeded %s: %w", username, err)
	}
	return nil
}

const grantColumns = `hash, kind, family, client_id, subject, data, expires_at, created_at, used_at, revoked`

func (s *sqlStore) PutOAuthGrant(ctx context.Context, g OAuthGrant) error {
	if err := checkTimes(g.ExpiresAt, g.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO oauth_grants (`+grantColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0) ON CONFLICT (hash) DO NOTHING`,
			g.Hash, g.Kind, g.Family, g.ClientID, g.Subject, g.Data, ns(g.ExpiresAt), ns(g.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: put oauth grant: %w", err)
	}
	return nil
}

func (s *sqlStore) UseOAuthGrant(ctx context.Context, kind string, hash []byte, now time.Time) (OAuthGrant, error) {
	if now.IsZero() {
		return OAuthGrant{}, errors.New("store: use oauth grant: zero time")
	}
	if err := checkTimes(now); err != nil {
		return OAuthGrant{}, err
	}
	g, err := scanGrant(s.db.QueryRowContext(ctx, s.q(`UPDATE oauth_grants SET used_at = ?
		WHERE hash = ? AND kind = ? AND used_at = 0 AND revoked = 0 AND expires_at > ?
		RETURNING `+grantColumns), ns(now), hash, kind, ns(now)))
	if err == nil {
		return g, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return OAuthGrant{}, fmt.Errorf("store: use oauth grant: %w", err)
	}
	// Not usable: tell reuse (which must revoke the family) from unknown.
	g, err = scanGrant(s.db.QueryRowContext(ctx, s.q(`SELECT `+grantColumns+` FROM oauth_grants WHERE hash = ? AND kind = ?`), hash, kind))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return OAuthGrant{}, ErrNotFound
	case err != nil:
		return OAuthGrant{}, fmt.Errorf("store: use oauth grant: %w", err)
	case !g.UsedAt.IsZero() || g.Revoked:
		return g, ErrGrantReused
	default: // expired
		return OAuthGrant{}, ErrNotFound
	}
}

func scanGrant(r scanner) (OAuthGrant, error) {
	var g OAuthGrant
	var expires, created, used int64
	var revoked int
	if err := r.Scan(&g.Hash, &g.Kind, &g.Family, &g.ClientID, &g.Subject, &g.Data, &expires, &created, &used, &revoked); err != nil {
		return OAuthGrant{}, err
	}
	g.ExpiresAt, g.CreatedAt, g.UsedAt, g.Revoked = fromNS(expires), fromNS(created), fromNS(used), revoked != 0
	return g, nil
}

func (s *sqlStore) RevokeOAuthFamily(ctx context.Context, family string, r TokenRevocation) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_grants SET revoked = 1 WHERE family = ?`), family); err != nil {
			return err
		}
		return s.addTokenRevocation(ctx, tx, r)
	})
	if err != nil {
		return fmt.Errorf("store: revoke oauth family %s: %w", family, err)
	}
	return nil
}

func (s *sqlStore) RevokeOAuthToken(ctx context.Context, r TokenRevocation) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error { return s.addTokenRevocation(ctx, tx, r) })
	if err != nil {
		return fmt.Errorf("store: revoke oauth token %s: %w", r.ID, err)
	}
	return nil
}

func (s *sqlStore) addTokenRevocation(ctx context.Context, tx *sql.Tx, r TokenRevocation) error {
	if err := checkTimes(r.RevokedAt, r.ExpiresAt); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO oauth_revocations (id, reason, revoked_at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
		r.ID, r.Reason, ns(r.RevokedAt), ns(r.ExpiresAt))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // already revoked
	}
	return s.bump(ctx, tx)
}

func (s *sqlStore) ListOAuthRevocations(ctx context.Context, now time.Time) ([]TokenRevocation, error) {
	rs, err := queryAll(ctx, s, func(r scanner) (TokenRevocation, error) {
		var t TokenRevocation
		var revoked, expires int64
		if err := r.Scan(&t.ID, &t.Reason, &revoked, &expires); err != nil {
			return TokenRevocation{}, err
		}
		t.RevokedAt, t.ExpiresAt = fromNS(revoked), fromNS(expires)
		return t, nil
	}, `SELECT id, reason, revoked_at, expires_at FROM oauth_revocations WHERE expires_at > ? ORDER BY id`, ns(now))
	if err != nil {
		return nil, fmt.Errorf("store: list oauth revocations: %w", err)
	}
	return rs, nil
}
