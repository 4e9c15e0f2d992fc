package oauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// codeHarness has a confidential and a public client and a user.
func codeHarness(t *testing.T) (*harness, string) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}})
	h.client(store.OAuthClient{ID: "spa", AuthMethod: "none", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}})
	h.user("alice", "alice-password")
	return h, secret
}

func authURL(h *harness, q url.Values) string {
	return h.srv.URL + oauth.PathAuthorize + "?" + q.Encode()
}

// fixedVerifier and fixedCh are a PKCE pair for tests that are not about
// PKCE (every authorization request needs one).
const (
	fixedVerifier = "a-fixed-test-verifier-of-at-least-43-characters-long"
	fixedCh       = "DOLlzBLtChfyXQYFk4IMO96kbIQVjurvpuiS3hgF3Gc"
)

// pkce returns a verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	v := oauth2.GenerateVerifier()
	sum := sha256.Sum256([]byte(v))
	return v, base64.RawURLEncoding.EncodeToString(sum[:])
}

func codeQuery(client string, challenge string) url.Values {
	q := url.Values{"response_type": {"code"}, "client_id": {client}, "redirect_uri": {redirect}, "state": {"s"}, "scope": {"openid"}}
	if challenge != "" {
		q.Set("code_challenge", challenge)
		q.Set("code_challenge_method", "S256")
	}
	return q
}

// TestRedirectURIMustMatchExactly: anything but a registered URI, byte for
// byte, gets an error page, never a redirect.
func TestRedirectURIMustMatchExactly(t *testing.T) {
	h, _ := codeHarness(t)
	_, ch := pkce()
	for _, bad := range []string{
		redirect + "/extra",                     // extra path
		redirect + "?next=evil",                 // extra query
		"https://app.example/call",              // prefix
		"https://app.example.evil.com/callback", // look-alike host
		"https://evil.example/callback",         // open redirect
		"HTTPS://APP.EXAMPLE/callback",          // case games
		"https://app.example/callback#",         // fragment
	} {
		q := codeQuery("web", ch)
		q.Set("redirect_uri", bad)
		resp, err := h.browser().Get(authURL(h, q))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(string(body), "not registered") {
			t.Errorf("redirect_uri %q: %d, Location %q", bad, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

// TestPKCEGuards: every client must use PKCE with S256 (RFC 9700 §2.1.1:
// confidential clients too, so a code injected into their callback is
// useless), plain is refused, and the verifier must match.
func TestPKCEGuards(t *testing.T) {
	h, _ := codeHarness(t)
	errorOf := func(q url.Values) string {
		resp, err := h.browser().Get(authURL(h, q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc.Query().Get("error") + ": " + loc.Query().Get("error_description")
	}
	if got := errorOf(codeQuery("spa", "")); !strings.Contains(got, "PKCE is required") {
		t.Errorf("public client without PKCE: %q", got)
	}
	if got := errorOf(codeQuery("web", "")); !strings.Contains(got, "PKCE is required") {
		t.Errorf("confidential client without PKCE: %q", got)
	}
	q := codeQuery("spa", "")
	q.Set("code_challenge", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ")
	q.Set("code_challenge_method", "plain")
	if got := errorOf(q); !strings.Contains(got, "only S256") {
		t.Errorf("PKCE plain: %q", got)
	}
	// A stolen code without the verifier, or with a wrong one, is useless.
	for _, verifier := range []string{"", "wrong-verifier-wrong-verifier-wrong-verifier-x"} {
		_, ch := pkce()
		code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("spa", ch)), "alice", "alice-password", ""), "s")
		st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {redirect}, "client_id": {"spa"}, "code_verifier": {verifier}}, "", "")
		if st != http.StatusBadRequest || out["error"] != "invalid_grant" || !strings.Contains(out["error_description"].(string), "PKCE") {
			t.Fatalf("verifier %q: %d %v", verifier, st, out)
		}
	}
}

// TestCodeReuseRevokesTokens: the second use of a code fails and revokes
// the tokens the first use issued (RFC 6749 §4.1.2).
func TestCodeReuseRevokesTokens(t *testing.T) {
	h, _ := codeHarness(t)
	v, ch := pkce()
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("spa", ch)), "alice", "alice-password", ""), "s")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {"spa"}, "code_verifier": {v}}
	st, first := h.post(nil, oauth.PathToken, form, "", "")
	if st != http.StatusOK {
		t.Fatalf("first use: %d %v", st, first)
	}
	at := first["access_token"].(string)
	if _, err := h.p.VerifyAccessToken(at, ""); err != nil {
		t.Fatal(err)
	}
	st, second := h.post(nil, oauth.PathToken, form, "", "")
	if st != http.StatusBadRequest || second["error"] != "invalid_grant" {
		t.Fatalf("second use: %d %v", st, second)
	}
	if _, err := h.p.VerifyAccessToken(at, ""); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("access token after code reuse: %v", err)
	}
	st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first["refresh_token"].(string)}, "client_id": {"spa"}}, "", "")
	if st != http.StatusBadRequest {
		t.Fatalf("refresh after code reuse: %d %v", st, out)
	}
	if len(h.audited("oauth.code_reuse")) != 1 {
		t.Fatal("code reuse not audited")
	}
}

