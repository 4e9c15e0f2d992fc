package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// Tests for the findings of an outside red team (one test per finding;
// each failed before its fix).

// alerts runs what h recorded through the default detection rules and
// returns the alerts' rules and summaries.
func (h *harness) alerts(t *testing.T) map[string][]string {
	t.Helper()
	h.mu.Lock()
	entries := append([]*audit.Entry(nil), h.entries...)
	h.mu.Unlock()
	e := detect.NewEngine(detect.Default())
	out := map[string][]string{}
	seen := map[string]bool{}
	for i, en := range entries {
		for _, a := range e.Process(int64(i), en) {
			if !seen[a.ID] {
				seen[a.ID] = true
				out[a.Rule] = append(out[a.Rule], a.Summary)
			}
		}
	}
	return out
}

// Finding 1: an unauthenticated caller's client_id went into the entry's
// actor ("client:ID") and, through some reasons, into the text the
// revoked-credential-use rule matched: anyone could fire that alert
// naming a client they do not hold (and so, by dedup, silence the real
// one for an hour) and write what the alert says. Now what the caller
// typed is claimed_client_id, quoted and clipped; the actor is anonymous,
// and the rule matches structured fields only.
func TestUnauthenticatedClientIDForgesNoAlert(t *testing.T) {
	h := newHarness(t)
	h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	if _, err := h.p.RevokeClient(t.Context(), "web", "client disabled"); err != nil {
		t.Fatal(err)
	}
	// An assertion whose subject differs from client_id puts client_id in
	// the reason; Basic and client_secret_post name it as the caller.
	key := newKey(t)
	assertion := forge(t, jose.ES256, key, "k", nil, jwt.Claims{Issuer: "victim", Subject: "victim"})
	crafted := []string{
		"web revoked",
		"web\nrevoked-credential-use: client web used a revoked token",
		"client:web",
		strings.Repeat("revoked ", 2000),
	}
	for _, id := range crafted {
		cc := url.Values{"grant_type": {"client_credentials"}}
		f := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_assertion": {assertion},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}
		if st, out := h.post(nil, oauth.PathToken, f, "", ""); st != http.StatusUnauthorized {
			t.Fatalf("mismatched assertion: %d %v", st, out)
		}
		if st, out := h.post(nil, oauth.PathToken, cc, id, "wrong"); st != http.StatusUnauthorized {
			t.Fatalf("Basic with a crafted client_id: %d %v", st, out)
		}
		post := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"wrong"}}
		if st, out := h.post(nil, oauth.PathToken, post, "", ""); st != http.StatusUnauthorized {
			t.Fatalf("client_secret_post with a crafted client_id: %d %v", st, out)
		}
	}
	refusals := h.audited("oauth.client_auth")
	if len(refusals) == 0 {
		t.Fatal("no refused client authentication audited")
	}
	for _, e := range refusals {
		if e.Actor.User != "anonymous" || e.Actor.SpiffeID != "" {
			t.Errorf("refused authentication recorded with actor %+v, want anonymous", e.Actor)
		}
		if _, ok := e.Details["client_id"]; ok {
			t.Errorf("refused authentication has details.client_id %q: a claim must be labelled claimed_client_id", e.Details["client_id"])
		}
		c := e.Details["claimed_client_id"]
		if !strings.HasPrefix(c, `"`) || strings.ContainsAny(c, "\n\r") || len(c) > 200 {
			t.Errorf("claimed_client_id %q: want quoted, escaped and clipped", c)
		}
		if strings.ContainsAny(e.Reason, "\n\r") || len(e.Reason) > 400 {
			t.Errorf("reason %q carries the caller's line breaks or length", e.Reason)
		}
	}
	if a := h.alerts(t); len(a["revoked-credential-use"]) != 0 {
		t.Fatalf("unauthenticated requests fired revoked-credential-use: %q", a["revoked-credential-use"])
	}
}

// The rule still fires for what it is for: a revoked refresh token used
// by its (authenticated) client, named by the server.
func TestRevokedRefreshTokenUseAlerts(t *testing.T) {
	h, _ := deputyHarness(t)
	web := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Audience: []string{svc(0)}})
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {fixedVerifier}}, "web", web)
	if _, err := h.p.RevokeUser(t.Context(), "alice", "user disabled"); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(time.Second)
	if st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}}, "web", web); st != http.StatusBadRequest {
		t.Fatalf("revoked refresh token: %d %v", st, out)
	}
	a := h.alerts(t)["revoked-credential-use"]
	if len(a) != 1 || !strings.Contains(a[0], "client:web") {
		t.Fatalf("revoked-credential-use alerts %q, want one naming client:web", a)
	}
}
