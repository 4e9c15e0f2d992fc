package oauth_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// dpopCall posts form to the token endpoint at base (the issuer's own
// listener, or a replica's) with a proof by key carrying nonce, and
// returns the status, the JSON answer and the DPoP-Nonce header.
func (h *harness) dpopCall(base string, key crypto.Signer, nonce string, form url.Values, id, secret string) (int, map[string]any, string, string) {
	h.t.Helper()
	proof, err := dpop.NewProof(key, jose.ES256, http.MethodPost, h.srv.URL+oauth.PathToken, "", nonce, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return h.dpopSend(base, proof, form, id, secret)
}

func (h *harness) dpopSend(base, proof string, form url.Values, id, secret string) (int, map[string]any, string, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+oauth.PathToken, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", proof)
	req.SetBasicAuth(id, secret)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out, resp.Header.Get("DPoP-Nonce"), proof
}

// TestDPoPNonce: the token endpoint and userinfo take only proofs with a
// nonce they issued recently (RFC 9449 §8): a proof without one, with a
// stale one or with a made-up one is answered use_dpop_nonce with a fresh
// nonce, and the client's second try with it works.
func TestDPoPNonce(t *testing.T) {
	h, _ := codeHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	key := newKey(t)
	cc := url.Values{"grant_type": {"client_credentials"}}
	st, out, nonce, _ := h.dpopCall(h.srv.URL, key, "", cc, "svc", secret)
	if st != http.StatusBadRequest || out["error"] != "use_dpop_nonce" || nonce == "" {
		t.Fatalf("a proof without a nonce: %d %v, DPoP-Nonce %q", st, out, nonce)
	}
	st, out, next, _ := h.dpopCall(h.srv.URL, key, nonce, cc, "svc", secret)
	if st != http.StatusOK || out["token_type"] != "DPoP" || next == "" {
		t.Fatalf("the second try with the nonce: %d %v, DPoP-Nonce %q", st, out, next)
	}
	// Still good a period later; stale after two.
	h.clock.Add(oauth.DefaultDPoPNonceTTL)
	if st, out, _, _ := h.dpopCall(h.srv.URL, key, nonce, cc, "svc", secret); st != http.StatusOK {
		t.Fatalf("a nonce one period old: %d %v", st, out)
	}
	h.clock.Add(oauth.DefaultDPoPNonceTTL)
	st, out, fresh, _ := h.dpopCall(h.srv.URL, key, nonce, cc, "svc", secret)
	if st != http.StatusBadRequest || out["error"] != "use_dpop_nonce" || fresh == nonce || !strings.Contains(out["error_description"].(string), "stale") {
		t.Fatalf("a stale nonce: %d %v, DPoP-Nonce %q", st, out, fresh)
	}
	// A nonce made up, or one for the next period, is not taken.
	raw, _ := base64.RawURLEncoding.DecodeString(fresh)
	raw[len(raw)-1] ^= 1
	if st, out, _, _ := h.dpopCall(h.srv.URL, key, base64.RawURLEncoding.EncodeToString(raw), cc, "svc", secret); st != http.StatusBadRequest || out["error"] != "use_dpop_nonce" {
		t.Fatalf("a forged nonce: %d %v", st, out)
	}

	// Userinfo asks with a 401 challenge.
	spaKey := newKey(t)
	v, ch := pkce()
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("spa", ch)), "alice", "alice-password", ""), "s")
	st, tok := h.postDPoP(oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {v}, "client_id": {"spa"}}, h.proof(spaKey, "POST", oauth.PathToken, ""), "", "")
	if st != http.StatusOK {
		t.Fatalf("code grant: %d %v", st, tok)
	}
	at := tok["access_token"].(string)
	p, _ := dpop.NewProof(spaKey, jose.ES256, "GET", h.srv.URL+oauth.PathUserinfo, at, "", h.clock.Now())
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+oauth.PathUserinfo, nil)
	req.Header.Set("Authorization", "DPoP "+at)
	req.Header.Set("DPoP", p)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	n, ok := dpop.IsNonceChallenge(resp, body)
	if resp.StatusCode != http.StatusUnauthorized || !ok || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
		t.Fatalf("userinfo with a proof without a nonce: %d %s %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
	p, _ = dpop.NewProof(spaKey, jose.ES256, "GET", h.srv.URL+oauth.PathUserinfo, at, n, h.clock.Now())
	if st, body := userinfo(h, "DPoP", at, p); st != http.StatusOK {
		t.Fatalf("userinfo with the nonce: %d %s", st, body)
	}
}

// TestDPoPReplayAcrossReplicas: a proof accepted by one server replica is
// refused by another sharing its database; the other takes the first's
// nonces.
func TestDPoPReplayAcrossReplicas(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	_, b := h.replica(t)
	key := newKey(t)
	cc := url.Values{"grant_type": {"client_credentials"}}
	nonce := ""
	st, out, n, proof := h.dpopCall(h.srv.URL, key, nonce, cc, "svc", secret)
	if st == http.StatusBadRequest && out["error"] == "use_dpop_nonce" {
		st, out, _, proof = h.dpopCall(h.srv.URL, key, n, cc, "svc", secret)
	}
	if st != http.StatusOK {
		t.Fatalf("replica A: %d %v", st, out)
	}
	st, out, _, _ = h.dpopSend(b.URL, proof, cc, "svc", secret)
	if st != http.StatusBadRequest || out["error"] != "invalid_dpop_proof" || !strings.Contains(out["error_description"].(string), "already used") {
		t.Fatalf("the same proof at replica B: %d %v", st, out)
	}
	// A fresh proof with A's nonce works at B.
	if st, out, _, _ := h.dpopCall(b.URL, key, n, cc, "svc", secret); st != http.StatusOK {
		t.Fatalf("a fresh proof with A's nonce at B: %d %v", st, out)
	}
}

// TestDPoPKeyQuota: one key can have only DPoPKeyQuota proofs accepted
// while they live; it is the only one refused, and its quota comes back
// as its proofs expire.
func TestDPoPKeyQuota(t *testing.T) {
	h := newHarness(t, func(c *oauth.Config) { c.DPoPKeyQuota = 3 })
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	greedy, other := newKey(t), newKey(t)
	cc := url.Values{"grant_type": {"client_credentials"}}
	nonce := oauth.DPoPNonce(h.p)
	for i := 0; i < 3; i++ {
		if st, out, _, _ := h.dpopCall(h.srv.URL, greedy, nonce, cc, "svc", secret); st != http.StatusOK {
			t.Fatalf("proof %d: %d %v", i, st, out)
		}
	}
	st, out, _, _ := h.dpopCall(h.srv.URL, greedy, nonce, cc, "svc", secret)
	if st != http.StatusBadRequest || out["error"] != "invalid_dpop_proof" || !strings.Contains(out["error_description"].(string), "too many") {
		t.Fatalf("a fourth proof by one key: %d %v", st, out)
	}
	if st, out, _, _ := h.dpopCall(h.srv.URL, other, nonce, cc, "svc", secret); st != http.StatusOK {
		t.Fatalf("another key meanwhile: %d %v", st, out)
	}
	h.clock.Add(2 * time.Minute)
	if st, out, _, _ := h.dpopCall(h.srv.URL, greedy, oauth.DPoPNonce(h.p), cc, "svc", secret); st != http.StatusOK {
		t.Fatalf("the first key once its proofs expired: %d %v", st, out)
	}
}
