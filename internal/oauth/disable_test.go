package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// disableUser does what the admin API does: mark the user disabled (and
// when), then revoke what was issued for them.
func disableUser(t *testing.T, h *harness, name string) {
	t.Helper()
	u, err := h.store.GetOAuthUser(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	u.Disabled, u.RevokedAt = true, h.clock.Now()
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.RevokeUser(t.Context(), name, "user disabled"); err != nil {
		t.Fatal(err)
	}
}

// TestDisabledUserLosesEverything: once alice is disabled, her access
// token, the token a service exchanged it for, her refresh token and her
// signed-in session all stop working, at every endpoint, and they stay
// dead when she is enabled again (she signs in afresh).
func TestDisabledUserLosesEverything(t *testing.T) {
	h, alice := deputyHarness(t)
	web := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Audience: []string{svc(0)}})
	b := h.browser()
	code := codeFrom(t, h.login(b, authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {fixedVerifier}}, "web", web)
	rt := tok["refresh_token"].(string)
	st, out := h.exchange(t, 0, alice, svc(1))
	if st != http.StatusOK {
		t.Fatalf("exchange: %d %v", st, out)
	}
	exchanged := out["access_token"].(string)
	// bob is untouched by what happens to alice.
	h.user("bob", "bob-password")
	bobCode := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "bob", "bob-password", ""), "s")
	_, bobTok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {bobCode}, "redirect_uri": {redirect},
		"code_verifier": {fixedVerifier}}, "web", web)

	disableUser(t, h, "alice")

	check := func(when string) {
		t.Helper()
		for name, tok := range map[string]string{"her access token": alice, "the exchanged token": exchanged, "her web token": tok["access_token"].(string)} {
			if _, err := h.p.VerifyAccessToken(tok, ""); err == nil {
				t.Errorf("%s: %s still verifies", when, name)
			}
		}
		if st, out := h.exchange(t, 0, alice, svc(1)); st != http.StatusBadRequest || out["error"] != "invalid_grant" {
			t.Errorf("%s: exchange of her token: %d %v", when, st, out)
		}
		if st, body := userinfo(h, "Bearer", alice, ""); st != http.StatusUnauthorized {
			t.Errorf("%s: userinfo: %d %s", when, st, body)
		}
		st, out := h.post(nil, oauth.PathIntrospect, url.Values{"token": {tok["access_token"].(string)}}, "web", web)
		if st != http.StatusOK || out["active"] != false {
			t.Errorf("%s: introspection: %d %v", when, st, out)
		}
		if st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "web", web); st != http.StatusBadRequest {
			t.Errorf("%s: refresh: %d %v", when, st, out)
		}
		// Her session no longer signs her in: the login page is shown.
		resp, err := b.Get(authURL(h, codeQuery("web", fixedCh)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: her session still signs her in: %d %s", when, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	check("disabled")
	if _, err := h.p.VerifyAccessToken(bobTok["access_token"].(string), ""); err != nil {
		t.Fatalf("bob's token after alice was disabled: %v", err)
	}
	// The revocation reached the list proxies get, with a reason.
	revs, _ := h.store.ListOAuthRevocations(t.Context(), h.clock.Now())
	if len(revs) < 3 || !strings.Contains(revs[0].Reason, "disabled") {
		t.Fatalf("revocation list %+v", revs)
	}

	// Enabled again: nothing issued before comes back to life.
	h.clock.Add(time.Second)
	u, _ := h.store.GetOAuthUser(t.Context(), "alice")
	u.Disabled = false
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	check("enabled again")
	// A fresh login works.
	codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
}

// TestDisabledUserRefusedBeforeRevocation: the endpoints check the user
// themselves, so a token of a disabled user is refused even by a replica
// that has not yet learnt of the revocation.
func TestDisabledUserRefusedBeforeRevocation(t *testing.T) {
	h, alice := deputyHarness(t)
	u, _ := h.store.GetOAuthUser(t.Context(), "alice")
	u.Disabled = true
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if st, out := h.exchange(t, 0, alice, svc(1)); st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "no longer active") {
		t.Errorf("exchange of a disabled user's token: %d %v", st, out)
	}
	if st, body := userinfo(h, "Bearer", alice, ""); st != http.StatusUnauthorized || !strings.Contains(body, "no longer active") {
		t.Errorf("userinfo of a disabled user: %d %s", st, body)
	}
}

