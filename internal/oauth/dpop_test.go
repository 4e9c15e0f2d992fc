package oauth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// postDPoP calls an endpoint with a DPoP proof (made with key; "" proof:
// none) and returns the status and JSON.
func (h *harness) postDPoP(path string, form url.Values, proof string, basicID, basicSecret string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	return h.do(req)
}

// proof makes a proof with the server's current nonce (as a client does
// after its first use_dpop_nonce answer; TestDPoPNonce covers that).
func (h *harness) proof(key crypto.Signer, method, path, token string) string {
	h.t.Helper()
	p, err := dpop.NewProof(key, jose.ES256, method, h.srv.URL+path, token, oauth.DPoPNonce(h.p), h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func userinfo(h *harness, scheme, token, proof string) (int, string) {
	return userinfoWith(h, h.srv.Client(), scheme, token, proof)
}

func userinfoWith(h *harness, c *http.Client, scheme, token, proof string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+oauth.PathUserinfo, nil)
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A public client gets DPoP-bound tokens: the access token only works
// with proofs by its key, the refresh token only refreshes with one.
func TestDPoPPublicClient(t *testing.T) {
	h, _ := codeHarness(t)
	key, thief := newKey(t), newKey(t)
	jkt, _ := dpop.Thumbprint(key.Public())
	v, ch := pkce()
	q := codeQuery("spa", ch)
	// A dpop_jkt that is not a thumbprint is refused at the authorization
	// endpoint, before anyone logs in.
	q.Set("dpop_jkt", "not-a-thumbprint")
	resp, err := h.browser().Get(authURL(h, q))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Get("error") != "invalid_request" || !strings.Contains(loc.Query().Get("error_description"), "dpop_jkt") {
		t.Fatalf("malformed dpop_jkt: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	q.Set("dpop_jkt", jkt)
	code := codeFrom(t, h.login(h.browser(), authURL(h, q), "alice", "alice-password", ""), "s")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {v}, "client_id": {"spa"}}
	// The code is bound to key (dpop_jkt): the thief's proof cannot redeem it.
	st, out := h.postDPoP(oauth.PathToken, form, h.proof(thief, "POST", oauth.PathToken, ""), "", "")
	if st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "dpop_jkt") {
		t.Fatalf("code redeemed with another key: %d %v", st, out)
	}
	// (The code is spent by that attempt; take a fresh one.)
	code = codeFrom(t, h.login(h.browser(), authURL(h, q), "alice", "alice-password", ""), "s")
	form.Set("code", code)
	st, tok := h.postDPoP(oauth.PathToken, form, h.proof(key, "POST", oauth.PathToken, ""), "", "")
	if st != http.StatusOK || tok["token_type"] != "DPoP" {
		t.Fatalf("token: %d %v", st, tok)
	}
	at := tok["access_token"].(string)
	claims, err := h.p.VerifyAccessToken(at, "")
	if err != nil || claims.Cnf == nil || claims.Cnf.JKT != jkt {
		t.Fatalf("access token cnf: %+v %v", claims, err)
	}

	// Userinfo: the bound token with a proof by its key works; as a plain
	// bearer token, with the thief's proof, a replayed proof, a proof for
	// another URL or another token, it does not.
	good := h.proof(key, "GET", oauth.PathUserinfo, at)
	if st, body := userinfo(h, "DPoP", at, good); st != http.StatusOK || !strings.Contains(body, `"sub":"alice"`) {
		t.Fatalf("userinfo with DPoP: %d %s", st, body)
	}
	for _, tc := range []struct{ name, scheme, proof, want string }{
		{"as a bearer token", "Bearer", "", "bound to a DPoP key"},
		{"replayed proof", "DPoP", good, "already used"},
		{"thief's proof", "DPoP", h.proof(thief, "GET", oauth.PathUserinfo, at), "another key"},
		{"proof for another URL", "DPoP", h.proof(key, "GET", oauth.PathToken, at), "htu"},
		{"proof for another method", "DPoP", h.proof(key, "POST", oauth.PathUserinfo, at), "htm"},
		{"proof without ath", "DPoP", h.proof(key, "GET", oauth.PathUserinfo, ""), "ath"},
		{"no proof", "DPoP", "", "exactly one DPoP header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, body := userinfo(h, tc.scheme, at, tc.proof); st != http.StatusUnauthorized || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s, want 401 naming %q", st, body, tc.want)
			}
		})
	}

	// The refresh token is bound to the key too (public client).
	rt := tok["refresh_token"].(string)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}
	st, out = h.postDPoP(oauth.PathToken, refresh, h.proof(thief, "POST", oauth.PathToken, ""), "", "")
	if st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "bound to a DPoP key") {
		t.Fatalf("refresh with the thief's key: %d %v", st, out)
	}
}

func TestDPoPConfidentialClientAndProofChecks(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	key := newKey(t)
	form := url.Values{"grant_type": {"client_credentials"}}
	st, tok := h.postDPoP(oauth.PathToken, form, h.proof(key, "POST", oauth.PathToken, ""), "svc", secret)
	if st != http.StatusOK || tok["token_type"] != "DPoP" {
		t.Fatalf("client credentials with DPoP: %d %v", st, tok)
	}
	// Without a proof: an ordinary bearer token.
	if st, tok := h.postDPoP(oauth.PathToken, form, "", "svc", secret); st != http.StatusOK || tok["token_type"] != "Bearer" {
		t.Fatalf("without DPoP: %d %v", st, tok)
	}
	proof := h.proof(key, "POST", oauth.PathToken, "")
	h.postDPoP(oauth.PathToken, form, proof, "svc", secret)
	for _, tc := range []struct{ name, proof string }{
		{"replayed", proof},
		{"for another endpoint", h.proof(key, "POST", oauth.PathIntrospect, "")},
		{"for GET", h.proof(key, "GET", oauth.PathToken, "")},
		{"garbage", "not-a-jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out := h.postDPoP(oauth.PathToken, form, tc.proof, "svc", secret)
			if st != http.StatusBadRequest || out["error"] != "invalid_dpop_proof" {
				t.Fatalf("got %d %v", st, out)
			}
		})
	}
	if n := len(h.auditedOutcome("oauth.token", "denied")); n < 4 {
		t.Fatalf("%d refused proofs audited, want 4", n)
	}
	// Discovery advertises DPoP.
	resp, err := h.srv.Client().Get(h.srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"dpop_signing_alg_values_supported"`) {
		t.Fatalf("discovery lacks DPoP: %s", b)
	}
}
