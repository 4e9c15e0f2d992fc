package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/signin"
)

const operatorPassword = "correct horse battery staple"

// newOperatorHarness is a server whose device clients poll every second.
func newOperatorHarness(t testing.TB) *harness {
	return newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", OAuth: OAuthConfig{DeviceInterval: time.Second}})
}

// addUser creates an OAuth user, with TOTP if totp, and returns its TOTP
// secret (nil without).
func (h *harness) addUser(name string, totp bool) []byte {
	h.t.Helper()
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/oauth/users", api.OAuthUser{Username: name, Name: strings.ToUpper(name[:1]) + name[1:] + " Example", Password: operatorPassword}, nil); err != nil {
		h.t.Fatal(err)
	}
	if !totp {
		return nil
	}
	var res api.OAuthUserUpdateResponse
	if err := h.admin.Do(ctx, http.MethodPatch, "/v1/oauth/users/"+name, api.OAuthUserUpdate{TOTP: "enable"}, &res); err != nil {
		h.t.Fatal(err)
	}
	u, err := url.Parse(res.TOTPURI)
	if err != nil {
		h.t.Fatal(err)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(u.Query().Get("secret"))
	if err != nil {
		h.t.Fatal(err)
	}
	return secret
}

func (h *harness) issuer() string { return "https://" + h.addr }

func (h *harness) tlsHTTP() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots, MinVersion: tls.VersionTLS13}}}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (h *harness) signinClient(key *ecdsa.PrivateKey) *signin.Client {
	return &signin.Client{Issuer: h.issuer(), ClientID: operator.ClientID, HTTP: h.tlsHTTP(), Key: key, Now: h.clk.Now}
}

// deviceLogin signs name in with the device flow: the CLI's side with
// key, the approval with password and the current one-time code.
func (h *harness) deviceLogin(name string, totp []byte, key *ecdsa.PrivateKey) (*signin.Session, error) {
	ctx := context.Background()
	c := h.signinClient(key)
	da, err := c.StartDevice(ctx)
	if err != nil {
		return nil, err
	}
	otp := ""
	if totp != nil {
		otp = oauth.TOTPCode(totp, h.clk.Now())
	}
	if err := signin.Approve(ctx, h.tlsHTTP(), h.issuer(), da.UserCode, name, operatorPassword, otp); err != nil {
		return nil, err
	}
	tok, err := c.PollDevice(ctx, da, func(context.Context, time.Duration) error { return errors.New("polled twice") })
	if err != nil {
		return nil, err
	}
	return &signin.Session{Dir: h.t.TempDir(), Server: h.addr, Tokens: *tok, Key: key, Client: c}, nil
}

// as is an API client acting as the signed-in operator of s.
func (h *harness) as(s *signin.Session) *api.Client {
	c := h.client("", nil)
	c.Authorize = s.Authorize
	return c
}

