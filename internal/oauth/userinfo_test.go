package oauth_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/oauth"
)

// TestUserinfoOnlyForItsAudience: userinfo is a resource like any other
// (OIDC Core §5.3): it takes a token issued for it (an openid login, whose
// audience includes the userinfo endpoint), not one a service received for
// itself, even if that token carries the openid scope.
func TestUserinfoOnlyForItsAudience(t *testing.T) {
	h, alice := deputyHarness(t)
	c, err := h.p.VerifyAccessToken(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Audience, h.srv.URL+oauth.PathUserinfo) || !slices.Contains(c.Audience, svc(0)) {
		t.Fatalf("an openid login's token has audience %v, want the service and the userinfo endpoint", c.Audience)
	}
	if st, body := userinfo(h, "Bearer", alice, ""); st != http.StatusOK || !strings.Contains(body, `"sub":"alice"`) {
		t.Fatalf("userinfo with the login's token: %d %s", st, body)
	}
	// svc-0 exchanges it for svc-1, keeping the openid scope: that token is
	// svc-1's, not userinfo's.
	// (svc-0 presents it over its own certificate, which the token is bound to.)
	svc0 := h.mtlsClient(h.ca.svid(t, svc(0)))
	st, out := h.exchangeWith(t, svc0, 0, alice, svc(1))
	if st != http.StatusOK || !strings.Contains(out["scope"].(string), "openid") {
		t.Fatalf("exchange: %d %v", st, out)
	}
	if st, body := userinfoWith(h, svc0, "Bearer", out["access_token"].(string), ""); st != http.StatusUnauthorized || !strings.Contains(body, "audience") {
		t.Fatalf("userinfo with a token addressed to svc-1: %d %s", st, body)
	}
	// An exchange cannot ask for the userinfo audience unless registered.
	st, out = h.exchange(t, 0, alice, h.srv.URL+oauth.PathUserinfo)
	if st != http.StatusBadRequest || out["error"] != "invalid_target" {
		t.Fatalf("exchange for the userinfo endpoint: %d %v", st, out)
	}
}
