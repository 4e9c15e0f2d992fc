package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

const redirect = "https://app.example/callback"

// TestInteropAuthCodePKCE: an unmodified golang.org/x/oauth2 client runs
// the code flow with PKCE against discovery from an unmodified go-oidc,
// which then verifies the ID token (signature via JWKS, iss, aud, exp,
// nonce); the refresh token rotates and the old one is then refused.
func TestInteropAuthCodePKCE(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "gateway", Name: "Shop gateway", AuthMethod: "client_secret_basic",
		RedirectURIs: []string{redirect}, GrantTypes: []string{"authorization_code", "refresh_token"},
		Audience: []string{"spiffe://example.org/orders"}})
	h.user("alice", "correct horse battery staple", "buyers")

	ctx := oidc.ClientContext(t.Context(), h.srv.Client())
	prov, err := oidc.NewProvider(ctx, h.srv.URL)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	conf := oauth2.Config{ClientID: "gateway", ClientSecret: secret, Endpoint: prov.Endpoint(), RedirectURL: redirect,
		Scopes: []string{oidc.ScopeOpenID, "profile", "email", "groups"}}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce"))

	b := h.browser()
	code := codeFrom(t, h.login(b, authURL, "alice", "correct horse battery staple", ""), "st4te")
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("x/oauth2 exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := prov.Verifier(&oidc.Config{ClientID: "gateway"}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("go-oidc verify ID token: %v", err)
	}
	if idt.Subject != "alice" || idt.Nonce != "n0nce" {
		t.Fatalf("ID token sub %q nonce %q", idt.Subject, idt.Nonce)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	idt.Claims(&claims)
	if claims.Email != "alice@example.org" || len(claims.Groups) != 1 {
		t.Fatalf("ID token claims %+v", claims)
	}
	// The access token is for the registered resource and names the user.
	at, err := h.p.VerifyAccessToken(tok.AccessToken, "spiffe://example.org/orders")
	if err != nil {
		t.Fatal(err)
	}
	if at.Subject != "alice" || at.ClientID != "gateway" || at.SessionID == "" {
		t.Fatalf("access token claims %+v", at)
	}
	// Userinfo via go-oidc.
	ui, err := prov.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if ui.Subject != "alice" || ui.Email != "alice@example.org" {
		t.Fatalf("userinfo %+v", ui)
	}

	// Refresh with x/oauth2: a new refresh token each time.
	old := tok.RefreshToken
	tok.Expiry = tok.Expiry.Add(-24 * 60 * 60 * 1e9)
	fresh, err := conf.TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatalf("x/oauth2 refresh: %v", err)
	}
	if fresh.RefreshToken == "" || fresh.RefreshToken == old || fresh.AccessToken == tok.AccessToken {
		t.Fatal("refresh did not rotate the tokens")
	}
	if len(h.audited("oauth.login")) != 1 || len(h.audited("oauth.token_issue")) != 1 || len(h.audited("oauth.token_refresh")) != 1 {
		t.Fatalf("audit: %d logins, %d issued, %d refreshed", len(h.audited("oauth.login")), len(h.audited("oauth.token_issue")), len(h.audited("oauth.token_refresh")))
	}

	// Single sign-on: a second authorization needs no password.
	verifier2 := oauth2.GenerateVerifier()
	resp, err := b.Get(conf.AuthCodeURL("again", oauth2.S256ChallengeOption(verifier2)))
	if err != nil {
		t.Fatal(err)
	}
	if code := codeFrom(t, resp, "again"); code == "" {
		t.Fatal("no code on single sign-on")
	}
	// prompt=none without a session: login_required at the redirect URI.
	resp, err = h.browser().Get(conf.AuthCodeURL("x", oauth2.S256ChallengeOption(verifier2), oauth2.SetAuthURLParam("prompt", "none")))
	if err != nil {
		t.Fatal(err)
	}
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Get("error") != "login_required" {
		t.Fatalf("prompt=none without session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestInteropClientCredentials: x/oauth2/clientcredentials gets a token
// for an allowed audience, and is refused one for another.
func TestInteropClientCredentials(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "reports", AuthMethod: "client_secret_post", GrantTypes: []string{"client_credentials"},
		Scopes: []string{"orders:read"}, Audience: []string{"spiffe://example.org/orders"}})
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, h.srv.Client())
	cc := clientcredentials.Config{ClientID: "reports", ClientSecret: secret, TokenURL: h.srv.URL + oauth.PathToken,
		Scopes: []string{"orders:read"}, AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{"resource": {"spiffe://example.org/orders"}}}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	c, err := h.p.VerifyAccessToken(tok.AccessToken, "spiffe://example.org/orders")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "reports" || c.Scope != "orders:read" {
		t.Fatalf("claims %+v", c)
	}
	cc.EndpointParams = url.Values{"resource": {"spiffe://example.org/payments"}}
	if _, err := cc.Token(ctx); err == nil || !strings.Contains(err.Error(), "invalid_target") {
		t.Fatalf("token for a foreign audience: %v", err)
	}
	cc.EndpointParams = nil
	cc.ClientSecret = "wrong"
	if _, err := cc.Token(ctx); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: %v", err)
	}
	if got := h.audited("oauth.client_auth"); len(got) != 1 {
		t.Fatalf("client auth failures audited: %d", len(got))
	}
	// Basic is refused for a client registered for client_secret_post.
	st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "reports", secret)
	if st != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Fatalf("wrong auth method: %d %v", st, out)
	}
}