// The device flow end to end with golang.org/x/oauth2's client (its DPoP
// proofs added by signin.Transport), against the real server: the token
// is DPoP-bound, says the login had a second factor, opens the admin API
// to alice's roles, and every entry of her actions names her.
func TestOperatorDeviceFlowWithOAuth2(t *testing.T) {
	h := newOperatorHarness(t)
	secret := h.addUser("alice", true)
	h.addOperator(api.OperatorCreate{Name: "alice", Kind: "user", Roles: []api.OperatorRole{{Role: "admin"}}})
	key := newKey(t)
	cfg := oauth2.Config{ClientID: operator.ClientID, Scopes: []string{"openid", "profile"}, Endpoint: oauth2.Endpoint{
		DeviceAuthURL: h.issuer() + oauth.PathDeviceAuthorization, TokenURL: h.issuer() + oauth.PathToken, AuthStyle: oauth2.AuthStyleInParams}}
	hc := h.tlsHTTP()
	hc.Transport = &signin.Transport{Key: key, Base: hc.Transport, Now: h.clk.Now}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[B-Z]{4}-[B-Z]{4}$`).MatchString(da.UserCode) || da.VerificationURI != h.issuer()+oauth.PathDevice || da.Interval != 1 {
		t.Fatalf("device authorization %+v", da)
	}
	// The verification page, as a browser gets it, offers the code.
	resp, err := h.tlsHTTP().Get(da.VerificationURIComplete)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("verification page: %s", resp.Status)
	}
	if err := signin.Approve(context.Background(), h.tlsHTTP(), h.issuer(), strings.ToLower(da.UserCode), "alice", operatorPassword, oauth.TOTPCode(secret, h.clk.Now())); err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "DPoP" || tok.RefreshToken == "" {
		t.Fatalf("token type %q, refresh %v: want a DPoP-bound token and a refresh token", tok.TokenType, tok.RefreshToken != "")
	}
	s := &signin.Session{Dir: t.TempDir(), Tokens: signin.Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.Expiry},
		Key: key, Client: h.signinClient(key)}
	alice := h.as(s)
	var who api.Whoami
	if err := alice.Do(context.Background(), http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		t.Fatal(err)
	}
	if who.Kind != "operator" || who.Subject != "alice" || who.Name != "Alice Example" || who.Session == "" || !strings.Contains(strings.Join(who.AMR, " "), "otp") {
		t.Fatalf("whoami %+v", who)
	}
	// Her actions are hers in the log: subject, name and session.
	entry := h.createEntryAs(alice, "spiffe://example.org/orders")
	if err := alice.Do(context.Background(), http.MethodDelete, "/v1/entries/"+entry, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"entry.create", "entry.delete"} {
		es := logEntries(t, h.srv.audit, action)
		if len(es) != 1 || es[0].Actor != (audit.Actor{User: "alice"}) || es[0].Details["operator_name"] != "Alice Example" ||
			es[0].Details["session"] != who.Session || es[0].Details["auth"] != "operator" {
			t.Fatalf("%s entries %+v: want one naming alice, her name and her session", action, es)
		}
		if f := (audit.Filter{Actor: "alice"}); !f.Match(es[0]) {
			t.Fatalf("audit query --actor alice does not find %s", action)
		}
	}
	// The refresh token is bound to the key too, and refreshes.
	h.clk.Add(10 * time.Minute)
	if err := alice.Do(context.Background(), http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("after the access token expired (refreshed): %v", err)
	}
	if s.AccessToken == tok.AccessToken {
		t.Fatal("the access token was not refreshed")
	}
}

func (h *harness) createEntryAs(c *api.Client, id string) string {
	h.t.Helper()
	h.attest("node-1")
	var e api.Entry
	if err := c.Do(context.Background(), http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: "spiffe://example.org/rampart/agent/node-1",
		Selectors: []string{"unix:uid:1000"}}, &e); err != nil {
		h.t.Fatal(err)
	}
	return e.ID
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// browser signs in on the login page at authURL as a browser would: GET
// the form, fill it in, POST it, follow the redirect to the loopback.
func (h *harness) browser(name, otp string) func(string) error {
	return func(authURL string) error {
		jar, _ := cookiejar.New(nil)
		b := h.tlsHTTP()
		b.Jar = jar
		resp, err := b.Get(authURL)
		if err != nil {
			return err
		}
		var page strings.Builder
		_, err = io_Copy(&page, resp)
		if err != nil {
			return err
		}
		form := url.Values{"username": {name}, "password": {operatorPassword}, "otp": {otp}, "action": {"allow"}}
		for _, m := range hiddenRE.FindAllStringSubmatch(page.String(), -1) {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
		resp, err = b.PostForm(h.issuer()+oauth.PathAuthorize, form)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New("the loopback answered " + resp.Status)
		}
		return nil
	}
}

// The loopback redirect with PKCE end to end: the CLI listens on a port
// the kernel picks, the browser signs in, the code comes back to the
// loopback and is redeemed with the verifier and a proof by the key the
// authorization request named (dpop_jkt).
func TestOperatorLoopbackLogin(t *testing.T) {
	h := newOperatorHarness(t)
	secret := h.addUser("bob", true)
	h.addOperator(api.OperatorCreate{Name: "bob", Kind: "user", Roles: []api.OperatorRole{{Role: "auditor"}}})
	key := newKey(t)
	c := h.signinClient(key)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := c.Loopback(ctx, h.browser("bob", oauth.TOTPCode(secret, h.clk.Now())))
	if err != nil {
		t.Fatal(err)
	}
	bob := h.as(&signin.Session{Dir: t.TempDir(), Tokens: *tok, Key: key, Client: c})
	var who api.Whoami
	if err := bob.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil || who.Subject != "bob" || !strings.Contains(strings.Join(who.AMR, " "), "otp") {
		t.Fatalf("whoami: %v %+v", err, who)
	}
	if err := bob.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("an auditor reads entries: %v", err)
	}
	err = bob.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "x"}, nil)
	wantStatus(t, err, http.StatusForbidden, "agent.enrol")
	// A redirect URI on another host, or not loopback, is refused even
	// with the registered path.
	for _, ru := range []string{"http://localhost:8080/callback", "http://127.0.0.2:8080/callback", "https://127.0.0.1:8080/callback", "http://127.0.0.1:8080/other"} {
		q := url.Values{"response_type": {"code"}, "client_id": {operator.ClientID}, "redirect_uri": {ru}, "code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S256"}}
		resp, err := h.tlsHTTP().Get(h.issuer() + oauth.PathAuthorize + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("redirect_uri %s: %s, want 400", ru, resp.Status)
		}
	}
}

// rawCall sends GET path with the given Authorization and DPoP headers.
func (h *harness) rawCall(path, authz, proof string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, h.issuer()+path, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := h.tlsHTTP().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	io_Copy(&b, resp)
	return resp.StatusCode, b.String()
}

func (h *harness) proof(key *ecdsa.PrivateKey, method, path, token string) string {
	p, err := dpop.NewProof(key, jose.ES256, method, h.issuer()+path, token, "", h.clk.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// The refusals: each attack on operator sign-in or on a stolen operator
// token, and what stops it.
func TestOperatorRefusals(t *testing.T) {
	h := newOperatorHarness(t)
	ctx := context.Background()
	secret := h.addUser("alice", true)
	h.addOperator(api.OperatorCreate{Name: "alice", Kind: "user", Roles: []api.OperatorRole{{Role: "responder"}}})
	key := newKey(t)
	s, err := h.deviceLogin("alice", secret, key)
	if err != nil {
		t.Fatal(err)
	}
	at := s.AccessToken
	ok := func(what string) {
		t.Helper()
		if code, body := h.rawCall("/v1/entries", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at)); code != 200 {
			t.Fatalf("%s: %d %s", what, code, body)
		}
	}
	refused := func(what, authz, proof string) {
		t.Helper()
		if code, body := h.rawCall("/v1/entries", authz, proof); code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401", what, code, body)
		}
	}
	ok("the token with its key")
	// relogin signs alice in anew (her sessions from before were revoked).
	relogin := func() {
		t.Helper()
		h.clk.Add(30 * time.Second) // a fresh one-time code
		if s, err = h.deviceLogin("alice", secret, key); err != nil {
			t.Fatal(err)
		}
		at = s.AccessToken
	}

	t.Run("DPoP-bound token without its key", func(t *testing.T) {
		refused("as a Bearer token", "Bearer "+at, "")
		refused("DPoP scheme, no proof", "DPoP "+at, "")
		refused("a proof by another key", "DPoP "+at, h.proof(newKey(t), "GET", "/v1/entries", at))
		refused("a proof for another URL (htu)", "DPoP "+at, h.proof(key, "GET", "/v1/policies", at))
		refused("a proof for another method (htm)", "DPoP "+at, h.proof(key, "POST", "/v1/entries", at))
		refused("a proof for another token (ath)", "DPoP "+at, h.proof(key, "GET", "/v1/entries", "another-token"))
		p := h.proof(key, "GET", "/v1/entries", at)
		if code, body := h.rawCall("/v1/entries", "DPoP "+at, p); code != 200 {
			t.Fatalf("first use of a proof: %d %s", code, body)
		}
		refused("a replayed proof", "DPoP "+at, p)

		// A proof made for another server (intercepted there), sent here
		// with that server's Host so that htu matches: refused, the Host
		// is not one of this server's names (red team, stop 31). The
		// same request for a name of this server's (localhost) passes:
		// only the host differs. Nor is one made for another service on a
		// name of ours but another port (localhost:1).
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(h.issuer(), "https://"))
		for _, tc := range []struct {
			host string
			want int
		}{{"admin.other.example:8443", http.StatusUnauthorized}, {"localhost:1", http.StatusUnauthorized}, {"localhost:" + port, http.StatusOK}} {
			p, err := dpop.NewProof(key, jose.ES256, "GET", "https://"+tc.host+"/v1/entries", at, "", h.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, h.issuer()+"/v1/entries", nil)
			req.Host = tc.host
			req.Header.Set("Authorization", "DPoP "+at)
			req.Header.Set("DPoP", p)
			resp, err := h.tlsHTTP().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("a proof for host %s: %d, want %d", tc.host, resp.StatusCode, tc.want)
			}
		}
	})

	t.Run("missing or replayed TOTP", func(t *testing.T) {
		c := h.signinClient(newKey(t))
		da, err := c.StartDevice(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = signin.Approve(ctx, h.tlsHTTP(), h.issuer(), da.UserCode, "alice", operatorPassword, "")
		var oe *signin.Error
		if !errors.As(err, &oe) || oe.Code != "access_denied" {
			t.Fatalf("no one-time code: %v", err)
		}
		// The code the first login used, again (same 30 s step).
		err = signin.Approve(ctx, h.tlsHTTP(), h.issuer(), da.UserCode, "alice", operatorPassword, oauth.TOTPCode(secret, h.clk.Now()))
		if !errors.As(err, &oe) || oe.Code != "access_denied" {
			t.Fatalf("a replayed one-time code: %v", err)
		}
		// Still pending: nobody approved.
		_, err = c.PollDevice(ctx, da, func(context.Context, time.Duration) error { return errors.New("pending") })
		if err == nil || err.Error() != "pending" {
			t.Fatalf("poll after refused approvals: %v", err)
		}
	})

	t.Run("user without an operator role", func(t *testing.T) {
		h.clk.Add(30 * time.Second)
		carolTOTP := h.addUser("carol", true)
		carol, err := h.deviceLogin("carol", carolTOTP, newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, h.as(carol).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "not an operator")
		es := logEntries(t, h.srv.audit, "admin.auth")
		if last := es[len(es)-1]; !strings.Contains(last.Reason, `not an operator: "carol"`) {
			t.Fatalf("refusal reason %q", last.Reason)
		}
	})

	t.Run("operator without a second factor", func(t *testing.T) {
		h.addUser("dave", false)
		h.addOperator(api.OperatorCreate{Name: "dave", Kind: "user", Roles: []api.OperatorRole{{Role: "auditor"}}})
		dave, err := h.deviceLogin("dave", nil, newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, h.as(dave).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "not an operator")
		if es := logEntries(t, h.srv.audit, "admin.auth"); !strings.Contains(es[len(es)-1].Reason, "amr lacks otp") {
			t.Fatalf("refusal reason %q", es[len(es)-1].Reason)
		}
		// Exempted by an admin: let in.
		no := false
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=dave", api.OperatorUpdate{RequireMFA: &no}, nil); err != nil {
			t.Fatal(err)
		}
		if err := h.as(dave).Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
			t.Fatalf("exempted from MFA: %v", err)
		}
	})

	t.Run("disabled operator", func(t *testing.T) {
		yes, no := true, false
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Disabled: &yes}, nil); err != nil {
			t.Fatal(err)
		}
		refused("disabled", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at))
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Disabled: &no}, nil); err != nil {
			t.Fatal(err)
		}
		// Enabling again does not revive a session from before: a stolen
		// one would come back with it (red team).
		refused("a session from before the disable", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at))
		relogin()
		ok("signed in again")
		// Roles taken away: nothing left to act with.
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Revoke: []string{"responder"}}, nil); err != nil {
			t.Fatal(err)
		}
		refused("no roles", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at))
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Grant: []api.OperatorRole{{Role: "responder"}}}, nil); err != nil {
			t.Fatal(err)
		}
		refused("a session from before the role was revoked", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at))
		relogin()
		ok("role granted again, signed in again")
	})

	t.Run("locked operator", func(t *testing.T) {
		h.clk.Add(30 * time.Second)
		c := h.signinClient(newKey(t))
		da, err := c.StartDevice(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range oauth.DefaultMaxFailures + 1 {
			signin.Approve(ctx, h.tlsHTTP(), h.issuer(), da.UserCode, "alice", "wrong password!", "")
		}
		// Anyone who knows her name can fail logins: that throttles
		// guessing her password, it does not end her proven session
		// (red team: otherwise anyone could lock every operator out).
		ok("a session while her logins back off")
		if _, err := h.deviceLogin("alice", secret, newKey(t)); err == nil {
			t.Fatal("a new sign-in while backing off was let through")
		}
		if err := h.admin.Do(ctx, http.MethodPatch, "/v1/oauth/users/alice", api.OAuthUserUpdate{Unlock: true}, nil); err != nil {
			t.Fatal(err)
		}
		ok("unlocked")
	})

	t.Run("unknown operator", func(t *testing.T) {
		// A signed token for a user the operator table never heard of
		// is carol's case; a user deleted after signing in is this one.
		h.clk.Add(30 * time.Second)
		eveTOTP := h.addUser("eve", true)
		h.addOperator(api.OperatorCreate{Name: "eve", Kind: "user", Roles: []api.OperatorRole{{Role: "admin"}}})
		eve, err := h.deviceLogin("eve", eveTOTP, newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.admin.Do(ctx, http.MethodDelete, "/v1/oauth/users/eve", nil, nil); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, h.as(eve).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "")
	})

	t.Run("revoked operator token", func(t *testing.T) {
		if err := s.Client.Revoke(ctx, s.RefreshToken, "refresh_token"); err != nil {
			t.Fatal(err)
		}
		refused("revoked (logout)", "DPoP "+at, h.proof(key, "GET", "/v1/entries", at))
		if _, err := s.Client.Refresh(ctx, s.RefreshToken); err == nil {
			t.Fatal("a revoked refresh token refreshed")
		}
	})

	t.Run("expired operator token", func(t *testing.T) {
		h.clk.Add(30 * time.Second)
		s2, err := h.deviceLogin("alice", secret, key)
		if err != nil {
			t.Fatal(err)
		}
		at2 := s2.AccessToken
		if code, body := h.rawCall("/v1/entries", "DPoP "+at2, h.proof(key, "GET", "/v1/entries", at2)); code != 200 {
			t.Fatalf("fresh token: %d %s", code, body)
		}
		h.clk.Add(oauth.DefaultAccessTokenTTL + time.Second)
		refused("expired", "DPoP "+at2, h.proof(key, "GET", "/v1/entries", at2))
	})
}

func io_Copy(b *strings.Builder, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	return io.Copy(b, resp.Body)
}

// Every audit entry of an admin action names the operator who did it,
// her name and her session: walked over the actions of each kind of
// endpoint (identities, policies, keys, users, operators, exceptions).
func TestEveryAdminEntryNamesItsOperator(t *testing.T) {
	h := newOperatorHarness(t)
	ctx := context.Background()
	secret := h.addUser("alice", true)
	h.addOperator(api.OperatorCreate{Name: "alice", Kind: "user", Roles: []api.OperatorRole{{Role: "admin"}}})
	h.attest("node-1")
	s, err := h.deviceLogin("alice", secret, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	alice := h.as(s)
	var who api.Whoami
	if err := alice.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		t.Fatal(err)
	}
	h.workloadCert("node-3", "spiffe://example.org/payments")
	before := h.srv.audit.Size()
	pw := "another long password"
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "node-2"}},
		{http.MethodPost, "/v1/entries", api.Entry{SpiffeID: "spiffe://example.org/orders", ParentID: "spiffe://example.org/rampart/agent/node-1", Selectors: []string{"unix:uid:1000"}}},
		{http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}},
		{http.MethodPost, "/v1/kms/keys/orders-pii/rotate", nil},
		{http.MethodPost, "/v1/oauth/users", api.OAuthUser{Username: "bob", Password: pw}},
		{http.MethodPatch, "/v1/oauth/users/bob", api.OAuthUserUpdate{Password: &pw}},
		{http.MethodPost, "/v1/operators", api.OperatorCreate{Name: "bob", Kind: "user", Roles: []api.OperatorRole{{Role: "auditor"}}}},
		{http.MethodPatch, "/v1/operator?name=bob", api.OperatorUpdate{Grant: []api.OperatorRole{{Role: "approver"}}}},
		{http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{SpiffeID: "spiffe://example.org/payments", Reason: "test"}},
	} {
		if err := alice.Do(ctx, c.method, c.path, c.body, nil); err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
	}
	if err := alice.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml",
		[]byte("service: spiffe://example.org/orders\nrules:\n  - name: any\n    callers: [spiffe://example.org/gateway]\n    paths: [/*]\n"), nil); err != nil {
		t.Fatal(err)
	}
	if err := alice.Do(ctx, http.MethodDelete, "/v1/policy?service=spiffe://example.org/orders", nil, nil); err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for i := before; i < h.srv.audit.Size(); i++ {
		b, _ := h.srv.audit.Entry(i)
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Source != "server" || strings.HasPrefix(e.Action, "detect.") {
			continue // the agents' and the detector's own entries
		}
		actions[e.Action] = true
		if e.Actor != (audit.Actor{User: "alice"}) || e.Details["session"] != who.Session || e.Details["operator_name"] != "Alice Example" || e.Details["auth"] != "operator" {
			t.Errorf("%s: actor %+v, details %v: want alice, her name and session %s", e.Action, e.Actor, e.Details, who.Session)
		}
	}
	for _, a := range []string{"join_token.create", "entry.create", "kms.key_create", "kms.rotate", "oauth.user_create", "oauth.user_update",
		"operator.create", "operator.update", "svid.revoke", "policy.put", "policy.delete"} {
		if !actions[a] {
			t.Errorf("no %s entry (have %v)", a, actions)
		}
	}
}

// An admin cannot disable herself or take her own admin role: the last
// way back in would be the break-glass token. Another admin can.
func TestOperatorCannotLockItselfOut(t *testing.T) {
	h := newOperatorHarness(t)
	ctx := context.Background()
	secret := h.addUser("alice", true)
	h.addOperator(api.OperatorCreate{Name: "alice", Kind: "user", Roles: []api.OperatorRole{{Role: "admin"}}})
	s, err := h.deviceLogin("alice", secret, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	alice := h.as(s)
	yes := true
	wantStatus(t, alice.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Disabled: &yes}, nil), http.StatusConflict, "cannot disable itself")
	wantStatus(t, alice.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Revoke: []string{"admin"}}, nil), http.StatusConflict, "own admin role")
	if err := alice.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("alice after refused self-changes: %v", err)
	}
	if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=alice", api.OperatorUpdate{Disabled: &yes}, nil); err != nil {
		t.Fatalf("another admin (break glass) disables alice: %v", err)
	}
	wantStatus(t, alice.Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "")
}
