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
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// Disabled clients cannot authenticate or have users sign in to them;
	// disabling revokes what was issued to them.
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"-"`
}

// OAuthUser is a user of the built-in user store.
type OAuthUser struct {
	Username     string `json:"-"`
	PasswordHash string `json:"password_hash"`         // argon2id, PHC string format
	TOTPSecret   []byte `json:"totp_secret,omitempty"` // sealed by keywrap; nil: no second factor
	// TOTPLastStep is the time step of the last code accepted; a code is
	// never accepted twice. Only UseTOTPStep moves it (a column of its
	// own, so the move is conditional); versions before that kept it in
	// the JSON document, still read.
	TOTPLastStep int64    `json:"totp_last_step,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Disabled     bool     `json:"disabled,omitempty"`
	// RevokedAt is when the user's sessions and tokens were last revoked
	// (on being disabled): a login session begun at or before it is void.
	RevokedAt time.Time `json:"revoked_at,omitempty"`
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

// Backoff is how failed logins slow an account down: Free consecutive
// failures cost nothing more; the next locks the account for Base, and
// each further one (after the lock ends) for twice as long, up to Max.
type Backoff struct {
	Free int
	Base time.Duration
	Max  time.Duration
}

// Delay returns the back-off after the failures-th consecutive failure.
func (b Backoff) Delay(failures int) time.Duration {
	if failures < b.Free {
		return 0
	}
	d := b.Base
	for i := b.Free; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

func (b Backoff) check() error {
	if b.Free < 1 || b.Base <= 0 || b.Max < b.Base {
		return fmt.Errorf("store: back-off %+v: want Free >= 1 and 0 < Base <= Max", b)
	}
	return nil
}

// OAuthFamily is one line of descent of tokens: a login (its code and
// refresh tokens), one client-credentials token, or one exchange, whose
// Parent is the family of the token exchanged.
type OAuthFamily struct {
	ID       string
	Parent   string // "" unless made by a token exchange
	ClientID string // the client the tokens were issued to
	Subject  string // the user, or "" when the client acts for itself
	// ExpiresAt is when the last token the family can issue expires.
	ExpiresAt time.Time
	CreatedAt time.Time
	Revoked   bool
}

// FamilySelector picks grant families by exactly one of its fields.
type FamilySelector struct {
	ID       string
	Subject  string
	ClientID string
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

func (s *sqlStore) UpdateOAuthClient(ctx context.Context, c OAuthClient) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: oauth client %s: %w", c.ID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.execOne(ctx, tx, `UPDATE oauth_clients SET data = ? WHERE id = ?`, string(data), c.ID); err != nil {
			return err
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: update oauth client %s: %w", c.ID, err)
	}
	return nil
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

const userColumns = `username, data, failed_logins, locked_until, created_at, totp_last_step`

func (s *sqlStore) CreateOAuthUser(ctx context.Context, u OAuthUser) error {
	if err := checkTimes(u.CreatedAt); err != nil {
		return err
	}
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("store: oauth user %s: %w", u.Username, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return s.insertNew(ctx, tx, `INSERT INTO oauth_users (`+userColumns+`) VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT (username) DO NOTHING`,
			u.Username, string(data), ns(u.CreatedAt), u.TOTPLastStep)
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
	var locked, created, step int64
	if err := r.Scan(&username, &data, &failed, &locked, &created, &step); err != nil {
		return OAuthUser{}, err
	}
	if err := json.Unmarshal([]byte(data), &u); err != nil {
		return OAuthUser{}, fmt.Errorf("decode: %w", err)
	}
	u.Username, u.FailedLogins, u.LockedUntil, u.CreatedAt = username, failed, fromNS(locked), fromNS(created)
	u.TOTPLastStep = max(u.TOTPLastStep, step)
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

func (s *sqlStore) LoginFailed(ctx context.Context, username string, now time.Time, b Backoff) (OAuthUser, error) {
	if err := b.check(); err != nil {
		return OAuthUser{}, err
	}
	if err := checkTimes(now.Add(b.Max)); err != nil {
		return OAuthUser{}, err
	}
	var u OAuthUser
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Count the failure unless the account is backing off. The
		// UPDATE takes the row's lock first, so concurrent failures are
		// each counted, and one that waited sees the lock the other set.
		res, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_users SET failed_logins = failed_logins + 1
			WHERE username = ? AND locked_until <= ?`), username, ns(now))
		if err != nil {
			return err
		}
		counted, err := res.RowsAffected()
		if err != nil {
			return err
		}
		u, err = scanOAuthUser(tx.QueryRowContext(ctx, s.q(`SELECT `+userColumns+` FROM oauth_users WHERE username = ?`), username))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil || counted == 0 {
			return err
		}
		if d := b.Delay(u.FailedLogins); d > 0 {
			u.LockedUntil = now.Add(d).UTC()
			return s.execOne(ctx, tx, `UPDATE oauth_users SET locked_until = ? WHERE username = ?`, ns(u.LockedUntil), username)
		}
		return nil
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

func (s *sqlStore) UseTOTPStep(ctx context.Context, username string, step int64) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := s.execOne(ctx, tx, `UPDATE oauth_users SET totp_last_step = ? WHERE username = ? AND totp_last_step < ?`, step, username, step)
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM oauth_users WHERE username = ?`), username).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return ErrConflict
	})
	if err != nil {
		return fmt.Errorf("store: one-time code step of %s: %w", username, err)
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

func (s *sqlStore) PutOAuthFamily(ctx context.Context, f OAuthFamily) error {
	if err := checkTimes(f.ExpiresAt, f.CreatedAt); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if f.Parent != "" {
			// Lock the parent's row (and see that it is not revoked):
			// a revocation of the parent either ran first, and this
			// refuses, or waits for this to commit and then finds the
			// child.
			res, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_families SET revoked = revoked WHERE id = ? AND revoked = 0`), f.Parent)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				var revoked int
				err := tx.QueryRowContext(ctx, s.q(`SELECT revoked FROM oauth_families WHERE id = ?`), f.Parent).Scan(&revoked)
				switch {
				case err == nil:
					return fmt.Errorf("%w: parent family %s", ErrRevoked, f.Parent)
				case !errors.Is(err, sql.ErrNoRows):
					return err
				}
				// A parent never recorded (issued before families were):
				// nothing to descend from but its revocation-list entry.
			}
		}
		return s.insertNew(ctx, tx, `INSERT INTO oauth_families (id, parent, client_id, subject, revoked, expires_at, created_at)
			VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING`, f.ID, f.Parent, f.ClientID, f.Subject, ns(f.ExpiresAt), ns(f.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: put oauth family %s: %w", f.ID, err)
	}
	return nil
}

func (s *sqlStore) RevokeOAuthFamilies(ctx context.Context, sel FamilySelector, r TokenRevocation) ([]string, error) {
	n := 0
	for _, v := range []string{sel.ID, sel.Subject, sel.ClientID} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("store: revoke oauth families: select by exactly one of ID, subject, client (%+v)", sel)
	}
	if r.RevokedAt.IsZero() {
		return nil, errors.New("store: revoke oauth families: zero time")
	}
	if err := checkTimes(r.RevokedAt, r.ExpiresAt); err != nil {
		return nil, err
	}
	now := ns(r.RevokedAt)
	var revoked []string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		revoked = nil
		// Families to revoke, with the end of their tokens' lives.
		until := map[string]int64{}
		var queue []string
		add := func(id string, exp int64) {
			if _, ok := until[id]; !ok {
				until[id] = exp
				queue = append(queue, id)
			}
		}
		liveWhere := func(col, v string) error {
			rows, err := tx.QueryContext(ctx, s.q(`SELECT id, expires_at FROM oauth_families WHERE `+col+` = ? AND expires_at > ?`), v, now)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				var exp int64
				if err := rows.Scan(&id, &exp); err != nil {
					return err
				}
				add(id, exp)
			}
			return rows.Err()
		}
		var err error
		switch {
		case sel.ID != "":
			var exp int64
			err = tx.QueryRowContext(ctx, s.q(`SELECT expires_at FROM oauth_families WHERE id = ?`), sel.ID).Scan(&exp)
			if errors.Is(err, sql.ErrNoRows) {
				exp, err = ns(r.ExpiresAt), nil
			}
			add(sel.ID, exp)
		case sel.Subject != "":
			if _, err = tx.ExecContext(ctx, s.q(`UPDATE oauth_grants SET revoked = 1 WHERE subject = ?`), sel.Subject); err == nil {
				err = liveWhere("subject", sel.Subject)
			}
		default:
			if _, err = tx.ExecContext(ctx, s.q(`UPDATE oauth_grants SET revoked = 1 WHERE client_id = ?`), sel.ClientID); err == nil {
				err = liveWhere("client_id", sel.ClientID)
			}
		}
		if err != nil {
			return err
		}
		// Breadth first down the exchanges; each family once. A family
		// is marked (its row locked) before its children are read, so an
		// exchange recording a child either committed first and is found
		// here, or waits and then sees the parent revoked (PutOAuthFamily).
		for i := 0; i < len(queue); i++ {
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_families SET revoked = 1 WHERE id = ?`), queue[i]); err != nil {
				return err
			}
			if err := liveWhere("parent", queue[i]); err != nil {
				return err
			}
		}
		for _, id := range queue {
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_grants SET revoked = 1 WHERE family = ?`), id); err != nil {
				return err
			}
			rv := r
			rv.ID = id
			if exp := fromNS(until[id]); exp.Before(rv.ExpiresAt) {
				rv.ExpiresAt = exp
			}
			if err := s.addTokenRevocation(ctx, tx, rv); err != nil {
				return err
			}
			revoked = append(revoked, id)
		}
		return s.bump(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("store: revoke oauth families %+v: %w", sel, err)
	}
	return revoked, nil
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

func (s *sqlStore) UseDPoPProof(ctx context.Context, jkt, jti string, expires, now time.Time, quota int) error {
	if err := checkTimes(expires, now); err != nil {
		return err
	}
	if quota < 1 {
		return fmt.Errorf("store: DPoP proof quota %d: must be positive", quota)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// The count and the insert must be one step, or proofs of one
		// key arriving together (at several replicas) all see room and
		// are all taken. PostgreSQL: a lock per key for the transaction.
		// SQLite: the first statement writes (dropping the key's expired
		// proofs), so the transaction holds the write lock from the
		// start; one that read first would fail with SQLITE_BUSY when
		// another wrote in between.
		if s.d.lockKey != "" {
			if _, err := tx.ExecContext(ctx, s.q(s.d.lockKey), "dpop:"+jkt); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM oauth_dpop_proofs WHERE jkt = ? AND expires_at <= ?`), jkt, ns(now)); err != nil {
			return err
		}
		var n int
		err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM oauth_dpop_proofs WHERE jkt = ? AND expires_at > ?`), jkt, ns(now)).Scan(&n)
		if err != nil {
			return err
		}
		if n >= quota {
			return ErrQuota
		}
		return s.insertNew(ctx, tx, `INSERT INTO oauth_dpop_proofs (jkt, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (jkt, jti) DO NOTHING`,
			jkt, jti, ns(expires))
	})
	if err != nil {
		return fmt.Errorf("store: DPoP proof %s/%s: %w", jkt, jti, err)
	}
	return nil
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
