package oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// ErrInvalid marks a registration or change refused for what it asked
// for; the error's text names the field and the reason.
var ErrInvalid = errors.New("oauth: invalid")

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

func invalid(format string, args ...any) error { return &invalidError{fmt.Sprintf(format, args...)} }

// AccountStore keeps clients and users; store.Store implements it.
type AccountStore interface {
	CreateOAuthClient(ctx context.Context, c store.OAuthClient) error
	GetOAuthClient(ctx context.Context, id string) (store.OAuthClient, error)
	UpdateOAuthClient(ctx context.Context, c store.OAuthClient) error
	DeleteOAuthClient(ctx context.Context, id string) error
	CreateOAuthUser(ctx context.Context, u store.OAuthUser) error
	GetOAuthUser(ctx context.Context, username string) (store.OAuthUser, error)
	UpdateOAuthUser(ctx context.Context, u store.OAuthUser) error
	DeleteOAuthUser(ctx context.Context, username string) error
	LoginSucceeded(ctx context.Context, username string) error
	ListOAuthClients(ctx context.Context) ([]store.OAuthClient, error)
	ListOAuthUsers(ctx context.Context) ([]store.OAuthUser, error)
}

// Revoker revokes every grant family issued for a user or to a client;
// *Provider implements it.
type Revoker interface {
	RevokeUser(ctx context.Context, username, reason string) (int, error)
	RevokeClient(ctx context.Context, clientID, reason string) (int, error)
}

// Accounts registers and changes clients and users. A client or user
// that is disabled or deleted loses what was issued to it, after the
// change: from then on nothing new is issued while the old goes. Errors
// are ErrInvalid (what was asked for), store.ErrNotFound and
// store.ErrConflict, or the store's.
type Accounts struct {
	Store   AccountStore
	Wrapper *keywrap.Wrapper // seals TOTP secrets
	// Tokens is the authorization server, nil while it is not running
	// (nothing has been issued then).
	Tokens func() Revoker
	// Event records an admin action in the audit log, naming the caller
	// the request proved.
	Event func(r *http.Request, action string, kv ...any)
	Now   func() time.Time
	Log   *slog.Logger
}

func (a *Accounts) revoke(ctx context.Context, user, client, reason string) (int, error) {
	t := a.Tokens()
	if t == nil {
		return 0, nil
	}
	if user != "" {
		return t.RevokeUser(ctx, user, reason)
	}
	return t.RevokeClient(ctx, client, reason)
}

// CreateClient registers c and returns it with its secret, generated
// here for the client_secret_* methods and shown once (only its hash is
// kept).
func (a *Accounts) CreateClient(ctx context.Context, c store.OAuthClient) (store.OAuthClient, string, error) {
	c.CreatedAt = a.Now()
	if err := ValidateClient(c); err != nil {
		return c, "", &invalidError{err.Error()}
	}
	secret := ""
	if strings.HasPrefix(c.AuthMethod, "client_secret_") {
		secret = NewSecret()
		c.SecretHash = HashSecret(secret)
	}
	if err := a.Store.CreateOAuthClient(ctx, c); err != nil {
		return c, "", fmt.Errorf("oauth: create client: %w", err)
	}
	return c, secret, nil
}

// SetClientDisabled disables or enables client id (disabled is
// required: the only attribute that can change); disabling revokes its
// tokens. It returns the client and how many grant families went.
func (a *Accounts) SetClientDisabled(ctx context.Context, id string, disabled *bool) (store.OAuthClient, int, error) {
	c, err := a.Store.GetOAuthClient(ctx, id)
	if err != nil {
		return c, 0, fmt.Errorf("oauth: get client: %w", err)
	}
	if disabled == nil {
		return c, 0, invalid("disabled: required (the only attribute that can change)")
	}
	c.Disabled = *disabled
	if err := a.Store.UpdateOAuthClient(ctx, c); err != nil {
		return c, 0, fmt.Errorf("oauth: update client: %w", err)
	}
	if !c.Disabled {
		return c, 0, nil
	}
	n, err := a.revoke(ctx, "", c.ID, "client "+c.ID+" disabled")
	if err != nil {
		return c, 0, fmt.Errorf("oauth: revoke the client's tokens: %w", err)
	}
	return c, n, nil
}

// DeleteClient revokes what client id was issued and deletes it: a
// client ID can be registered again, and what the old one was issued
// must not live on under the new registration.
func (a *Accounts) DeleteClient(ctx context.Context, id string) error {
	if _, err := a.Store.GetOAuthClient(ctx, id); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("oauth: %w", err)
	}
	if _, err := a.revoke(ctx, "", id, "client "+id+" deleted"); err != nil {
		return fmt.Errorf("oauth: revoke the client's tokens: %w", err)
	}
	if err := a.Store.DeleteOAuthClient(ctx, id); err != nil {
		return fmt.Errorf("oauth: delete client: %w", err)
	}
	return nil
}

// CreateUser adds u with password (hashed here; never stored).
func (a *Accounts) CreateUser(ctx context.Context, u store.OAuthUser, password string) (store.OAuthUser, error) {
	if password == "" {
		return u, invalid("password: required")
	}
	if err := ValidateUser(u.Username, password); err != nil {
		return u, &invalidError{err.Error()}
	}
	for _, f := range []struct{ name, v string }{{"name", u.Name}, {"email", u.Email}} {
		if err := validateText(f.name, f.v); err != nil {
			return u, err
		}
	}
	hash, err := HashPassword(password)
	if err != nil {
		return u, fmt.Errorf("oauth: hash password: %w", err)
	}
	u.PasswordHash, u.CreatedAt = hash, a.Now()
	if err := a.Store.CreateOAuthUser(ctx, u); err != nil {
		return u, fmt.Errorf("oauth: create user: %w", err)
	}
	return u, nil
}