// TestRefreshReuseRevokesFamily: a rotated refresh token that comes back
// revokes the whole family, including the thief's or client's newer tokens.
func TestRefreshReuseRevokesFamily(t *testing.T) {
	h, secret := codeHarness(t)
	v, ch := pkce()
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", ch)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {v}}, "web", secret)
	rt1 := tok["refresh_token"].(string)
	st, tok2 := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}}, "web", secret)
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %v", st, tok2)
	}
	// The attacker replays rt1.
	st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}}, "web", secret)
	if st != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("reuse: %d %v", st, out)
	}
	// Now the legitimate newer tokens are dead too.
	st, _ = h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2["refresh_token"].(string)}}, "web", secret)
	if st != http.StatusBadRequest {
		t.Fatalf("newer refresh token after reuse: %d", st)
	}
	if _, err := h.p.VerifyAccessToken(tok2["access_token"].(string), ""); err == nil {
		t.Fatal("access token of a revoked family still verifies")
	}
	reuse := h.audited("oauth.refresh_reuse")
	if len(reuse) != 1 || reuse[0].Actor.User != "alice" {
		t.Fatalf("refresh reuse audit: %+v", reuse)
	}
}

// TestTokenForClientAUsedByClientB: a code or refresh token stolen from one
// client is refused to another.
func TestTokenForClientAUsedByClientB(t *testing.T) {
	h, secret := codeHarness(t)
	otherSecret := h.client(store.OAuthClient{ID: "other", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}})
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}}, "other", otherSecret)
	if st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "another client") {
		t.Fatalf("code of web used by other: %d %v", st, out)
	}
	code = codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}}, "web", secret)
	// Introspection does not describe web's token to other.
	st, out = h.post(nil, oauth.PathIntrospect, url.Values{"token": {tok["access_token"].(string)}}, "other", otherSecret)
	if st != http.StatusOK || out["active"] != false {
		t.Fatalf("introspection by another client: %d %v", st, out)
	}
	st, out = h.post(nil, oauth.PathIntrospect, url.Values{"token": {tok["access_token"].(string)}}, "web", secret)
	if st != http.StatusOK || out["active"] != true || out["username"] != "alice" {
		t.Fatalf("introspection by its client: %d %v", st, out)
	}
	// A refresh token presented by another client is refused and, being
	// evidently stolen, takes its family with it.
	st, out = h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}}, "other", otherSecret)
	if st != http.StatusBadRequest {
		t.Fatalf("refresh token of web used by other: %d %v", st, out)
	}
	st, out = h.post(nil, oauth.PathIntrospect, url.Values{"token": {tok["access_token"].(string)}}, "web", secret)
	if st != http.StatusOK || out["active"] != false {
		t.Fatalf("introspection after the family was revoked: %d %v", st, out)
	}
}

