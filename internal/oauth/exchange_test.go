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

// deputyHarness has a gateway (code flow, tokens for svc-0), a chain of
// services svc-0 ... svc-7 each allowed to exchange a token for the next
// and for svc-0 (to make loops), and alice.
func deputyHarness(t *testing.T, mutate ...func(*oauth.Config)) (*harness, string) {
	t.Helper()
	h := newHarness(t, mutate...)
	gw := h.client(store.OAuthClient{ID: "gateway", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code"}, Scopes: []string{"orders:read"}, Audience: []string{svc(0)}})
	for i := 0; i < 8; i++ {
		h.client(store.OAuthClient{ID: "svc-" + string(rune('0'+i)), AuthMethod: "tls_client_auth", SPIFFEID: svc(i),
			GrantTypes: []string{oauth.GrantTokenExchange, "client_credentials"}, Audience: []string{svc(i + 1), svc(0), svc(1)}})
	}
	h.user("alice", "alice-password")
	v, ch := pkce()
	q := codeQuery("gateway", ch)
	q.Set("scope", "openid orders:read")
	code := codeFrom(t, h.login(h.browser(), authURL(h, q), "alice", "alice-password", ""), "s")
	st, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {v}}, "gateway", gw)
	if st != http.StatusOK {
		t.Fatalf("alice's token: %d %v", st, tok)
	}
	return h, tok["access_token"].(string)
}

func svc(i int) string { return "spiffe://example.org/svc-" + string(rune('0'+i)) }

// exchange has service i trade subject for a token addressed to audience.
func (h *harness) exchange(t *testing.T, i int, subject, audience string) (int, map[string]any) {
	t.Helper()
	return h.exchangeWith(t, h.mtlsClient(h.ca.svid(t, svc(i))), i, subject, audience)
}

// exchangeWith is exchange over c, a client presenting service i's SVID.
func (h *harness) exchangeWith(t *testing.T, c *http.Client, i int, subject, audience string) (int, map[string]any) {
	t.Helper()
	f := url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {audience}, "client_id": {"svc-" + string(rune('0'+i))}}
	return h.post(c, oauth.PathToken, f, "", "")
}

// TestExchangeCannotRenewAnExpiredToken: a token past its exp, even by a
// second (inside the clock-skew leeway a distant verifier allows), buys
// nothing at the token endpoint, which is the clock that issued it; and a
// token exchanged just before its subject expires ends with it, so
// exchanging again and again never extends a stolen token's life.
func TestExchangeCannotRenewAnExpiredToken(t *testing.T) {
	h, alice := deputyHarness(t)
	orig, err := h.p.VerifyAccessToken(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	exp := orig.Expiry.Time()

	// Shortly before the end: allowed, and the new token ends with its
	// subject (never the full TTL).
	h.clock.Set(exp.Add(-5 * time.Second))
	st, out := h.exchange(t, 0, alice, svc(1))
	if st != http.StatusOK {
		t.Fatalf("exchange 5 s before expiry: %d %v", st, out)
	}
	next, err := h.p.VerifyAccessToken(out["access_token"].(string), svc(1))
	if err != nil {
		t.Fatal(err)
	}
	if next.Expiry.Time().After(exp) || out["expires_in"].(float64) > 5 {
		t.Fatalf("exchanged token expires %v (expires_in %v), after its subject's %v", next.Expiry.Time(), out["expires_in"], exp)
	}
	// At and after exp (inside the old 30 s leeway): invalid_grant.
	for _, after := range []time.Duration{0, time.Second, 29 * time.Second} {
		h.clock.Set(exp.Add(after))
		st, out := h.exchange(t, 0, alice, svc(1))
		if st != http.StatusBadRequest || out["error"] != "invalid_grant" || !strings.Contains(out["error_description"].(string), "expired") {
			t.Fatalf("exchange %v after expiry: %d %v", after, st, out)
		}
		// The token endpoint's other readers agree: introspection calls it
		// inactive, userinfo refuses it.
		st, out = h.post(h.mtlsClient(h.ca.svid(t, svc(0))), oauth.PathIntrospect, url.Values{"token": {alice}, "client_id": {"svc-0"}}, "", "")
		if st != http.StatusOK || out["active"] != false {
			t.Fatalf("introspection %v after expiry: %d %v", after, st, out)
		}
	}
}

// TestActChainLimits: each exchange nests the previous actor in act; the
// chain is refused beyond MaxActDepth hops, and an actor already in the
// chain (a loop through the same services) is refused at once.
func TestActChainLimits(t *testing.T) {
	h, alice := deputyHarness(t)
	tok := alice
	for i := 0; i < oauth.DefaultMaxActDepth; i++ {
		st, out := h.exchange(t, i, tok, svc(i+1))
		if st != http.StatusOK {
			t.Fatalf("hop %d: %d %v", i+1, st, out)
		}
		tok = out["access_token"].(string)
	}
	c, err := h.p.VerifyAccessToken(tok, svc(oauth.DefaultMaxActDepth))
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for a := c.Act; a != nil; a = a.Act {
		depth++
	}
	if depth != oauth.DefaultMaxActDepth {
		t.Fatalf("act depth %d, want %d", depth, oauth.DefaultMaxActDepth)
	}
	i := oauth.DefaultMaxActDepth
	st, out := h.exchange(t, i, tok, svc(i+1))
	if st != http.StatusBadRequest || out["error"] != "invalid_request" || !strings.Contains(out["error_description"].(string), "act chain") {
		t.Fatalf("hop %d: %d %v, want invalid_request naming the act chain", i+1, st, out)
	}
	if n := len(h.auditedOutcome("oauth.token", "denied")); n != 1 {
		t.Fatalf("%d refusals audited, want 1", n)
	}

	// A loop: svc-0 -> svc-1 -> svc-0 again is refused at the second visit.
	st, out = h.exchange(t, 0, alice, svc(1))
	if st != http.StatusOK {
		t.Fatalf("svc-0 -> svc-1: %d %v", st, out)
	}
	st, out = h.exchange(t, 1, out["access_token"].(string), svc(0))
	if st != http.StatusOK {
		t.Fatalf("svc-1 -> svc-0: %d %v", st, out)
	}
	st, out = h.exchange(t, 0, out["access_token"].(string), svc(1))
	if st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "already in the act chain") {
		t.Fatalf("svc-0 exchanging again (a loop): %d %v", st, out)
	}

	// The limit is configurable.
	h2, alice2 := deputyHarness(t, func(c *oauth.Config) { c.MaxActDepth = 1 })
	st, out = h2.exchange(t, 0, alice2, svc(1))
	if st != http.StatusOK {
		t.Fatalf("one hop with MaxActDepth 1: %d %v", st, out)
	}
	if st, out := h2.exchange(t, 1, out["access_token"].(string), svc(2)); st != http.StatusBadRequest {
		t.Fatalf("two hops with MaxActDepth 1: %d %v", st, out)
	}
}
