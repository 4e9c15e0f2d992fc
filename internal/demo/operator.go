package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/secretfile"
	"github.com/rampartsec/rampart/internal/signin"
)

// The demo's operator: a named admin who signs in with a password and a
// one-time code, as a person would, but without one (device flow,
// approved with the secrets the demo keeps in DATA/operator, 0600).
const demoOperator = "ops"

// operatorFiles are where the demo keeps its operator's secrets and
// session.
type operatorFiles struct{ dir string }

func (f operatorFiles) password() string { return filepath.Join(f.dir, demoOperator+".password") }
func (f operatorFiles) totp() string     { return filepath.Join(f.dir, demoOperator+".totp") }
func (f operatorFiles) session() string  { return filepath.Join(f.dir, "session") }

// signInOperator returns an admin client acting as the demo's operator:
// its kept session if the server still takes it, else a new sign-in;
// the operator is made first, with the break-glass admin token, if it
// does not exist yet (first setup: what the admin token is for).
func signInOperator(ctx context.Context, dir string, breakGlass *api.Client) (*api.Client, error) {
	f := operatorFiles{filepath.Join(dir, "operator")}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	as := func(s *signin.Session) *api.Client {
		return &api.Client{BaseURL: breakGlass.BaseURL, HTTP: breakGlass.HTTP, Authorize: s.Authorize}
	}
	if s, err := signin.Load(f.session()); err == nil {
		// The server listens on a new port each start: its issuer (and
		// so the tokens') changed. Refresh at once.
		s.Client = signinClient(breakGlass, s.Key)
		s.ExpiresAt = time.Time{}
		if err := as(s).Do(ctx, http.MethodGet, "/v1/whoami", nil, nil); err == nil {
			return as(s), nil
		}
		signin.Remove(f.session())
	}
	if err := ensureOperator(ctx, f, breakGlass); err != nil {
		return nil, err
	}
	key, err := signin.LoadKey(f.session())
	if err != nil {
		return nil, err
	}
	c := signinClient(breakGlass, key)
	tok, err := deviceLogin(ctx, c, breakGlass.HTTP, f)
	if err != nil {
		return nil, fmt.Errorf("demo: signing in as %s: %w", demoOperator, err)
	}
	s := &signin.Session{Dir: f.session(), Server: strings.TrimPrefix(breakGlass.BaseURL, "https://"), Tokens: *tok, Subject: demoOperator, Key: key, Client: c}
	if err := s.Save(); err != nil {
		return nil, err
	}
	return as(s), nil
}

func signinClient(base *api.Client, key *ecdsa.PrivateKey) *signin.Client {
	return &signin.Client{Issuer: base.BaseURL, ClientID: operator.ClientID, HTTP: base.HTTP, Key: key}
}

// deviceLogin signs the operator in with the device flow, approving the
// code itself. A one-time code is accepted once: if the last sign-in used
// this 30-second step's, it waits for the next.
func deviceLogin(ctx context.Context, c *signin.Client, hc *http.Client, f operatorFiles) (*signin.Tokens, error) {
	pw, err := secretfile.Read(f.password())
	if err != nil {
		return nil, err
	}
	secret, err := readTOTP(f.totp())
	if err != nil {
		return nil, err
	}
	m, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	da, err := c.StartDevice(ctx)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err = signin.Approve(ctx, hc, m.Issuer, da.UserCode, demoOperator, string(pw), oauth.TOTPCode(secret, time.Now()))
		var oe *signin.Error
		if err == nil || attempt > 0 || !errors.As(err, &oe) || oe.Code != "access_denied" {
			break
		}
		next := time.Now().Truncate(30 * time.Second).Add(30 * time.Second)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Until(next) + 100*time.Millisecond):
		}
	}
	if err != nil {
		return nil, err
	}
	return c.PollDevice(ctx, da, func(ctx context.Context, d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	})
}

