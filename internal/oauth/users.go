package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// argon2id parameters: RFC 9106's second recommended option (64 MiB, 3
// passes), one lane per core of a small server.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
)

// HashPassword returns the argon2id hash of password in PHC string format.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkPassword compares password with a PHC argon2id hash in constant time.
func checkPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return false, errors.New("oauth: password hash is not argon2id")
	}
	var m, t uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &threads); err != nil || m == 0 || t == 0 || threads == 0 || m > 1<<22 || t > 64 {
		return false, errors.New("oauth: password hash parameters malformed")
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) < 16 || len(want) > 64 {
		return false, errors.New("oauth: password hash malformed")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is checked for unknown users so that a login for a user who
// does not exist costs as much as one for a user who does. Only its cost
// matters (the same parameters as HashPassword's, which a test keeps in
// step), so it is a constant: computing it when the package loaded cost
// every rampart process, proxies and CLI calls included, 64 MiB and an
// argon2id pass at start.
const dummyHash = "$argon2id$v=19$m=65536,t=3,p=2$cmFtcGFydC1kdW1teS1zYQ$cmFtcGFydC1kdW1teS1rZXktbmV2ZXItbWF0Y2hlcyE"

// TOTP (RFC 6238): SHA-1, 30-second steps, 6 digits, one step of drift.
const (
	totpStep   = 30
	totpDigits = 6
)

// NewTOTPSecret returns a random 160-bit TOTP secret and its base32 form
// for authenticator apps.
func NewTOTPSecret() ([]byte, string) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic("oauth: crypto/rand failed: " + err.Error())
	}
	return b, base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// TOTPURI is the otpauth:// URI an authenticator app imports.
func TOTPURI(issuer, username, b32 string) string {
	return fmt.Sprintf("otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=6&period=30", issuer, username, b32, issuer)
}

// TOTPCode returns the code for secret at time t.
func TOTPCode(secret []byte, t time.Time) string { return totpAt(secret, t.Unix()/totpStep) }

func totpAt(secret []byte, step int64) string {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(step))
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%0*d", totpDigits, v%1_000_000)
}

// checkTOTP returns the step a code matches (within one step of now) that
// is later than last, so a code is never accepted twice.
func checkTOTP(secret []byte, code string, now time.Time, last int64) (int64, bool) {
	cur := now.Unix() / totpStep
	ok := false
	var matched int64
	for _, s := range []int64{cur - 1, cur, cur + 1} {
		if subtle.ConstantTimeCompare([]byte(totpAt(secret, s)), []byte(code)) == 1 && s > last {
			ok, matched = true, s
		}
	}
	return matched, ok
}

// TOTPSealID is the keywrap ID a user's TOTP secret is sealed under.
func TOTPSealID(username string) string { return "totp:" + username }

// loginError is why a login failed; its message is for the audit log, the
// user sees one generic message.
type loginError struct{ reason string }

func (e *loginError) Error() string { return e.reason }

// errBusy: every hashing slot is taken and the queue is full; the login
// is answered 503 with Retry-After, not counted as a failure.
var errBusy = errors.New("oauth: too many logins at once; try again shortly")

// hashGate bounds the argon2id runs at once (each holds 64 MiB for about
// 100 ms: a few hundred at once exhaust a server's memory) and the logins
// waiting for one.
type hashGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64
	wait    time.Duration
	runs    atomic.Int64 // argon2id runs, for tests
	busy    atomic.Int64 // logins refused with errBusy since the last audit
}

func newHashGate(concurrency, queue int, wait time.Duration) *hashGate {
	return &hashGate{slots: make(chan struct{}, concurrency), queue: int64(queue), wait: wait}
}