// TestRevocationEndpoint: a revoked access token stops verifying; a revoked
// refresh token takes its family with it.
func TestRevocationEndpoint(t *testing.T) {
	h, secret := codeHarness(t)
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}}, "web", secret)
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
	if st, _ := h.post(nil, oauth.PathRevoke, url.Values{"token": {at}}, "web", secret); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	if _, err := h.p.VerifyAccessToken(at, ""); err == nil {
		t.Fatal("revoked access token verifies")
	}
	if st, _ := h.post(nil, oauth.PathRevoke, url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}}, "web", secret); st != http.StatusOK {
		t.Fatalf("revoke refresh: %d", st)
	}
	if st, _ := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "web", secret); st != http.StatusBadRequest {
		t.Fatal("revoked refresh token still works")
	}
	// Unknown tokens get the same 200 (RFC 7009 §2.2).
	if st, _ := h.post(nil, oauth.PathRevoke, url.Values{"token": {"nonsense"}}, "web", secret); st != http.StatusOK {
		t.Fatalf("revoke unknown: %d", st)
	}
	if n := len(h.audited("oauth.token_revoke")); n != 2 {
		t.Fatalf("revocations audited: %d", n)
	}
}

// TestLoginLockout: brute force on the login form hits the back-off; while
// it lasts even the right password is refused; every failure is audited.
func TestLoginLockout(t *testing.T) {
	h, _ := codeHarness(t)
	u := authURL(h, codeQuery("web", fixedCh))
	for i := 0; i < oauth.DefaultMaxFailures; i++ {
		if resp := h.login(h.browser(), u, "alice", "guess-"+string(rune('a'+i)), ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
	}
	if resp := h.login(h.browser(), u, "alice", "alice-password", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("right password while locked: %d", resp.StatusCode)
	}
	// Repeats are counted (details.count) once their interval ends.
	h.flushRefusals(t)
	fails := h.audited("oauth.login")
	backingOff := slices.ContainsFunc(fails, func(e *audit.Entry) bool { return strings.Contains(e.Reason, "backing off") })
	if n := counted(fails); n != oauth.DefaultMaxFailures+1 || !backingOff || fails[0].Details["username"] != "alice" {
		t.Fatalf("login failures audited: %d (one backing off: %v), first %+v", n, backingOff, fails[0])
	}
	h.clock.Add(oauth.DefaultBackoffBase)
	codeFrom(t, h.login(h.browser(), u, "alice", "alice-password", ""), "s")
	// Unknown users fail the same way.
	if resp := h.login(h.browser(), u, "mallory", "x", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", resp.StatusCode)
	}
}

// TestTOTP: with a second factor, the password alone is not enough, and a
// code is accepted once.
func TestTOTP(t *testing.T) {
	h, _ := codeHarness(t)
	secret, _ := oauth.NewTOTPSecret()
	u, err := h.store.GetOAuthUser(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.TOTPSecret, err = oauth.SealTOTP(h.wrap, "alice", secret); err != nil {
		t.Fatal(err)
	}
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	au := authURL(h, codeQuery("web", fixedCh))
	if resp := h.login(h.browser(), au, "alice", "alice-password", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no code: %d", resp.StatusCode)
	}
	code := oauth.TOTPCode(secret, h.clock.Now())
	codeFrom(t, h.login(h.browser(), au, "alice", "alice-password", code), "s")
	if resp := h.login(h.browser(), au, "alice", "alice-password", code); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed one-time code: %d", resp.StatusCode)
	}
}

// TestCSRF: the login form refuses a post without the browser's token.
func TestCSRF(t *testing.T) {
	h, _ := codeHarness(t)
	form := codeQuery("web", fixedCh)
	form.Set("username", "alice")
	form.Set("password", "alice-password")
	form.Set("csrf", "forged")
	resp, err := h.browser().PostForm(h.srv.URL+oauth.PathAuthorize, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged form: %d", resp.StatusCode)
	}
}

// forge signs claims with an arbitrary key and header.
func forge(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, extra map[jose.HeaderKey]any, claims any) string {
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// forgeEmbedded signs with key and carries its public half in a jwk header.
func forgeEmbedded(t *testing.T, key *ecdsa.PrivateKey, claims any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{EmbedJWK: true}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestForgedAccessTokens: every classic JWT attack is refused with an
// error naming what was wrong.
func TestForgedAccessTokens(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"},
		Audience: []string{"spiffe://example.org/orders"}})
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
	good := tok["access_token"].(string)
	if _, err := h.p.VerifyAccessToken(good, "spiffe://example.org/orders"); err != nil {
		t.Fatal(err)
	}
	jwks := h.p.JWKS()
	pub := jwks.Keys[0]
	now := h.clock.Now()
	claims := func(mod func(*accesstoken.Claims)) *accesstoken.Claims {
		c := &accesstoken.Claims{Issuer: h.srv.URL, Subject: "svc", Audience: jwt.Audience{"spiffe://example.org/orders"},
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: "forged", ClientID: "svc"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER := pub.Key.(*ecdsa.PublicKey)
	hmacKey, _ := pubDER.Bytes()

	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"` + pub.KeyID + `"}`))
	payload := strings.Split(good, ".")[1]
	for _, tt := range []struct {
		name, token, want string
	}{
		{"alg none", header + "." + payload + ".", "malformed"},
		{"HS256 keyed with the public key", forge(t, jose.HS256, hmacKey, pub.KeyID, nil, claims(nil)), "malformed"},
		{"attacker key under our kid", forge(t, jose.ES256, attacker, pub.KeyID, nil, claims(nil)), "signature"},
		{"unknown kid", forge(t, jose.ES256, attacker, "attacker-kid", nil, claims(nil)), "unknown key ID"},
		{"jku pointing elsewhere", forge(t, jose.ES256, attacker, pub.KeyID, map[jose.HeaderKey]any{"jku": "https://evil.example/jwks"}, claims(nil)), "jku"},
		{"x5u pointing elsewhere", forge(t, jose.ES256, attacker, pub.KeyID, map[jose.HeaderKey]any{"x5u": "https://evil.example/cert"}, claims(nil)), "x5u"},
		{"x5c carrying the attacker's certificate", forge(t, jose.ES256, attacker, pub.KeyID, map[jose.HeaderKey]any{"x5c": []string{base64.StdEncoding.EncodeToString(h.ca.cert.Raw)}}, claims(nil)), "x5c"},
		{"embedded jwk of the attacker", forgeEmbedded(t, attacker, claims(nil)), "embedded jwk"},
		{"truncated signature", good[:len(good)-10], "signature"},
		{"payload swapped", strings.Split(good, ".")[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x"}`)) + "." + strings.Split(good, ".")[2], "signature"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.p.VerifyAccessToken(tt.token, "spiffe://example.org/orders")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	// Claims checks, on tokens properly signed by the provider's keyring
	// (via a verifier over the same keys but other expectations).
	cases := []struct {
		name string
		aud  string
		adv  time.Duration
		want string
	}{
		{"wrong audience", "spiffe://example.org/payments", 0, "aud"},
		{"expired", "spiffe://example.org/orders", oauth.DefaultAccessTokenTTL + time.Minute, "expired"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			h.clock.Add(tt.adv)
			defer h.clock.Add(-tt.adv)
			if _, err := h.p.VerifyAccessToken(good, tt.aud); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	// Not yet valid and wrong issuer: checked by accesstoken's own tests.
}

// TestIDTokenIsNotAnAccessToken: an ID token (typ JWT) is refused where an
// access token is expected.
func TestIDTokenIsNotAnAccessToken(t *testing.T) {
	h, secret := codeHarness(t)
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}}, "web", secret)
	if _, err := h.p.VerifyAccessToken(tok["id_token"].(string), ""); err == nil || !strings.Contains(err.Error(), "typ") {
		t.Fatalf("ID token as access token: %v", err)
	}
}