// ensureOperator makes the OAuth user ops (a random password, TOTP) and
// the operator ops holding admin, writing the secrets to DATA/operator.
func ensureOperator(ctx context.Context, f operatorFiles, admin *api.Client) error {
	_, errPW := os.Stat(f.password())
	_, errTOTP := os.Stat(f.totp())
	if errPW != nil || errTOTP != nil {
		raw := make([]byte, 24)
		rand.Read(raw)
		pw := base64.RawURLEncoding.EncodeToString(raw)
		err := admin.Do(ctx, http.MethodPost, "/v1/oauth/users", api.OAuthUser{Username: demoOperator, Name: "Olive Ops", Password: pw}, nil)
		var p *api.Problem
		if errors.As(err, &p) && p.Status == http.StatusConflict {
			err = admin.Do(ctx, http.MethodPatch, "/v1/oauth/users/"+demoOperator, api.OAuthUserUpdate{Password: &pw}, nil)
			if err == nil {
				err = admin.Do(ctx, http.MethodPatch, "/v1/oauth/users/"+demoOperator, api.OAuthUserUpdate{TOTP: "disable"}, nil)
			}
		}
		if err != nil {
			return fmt.Errorf("demo: operator user: %w", err)
		}
		var res api.OAuthUserUpdateResponse
		if err := admin.Do(ctx, http.MethodPatch, "/v1/oauth/users/"+demoOperator, api.OAuthUserUpdate{TOTP: "enable"}, &res); err != nil {
			return fmt.Errorf("demo: operator TOTP: %w", err)
		}
		if err := atomicfile.Write(f.totp(), []byte(res.TOTPURI+"\n"), 0o600); err != nil {
			return err
		}
		if err := atomicfile.Write(f.password(), []byte(pw+"\n"), 0o600); err != nil {
			return err
		}
	}
	err := admin.Do(ctx, http.MethodGet, "/v1/operator?name="+demoOperator, nil, nil)
	var p *api.Problem
	if errors.As(err, &p) && p.Status == http.StatusNotFound {
		err = admin.Do(ctx, http.MethodPost, "/v1/operators", api.OperatorCreate{Name: demoOperator, Kind: "user",
			Roles: []api.OperatorRole{{Role: "admin"}}}, nil)
	}
	if err != nil {
		return fmt.Errorf("demo: operator %s: %w", demoOperator, err)
	}
	return nil
}

func readTOTP(path string) ([]byte, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, err
	}
	return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(u.Query().Get("secret"))
}

// attackStolenOperatorToken: an operator's access token, copied without
// the key it is bound to, opens nothing.
func attackStolenOperatorToken(ctx context.Context, sys *System) (Outcome, error) {
	s, err := signin.Load(operatorFiles{filepath.Join(sys.Dir, "operator")}.session())
	if err != nil {
		return Outcome{}, fmt.Errorf("the operator's session: %w", err)
	}
	// Make sure the copied token is live (the admin client refreshes it).
	if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/whoami", nil, nil); err != nil {
		return Outcome{}, err
	}
	if s, err = signin.Load(s.Dir); err != nil {
		return Outcome{}, err
	}
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var statuses []string
	for _, how := range []string{"bearer", "own-key"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sys.Admin.BaseURL+"/v1/entries", nil)
		if how == "bearer" {
			req.Header.Set("Authorization", "Bearer "+s.AccessToken)
		} else {
			proof, err := dpop.NewProof(attacker, jose.ES256, http.MethodGet, sys.Admin.BaseURL+"/v1/entries", s.AccessToken, "", time.Now())
			if err != nil {
				return Outcome{}, err
			}
			req.Header.Set("Authorization", "DPoP "+s.AccessToken)
			req.Header.Set("DPoP", proof)
		}
		resp, err := sys.Admin.HTTP.Do(req)
		if err != nil {
			return Outcome{}, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return Outcome{}, fmt.Errorf("the stolen operator token (%s) got %s, want 401", how, resp.Status)
		}
		statuses = append(statuses, fmt.Sprint(resp.StatusCode))
	}
	return Outcome{Stopped: true, Prevent: "the token is bound to " + demoOperator + "'s DPoP key (cnf.jkt), which never left its session directory: the admin API answered " +
		strings.Join(statuses, " and ") + " to the token alone and to a proof by another key", Audited: "admin.auth"}, nil
}