// UserChange is what UpdateUser changes; nil fields stay as they are.
type UserChange struct {
	Password, Name, Email *string
	Groups                *[]string
	// Disabled true voids every login session begun until now and
	// revokes every token issued for the user.
	Disabled *bool
	Unlock   bool   // end a back-off after failed logins
	TOTP     string // "enable" (a new secret), "disable" or ""
}

// UserChanged is what UpdateUser did.
type UserChanged struct {
	User    store.OAuthUser
	TOTPURI string   // the new TOTP secret's otpauth URI, shown once
	Changed []string // what changed, for the audit log
	Revoked int      // grant families revoked
}

// UpdateUser applies ch to user username.
func (a *Accounts) UpdateUser(ctx context.Context, username string, ch UserChange) (UserChanged, error) {
	var out UserChanged
	u, err := a.Store.GetOAuthUser(ctx, username)
	if err != nil {
		return out, fmt.Errorf("oauth: get user: %w", err)
	}
	if ch.Password != nil {
		if err := ValidateUser(u.Username, *ch.Password); err != nil || *ch.Password == "" {
			return out, invalid("password: at least %d characters", MinPasswordLength)
		}
		hash, err := HashPassword(*ch.Password)
		if err != nil {
			return out, fmt.Errorf("oauth: hash password: %w", err)
		}
		u.PasswordHash = hash
		out.Changed = append(out.Changed, "password")
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"name", ch.Name}, {"email", ch.Email}} {
		if f.v != nil {
			if err := validateText(f.name, *f.v); err != nil {
				return out, err
			}
		}
	}
	if ch.Name != nil {
		u.Name = *ch.Name
		out.Changed = append(out.Changed, "name")
	}
	if ch.Email != nil {
		u.Email = *ch.Email
		out.Changed = append(out.Changed, "email")
	}
	if ch.Groups != nil {
		u.Groups = *ch.Groups
		out.Changed = append(out.Changed, "groups")
	}
	disabling := false
	if ch.Disabled != nil {
		disabling = *ch.Disabled && !u.Disabled
		u.Disabled = *ch.Disabled
		if disabling {
			u.RevokedAt = a.Now() // voids every login session begun until now
		}
		out.Changed = append(out.Changed, fmt.Sprintf("disabled=%v", u.Disabled))
	}
	switch ch.TOTP {
	case "":
	case "enable":
		secret, b32 := NewTOTPSecret()
		sealed, err := SealTOTP(a.Wrapper, u.Username, secret)
		if err != nil {
			return out, fmt.Errorf("oauth: seal totp: %w", err)
		}
		u.TOTPSecret, u.TOTPLastStep = sealed, 0
		out.TOTPURI = TOTPURI("Rampart", u.Username, b32)
		out.Changed = append(out.Changed, "totp enabled")
	case "disable":
		u.TOTPSecret, u.TOTPLastStep = nil, 0
		out.Changed = append(out.Changed, "totp disabled")
	default:
		return out, invalid("totp: want enable or disable")
	}
	if err := a.Store.UpdateOAuthUser(ctx, u); err != nil {
		return out, fmt.Errorf("oauth: update user: %w", err)
	}
	if disabling {
		// After the flag: refresh, exchange and userinfo refuse the user
		// from here on, so nothing new is issued while the old goes.
		if out.Revoked, err = a.revoke(ctx, u.Username, "", "user "+u.Username+" disabled"); err != nil {
			return out, fmt.Errorf("oauth: revoke the user's tokens: %w", err)
		}
	}
	if ch.Unlock {
		if err := a.Store.LoginSucceeded(ctx, u.Username); err != nil {
			return out, fmt.Errorf("oauth: unlock user: %w", err)
		}
		out.Changed = append(out.Changed, "unlocked")
		if u, err = a.Store.GetOAuthUser(ctx, u.Username); err != nil {
			return out, fmt.Errorf("oauth: get user: %w", err)
		}
	}
	out.User = u
	return out, nil
}

// DeleteUser revokes what was issued for user username and deletes it:
// a username can be created again, and the old user's tokens must not
// speak for the new one.
func (a *Accounts) DeleteUser(ctx context.Context, username string) error {
	if _, err := a.Store.GetOAuthUser(ctx, username); err != nil {
		return fmt.Errorf("oauth: get user: %w", err)
	}
	if _, err := a.revoke(ctx, username, "", "user "+username+" deleted"); err != nil {
		return fmt.Errorf("oauth: revoke the user's tokens: %w", err)
	}
	if err := a.Store.DeleteOAuthUser(ctx, username); err != nil {
		return fmt.Errorf("oauth: delete user: %w", err)
	}
	return nil
}

// maxTextLength bounds a user's display name and email.
const maxTextLength = 256

// validateText refuses a display name or email with control characters
// (a newline or an escape sequence in a name forges lines in the CLI's
// output, the logs and the post-mortem) or longer than maxTextLength.
func validateText(field, v string) error {
	if len(v) > maxTextLength {
		return invalid("%s: at most %d bytes", field, maxTextLength)
	}
	if !utf8.ValidString(v) {
		return invalid("%s: not valid UTF-8", field)
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') {
			return invalid("%s: control or bidirectional character %U", field, r)
		}
	}
	return nil
}