// TestDisabledClientLosesEverything: disabling a client revokes the
// tokens issued to it (for users and for itself), the tokens exchanged
// from them, and the tokens it obtained by exchange; it can no longer
// authenticate or have users sign in to it. Other clients are untouched.
func TestDisabledClientLosesEverything(t *testing.T) {
	h, alice := deputyHarness(t)
	// svc-0 exchanges alice's gateway token; svc-1 exchanges that on.
	_, out := h.exchange(t, 0, alice, svc(1))
	hop1 := out["access_token"].(string)
	_, out = h.exchange(t, 1, hop1, svc(2))
	hop2 := out["access_token"].(string)
	// svc-2's own token, and one svc-3 got by exchanging it.
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc-2"}, "audience": {svc(3)}}
	st, out := h.post(h.mtlsClient(h.ca.svid(t, svc(2))), oauth.PathToken, cc, "", "")
	if st != http.StatusOK {
		t.Fatalf("client credentials: %d %v", st, out)
	}
	own := out["access_token"].(string)
	_, out = h.exchange(t, 3, own, svc(4))
	ownExchanged := out["access_token"].(string)

	// Disabling svc-1 revokes what it obtained by exchange (hop2);
	// alice's original token and hop1 (issued to svc-0) are not its own
	// and stay.
	if _, err := h.p.RevokeClient(t.Context(), "svc-1", "client disabled"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"alice's token": alice, "hop1 (issued to svc-0)": hop1} {
		if _, err := h.p.VerifyAccessToken(tok, ""); err != nil {
			t.Errorf("%s after svc-1 was disabled: %v", name, err)
		}
	}
	if _, err := h.p.VerifyAccessToken(hop2, ""); err == nil {
		t.Error("hop2, obtained by svc-1's exchange, still verifies")
	}

	// Disabling the gateway: alice's token and everything exchanged
	// from it go, at once.
	c, _ := h.store.GetOAuthClient(t.Context(), "gateway")
	c.Disabled = true
	if err := h.store.UpdateOAuthClient(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.RevokeClient(t.Context(), "gateway", "client disabled"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"alice's gateway token": alice, "hop1": hop1} {
		if _, err := h.p.VerifyAccessToken(tok, ""); err == nil {
			t.Errorf("%s still verifies after the gateway was disabled", name)
		}
	}
	// The gateway can no longer authenticate, nor have users sign in.
	st, out = h.post(nil, oauth.PathIntrospect, url.Values{"token": {alice}}, "gateway", h.secrets["gateway"])
	if st != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("disabled client authenticating: %d %v", st, out)
	}
	resp, err := h.browser().Get(authURL(h, codeQuery("gateway", fixedCh)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Errorf("authorization request for a disabled client: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Disabling svc-2: its own token and the one exchanged from it go.
	if _, err := h.p.RevokeClient(t.Context(), "svc-2", "client disabled"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"svc-2's own token": own, "svc-3's exchange of it": ownExchanged} {
		if _, err := h.p.VerifyAccessToken(tok, ""); err == nil {
			t.Errorf("%s still verifies after svc-2 was disabled", name)
		}
	}
}

// TestRevokingAFamilyTakesItsExchanges: an exchanged token starts a family
// of its own, but revoking the family it came from (here: its client
// revokes the refresh token) revokes it too, however many hops down.
func TestRevokingAFamilyTakesItsExchanges(t *testing.T) {
	h, _ := deputyHarness(t)
	web := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Audience: []string{svc(0)}})
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {fixedVerifier}}, "web", web)
	_, out := h.exchange(t, 0, tok["access_token"].(string), svc(1))
	hop1 := out["access_token"].(string)
	_, out = h.exchange(t, 1, hop1, svc(2))
	hop2 := out["access_token"].(string)
	if st, _ := h.post(nil, oauth.PathRevoke, url.Values{"token": {tok["refresh_token"].(string)}, "token_type_hint": {"refresh_token"}}, "web", web); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	for name, tok := range map[string]string{"the access token": tok["access_token"].(string), "hop 1": hop1, "hop 2": hop2} {
		if _, err := h.p.VerifyAccessToken(tok, ""); err == nil {
			t.Errorf("%s still verifies after its family was revoked", name)
		}
	}
	// Nothing more can be exchanged from them.
	if st, out := h.exchange(t, 1, hop1, svc(2)); st != http.StatusBadRequest {
		t.Errorf("exchange of a revoked token: %d %v", st, out)
	}
}
