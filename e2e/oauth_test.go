package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// TestOAuthServer runs the authorization server inside a real "rampart
// server": clients and users made with the CLI, the code flow with PKCE
// driven by x/oauth2 through the real login page, the ID token checked by
// go-oidc, client credentials, a refresh token replayed; every step lands
// in the audit log and the replay raises the refresh-token-reuse alert.
func TestOAuthServer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	env := s.adminEnv()
	const cb = "http://127.0.0.1:9/callback"
	out := mustCLI(t, env, "oauth", "client", "create", "--id", "gateway", "--name", "Shop", "--grant", "authorization_code",
		"--grant", "refresh_token", "--redirect-uri", cb, "--audience", "spiffe://example.org/orders")
	secret := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	if secret == nil {
		t.Fatalf("client create printed no secret:\n%s", out)
	}
	ccOut := mustCLI(t, env, "oauth", "client", "create", "--id", "reports", "--auth-method", "client_secret_post",
		"--grant", "client_credentials", "--scope", "orders:read", "--audience", "spiffe://example.org/orders")
	ccSecret := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(ccOut)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("alice-long-password\n"), 0o600)
	mustCLI(t, env, "oauth", "user", "create", "--username", "alice", "--password-file", pw, "--email", "alice@example.org", "--group", "buyers")
	if _, err := cli(t, env, "oauth", "client", "create", "--id", "bad", "--grant", "authorization_code"); err == nil || !strings.Contains(err.Error(), "redirect_uris") {
		t.Fatalf("client without redirect URI: %v", err)
	}

	tr, hc := trustServer(dir)
	issuer := "https://" + s.addr
	ctx := oidc.ClientContext(context.Background(), hc)
	prov, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	conf := oauth2.Config{ClientID: "gateway", ClientSecret: secret[1], Endpoint: prov.Endpoint(), RedirectURL: cb,
		Scopes: []string{oidc.ScopeOpenID, "email", "groups"}}
	tok := browserLogin(t, tr, issuer, conf, "alice", "alice-long-password", "n1")
	idt, err := prov.Verifier(&oidc.Config{ClientID: "gateway"}).Verify(ctx, tok.Extra("id_token").(string))
	if err != nil || idt.Subject != "alice" || idt.Nonce != "n1" {
		t.Fatalf("ID token: %v %+v", err, idt)
	}

	cc := clientcredentials.Config{ClientID: "reports", ClientSecret: ccSecret[1], TokenURL: prov.Endpoint().TokenURL, AuthStyle: oauth2.AuthStyleInParams}
	if _, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, hc)); err != nil {
		t.Fatalf("client credentials: %v", err)
	}

	// Refresh, then replay the old refresh token.
	old := tok.RefreshToken
	tok.Expiry = time.Now().Add(-time.Hour)
	if _, err := conf.TokenSource(ctx, tok).Token(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: old, Expiry: time.Now().Add(-time.Hour)}).Token(); err == nil {
		t.Fatal("replayed refresh token accepted")
	}
	eventually(t, 20*time.Second, "refresh-token-reuse alert", func() error {
		out, err := cli(t, env, "alert", "list", "--json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "refresh-token-reuse") {
			return fmt.Errorf("alerts: %s", out)
		}
		return nil
	})
	s.stop()
	log, err := cli(t, nil, "audit", "query", "--data", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"action":"oauth.client_create"`, `"action":"oauth.user_create"`, `"action":"oauth.login"`,
		`"action":"oauth.token_issue"`, `"action":"oauth.token_refresh"`, `"action":"oauth.refresh_reuse"`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(log, "alice-long-password") || strings.Contains(log, secret[1]) {
		t.Error("a password or client secret reached the audit log")
	}
}

// trustServer returns a transport and client that trust the server's
// bundle (in its data dir).
func trustServer(dir string) (*http.Transport, *http.Client) {
	pool := x509.NewCertPool()
	bundle, _ := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	pool.AppendCertsFromPEM(bundle)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	return tr, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// browserLogin runs the authorization code flow with PKCE the way a user
// does: open the login page, fill in the form, follow the redirect; then
// the client (x/oauth2) exchanges the code.
func browserLogin(t *testing.T, tr *http.Transport, issuer string, conf oauth2.Config, user, password, nonce string) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Transport: tr, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(conf.AuthCodeURL("xyz", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `<label for="password">Password</label>`) {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, page)
	}
	form := url.Values{"username": {user}, "password": {password}, "action": {"allow"}}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&#43;", "+"))
	}
	resp, err = browser.PostForm(issuer+"/oauth2/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" || loc.Query().Get("iss") != issuer {
		t.Fatalf("login: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: tr})
	tok, err := conf.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}
