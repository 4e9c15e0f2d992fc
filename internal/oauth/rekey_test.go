package oauth_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// kidOf reads the key ID from a JWT's header without verifying it.
func kidOf(t *testing.T, p *oauth.Provider, tok string) string {
	t.Helper()
	for _, k := range p.JWKS().Keys {
		// The header names the kid in clear; match it against the JWKS.
		if strings.Contains(decodeHeader(t, tok), `"kid":"`+k.KeyID+`"`) {
			return k.KeyID
		}
	}
	return ""
}

func jwksIDs(p *oauth.Provider) []string {
	var out []string
	for _, k := range p.JWKS().Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// A burn-down without --revoke-tokens: the old key stops signing at once
// but verifies until it is dropped; then its tokens are refused, even
// ones the provider already verified (and cached).
func TestRekeySigningKeyKeepsOldForVerificationUntilDropped(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	token := func() string {
		st, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
		if st != http.StatusOK {
			t.Fatalf("token: %d %v", st, tok)
		}
		return tok["access_token"].(string)
	}
	active := func(tok string) bool {
		st, out := h.post(nil, oauth.PathIntrospect, url.Values{"token": {tok}}, "svc", secret)
		if st != http.StatusOK {
			t.Fatalf("introspect: %d %v", st, out)
		}
		return out["active"] == true
	}
	before := token()
	oldKID := kidOf(t, h.p, before)
	if !active(before) { // verified once: now in the verifier's cache
		t.Fatal("token from before is not active before the rekey")
	}
	old, kid, err := h.p.RekeySigningKey(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(old, oldKID) || kid == oldKID || kid == "" {
		t.Fatalf("rekey: old %v new %q; the key before was %q", old, kid, oldKID)
	}
	after := token()
	if got := kidOf(t, h.p, after); got != kid {
		t.Fatalf("a token after the rekey is signed by %q, want the new key %q", got, kid)
	}
	if !active(before) || !active(after) {
		t.Fatal("during the overlap both tokens must verify")
	}
	if _, err := h.p.DropSigningKeys(t.Context(), []string{kid}); err == nil {
		t.Fatal("dropping the active key was accepted")
	}
	dropped, err := h.p.DropSigningKeys(t.Context(), old)
	if err != nil || !slices.Contains(dropped, oldKID) {
		t.Fatalf("drop: %v %v", dropped, err)
	}
	if slices.Contains(jwksIDs(h.p), oldKID) {
		t.Fatalf("the dropped key is still published: %v", jwksIDs(h.p))
	}
	if active(before) {
		t.Fatal("a token signed by the dropped key is still active (cached verification outlived its key)")
	}
	if !active(after) {
		t.Fatal("the new key's token stopped verifying")
	}
	// Dropping again is not an error (a resumed burn-down repeats it).
	if _, err := h.p.DropSigningKeys(t.Context(), old); err != nil {
		t.Fatal(err)
	}
}

// With --revoke-tokens the old keys are withdrawn at once.
func TestRekeySigningKeyRevokeTokens(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
	before := tok["access_token"].(string)
	oldKID := kidOf(t, h.p, before)
	if _, _, err := h.p.RekeySigningKey(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(jwksIDs(h.p), oldKID) {
		t.Fatal("the old key is still published after a rekey with revoke-tokens")
	}
	st, out := h.post(nil, oauth.PathIntrospect, url.Values{"token": {before}}, "svc", secret)
	if st != http.StatusOK || out["active"] != false {
		t.Fatalf("token from before, after rekey with revoke-tokens: %d %v", st, out)
	}
	// A replica reading the same store agrees.
	p2, _ := h.replica(t)
	for _, k := range p2.JWKS().Keys {
		if k.KeyID == oldKID {
			t.Fatal("a replica still publishes the withdrawn key")
		}
	}
}

func decodeHeader(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