// check is checkPassword inside a slot; errBusy if none comes free in time.
func (g *hashGate) check(ctx context.Context, hash, password string) (bool, error) {
	select {
	case g.slots <- struct{}{}:
	default:
		if g.waiting.Add(1) > g.queue {
			g.waiting.Add(-1)
			g.busy.Add(1)
			return false, errBusy
		}
		t := time.NewTimer(g.wait)
		select {
		case g.slots <- struct{}{}:
			t.Stop()
			g.waiting.Add(-1)
		case <-t.C:
			g.waiting.Add(-1)
			g.busy.Add(1)
			return false, errBusy
		case <-ctx.Done():
			t.Stop()
			g.waiting.Add(-1)
			return false, ctx.Err()
		}
	}
	defer func() { <-g.slots }()
	g.runs.Add(1)
	return checkPassword(hash, password)
}

// login checks a user's password and second factor, counting failures and
// honouring the back-off. It returns the user on success.
//
// Every attempt that reaches it costs the same: one read of the user, one
// argon2id run (of the user's hash, or of dummyHash for an unknown,
// disabled or backing-off account, whose password is not checked), and
// one failure count; every failure gets the same loginError to the user.
// Neither the time nor the answer tells an attacker which usernames exist
// or what state they are in; the reason goes to the audit log only.
func (p *Provider) login(ctx context.Context, username, password, code string) (store.OAuthUser, error) {
	now := p.cfg.Now()
	u, err := p.cfg.Store.GetOAuthUser(ctx, username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.OAuthUser{}, err
	}
	hash, refused := dummyHash, ""
	switch {
	case err != nil:
		refused = "unknown user"
	case u.Disabled:
		refused = "account disabled"
	case now.Before(u.LockedUntil):
		// Backing off: the password is not checked, so guessing goes on
		// costing the attacker time but teaches nothing.
		refused = "account backing off after failed logins until " + u.LockedUntil.UTC().Format(time.RFC3339)
	default:
		hash = u.PasswordHash
	}
	ok, err := p.hashing.check(ctx, hash, password)
	if err != nil {
		return store.OAuthUser{}, err
	}
	backoff := store.Backoff{Free: p.cfg.MaxFailures, Base: p.cfg.BackoffBase, Max: p.cfg.BackoffMax}
	fail := func(reason string) (store.OAuthUser, error) {
		// Counted unless backing off; for an unknown user the same
		// statements run and find no row.
		after, err := p.cfg.Store.LoginFailed(ctx, username, now, backoff)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.OAuthUser{}, err
		}
		if refused == "" && now.Before(after.LockedUntil) {
			reason += "; backing off until " + after.LockedUntil.UTC().Format(time.RFC3339)
		}
		return store.OAuthUser{}, &loginError{reason}
	}
	if refused != "" {
		return fail(refused)
	}
	if !ok {
		return fail("wrong password")
	}
	if u.TOTPSecret != nil {
		secret, err := p.cfg.Wrapper.Open(TOTPSealID(u.Username), u.TOTPSecret)
		if err != nil {
			return store.OAuthUser{}, fmt.Errorf("oauth: TOTP secret of %s: %w", u.Username, err)
		}
		step, ok := checkTOTP(secret, strings.TrimSpace(code), now, u.TOTPLastStep)
		if !ok {
			return fail("wrong or reused one-time code")
		}
		// Conditional: of two logins racing with one code, one wins.
		err = p.cfg.Store.UseTOTPStep(ctx, u.Username, step)
		if errors.Is(err, store.ErrConflict) {
			return fail("one-time code reused (by a concurrent login)")
		}
		if err != nil {
			return store.OAuthUser{}, err
		}
		u.TOTPLastStep = step
	}
	if u.FailedLogins > 0 || !u.LockedUntil.IsZero() {
		if err := p.cfg.Store.LoginSucceeded(ctx, username); err != nil {
			return store.OAuthUser{}, err
		}
	}
	return u, nil
}

// SealTOTP seals a TOTP secret for storage with the user.
func SealTOTP(w *keywrap.Wrapper, username string, secret []byte) ([]byte, error) {
	return w.Seal(TOTPSealID(username), secret)
}
