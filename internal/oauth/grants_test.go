package oauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// TestTLSClientAuthBindsTokens: a client authenticating with its SVID (RFC
// 8705) gets a token bound to that certificate; another certificate, or
// none, does not authenticate it.
func TestTLSClientAuthBindsTokens(t *testing.T) {
	h := newHarness(t)
	h.client(store.OAuthClient{ID: "orders", AuthMethod: "tls_client_auth", SPIFFEID: "spiffe://example.org/orders",
		GrantTypes: []string{"client_credentials"}, Audience: []string{"spiffe://example.org/payments"}})
	cert := h.ca.svid(t, "spiffe://example.org/orders")
	st, out := h.post(h.mtlsClient(cert), oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {"orders"}}, "", "")
	if st != http.StatusOK {
		t.Fatalf("tls_client_auth: %d %v", st, out)
	}
	c, err := h.p.VerifyAccessToken(out["access_token"].(string), "spiffe://example.org/payments")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cnf == nil || c.Cnf.X5tS256 != accesstoken.Thumbprint(cert.Leaf) || c.Subject != "spiffe://example.org/orders" {
		t.Fatalf("claims %+v cnf %+v", c, c.Cnf)
	}
	// Another service's SVID does not authenticate as orders.
	st, out = h.post(h.mtlsClient(h.ca.svid(t, "spiffe://example.org/reports")), oauth.PathToken,
		url.Values{"grant_type": {"client_credentials"}, "client_id": {"orders"}}, "", "")
	if st != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Fatalf("foreign SVID: %d %v", st, out)
	}
	// No certificate: not tls_client_auth, so refused.
	st, out = h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {"orders"}}, "", "")
	if st != http.StatusUnauthorized {
		t.Fatalf("no certificate: %d %v", st, out)
	}
}

// TestPrivateKeyJWT: a signed client assertion authenticates once; a
// replay, a wrong audience or a foreign key does not.
func TestPrivateKeyJWT(t *testing.T) {
	h := newHarness(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256"}}})
	h.client(store.OAuthClient{ID: "batch", AuthMethod: "private_key_jwt", JWKS: jwks, GrantTypes: []string{"client_credentials"}})
	assertion := func(signer any, aud, jti string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: signer, KeyID: "k1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		raw, _ := jwt.Signed(s).Claims(jwt.Claims{Issuer: "batch", Subject: "batch", Audience: jwt.Audience{aud}, ID: jti,
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now)}).Serialize()
		return raw
	}
	form := func(a string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}
	}
	good := assertion(key, h.srv.URL+oauth.PathToken, "jti-1")
	if st, out := h.post(nil, oauth.PathToken, form(good), "", ""); st != http.StatusOK {
		t.Fatalf("private_key_jwt: %d %v", st, out)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, tt := range map[string]struct{ assertion, want string }{
		"replay":      {good, "replayed"},
		"wrong aud":   {assertion(key, "https://other.example/token", "jti-2"), "audience"},
		"foreign key": {assertion(other, h.srv.URL+oauth.PathToken, "jti-3"), "signature"},
		"not a JWT":   {"not.a.jwt", "invalid_client"},
	} {
		st, out := h.post(nil, oauth.PathToken, form(tt.assertion), "", "")
		if st != http.StatusUnauthorized || !strings.Contains(out["error"].(string)+" "+out["error_description"].(string), tt.want) {
			t.Errorf("%s: %d %v", name, st, out)
		}
	}
}

// TestTokenExchangeConfusedDeputy: orders may exchange a user's token
// addressed to it for one addressed to payments, carrying act; it may not
// exchange a token addressed to someone else, nor ask for a service it is
// not registered for.
func TestTokenExchangeConfusedDeputy(t *testing.T) {
	h := newHarness(t)
	gwSecret := h.client(store.OAuthClient{ID: "gateway", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code"}, Scopes: []string{"orders:read", "payments:read"}, Audience: []string{"spiffe://example.org/orders"}})
	h.client(store.OAuthClient{ID: "orders", AuthMethod: "tls_client_auth", SPIFFEID: "spiffe://example.org/orders",
		GrantTypes: []string{oauth.GrantTokenExchange}, Audience: []string{"spiffe://example.org/payments"}})
	h.client(store.OAuthClient{ID: "reports", AuthMethod: "tls_client_auth", SPIFFEID: "spiffe://example.org/reports",
		GrantTypes: []string{oauth.GrantTokenExchange}, Audience: []string{"spiffe://example.org/payments"}})
	h.user("alice", "alice-password")
	q := codeQuery("gateway", fixedCh)
	q.Set("scope", "openid orders:read payments:read")
	code := codeFrom(t, h.login(h.browser(), authURL(h, q), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}}, "gateway", gwSecret)
	alice := tok["access_token"].(string)

	exchange := func(svc, subject, audience, scope string) (int, map[string]any) {
		f := url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {subject},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {audience}, "client_id": {svc}}
		if scope != "" {
			f.Set("scope", scope)
		}
		return h.post(h.mtlsClient(h.ca.svid(t, "spiffe://example.org/"+svc)), oauth.PathToken, f, "", "")
	}
	st, out := exchange("orders", alice, "spiffe://example.org/payments", "payments:read")
	if st != http.StatusOK || out["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		t.Fatalf("exchange: %d %v", st, out)
	}
	c, err := h.p.VerifyAccessToken(out["access_token"].(string), "spiffe://example.org/payments")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Act == nil || c.Act.Subject != "spiffe://example.org/orders" || c.Scope != "payments:read" {
		t.Fatalf("exchanged claims %+v act %+v", c, c.Act)
	}
	orig, _ := h.p.VerifyAccessToken(alice, "")
	if c.SessionID == "" || c.SessionID == orig.SessionID || !c.Expiry.Time().After(time.Now()) || c.Expiry.Time().After(orig.Expiry.Time()) {
		t.Fatal("exchanged token must start a family (sid) of its own and not outlive the original")
	}
	ex := h.audited("oauth.token_exchange")
	if len(ex) != 1 || ex[0].Details["act"] != "spiffe://example.org/orders" || ex[0].Actor.User != "alice" {
		t.Fatalf("exchange audit %+v", ex)
	}
	// reports was never called by alice: her token is not addressed to it.
	if st, out := exchange("reports", alice, "spiffe://example.org/payments", ""); st != http.StatusBadRequest || !strings.Contains(out["error_description"].(string), "addressed to") {
		t.Fatalf("exchange by a service the token is not for: %d %v", st, out)
	}
	// orders asks for a service it may not call.
	if st, out := exchange("orders", alice, "spiffe://example.org/admin", ""); st != http.StatusBadRequest || out["error"] != "invalid_target" {
		t.Fatalf("exchange for a foreign audience: %d %v", st, out)
	}
	// orders asks for more scope than alice gave.
	if st, out := exchange("orders", alice, "spiffe://example.org/payments", "payments:write"); st != http.StatusBadRequest || out["error"] != "invalid_scope" {
		t.Fatalf("scope escalation: %d %v", st, out)
	}
}

// TestSigningKeyRotation: a successor key is published in the JWKS before
// it signs anything, and tokens of the retired key keep verifying.
func TestSigningKeyRotation(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	kidOf := func(tok string) string {
		parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return parsed.Headers[0].KeyID
	}
	issue := func() string {
		_, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
		return out["access_token"].(string)
	}
	first := issue()
	kid1 := kidOf(first)
	if n := len(h.p.JWKS().Keys); n != 1 {
		t.Fatalf("keys at start: %d", n)
	}
	h.clock.Add(oauth.DefaultKeyTTL / 2)
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(h.p.JWKS().Keys); n != 2 {
		t.Fatalf("keys after half life: %d (want the successor published)", n)
	}
	if kidOf(issue()) != kid1 {
		t.Fatal("the successor signed before the switch")
	}
	h.clock.Add(oauth.DefaultKeyTTL / 6)
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok := issue()
	if kidOf(tok) == kid1 {
		t.Fatal("still signing with the old key after two thirds of its life")
	}
	if n := len(h.p.JWKS().Keys); n != 2 {
		t.Fatalf("keys after the switch: %d (want the retired key still published)", n)
	}
	if _, err := h.p.VerifyAccessToken(tok, ""); err != nil {
		t.Fatal(err)
	}
}

// TestRefreshAcrossSVIDRotation: a tls_client_auth client whose SVID
// rotated (same SPIFFE ID, new key) keeps refreshing; each access token is
// bound to the certificate of the call that obtained it.
func TestRefreshAcrossSVIDRotation(t *testing.T) {
	h := newHarness(t)
	h.client(store.OAuthClient{ID: "web", AuthMethod: "tls_client_auth", SPIFFEID: "spiffe://example.org/web", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}})
	h.user("alice", "alice-password")
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	old, rotated := h.ca.svid(t, "spiffe://example.org/web"), h.ca.svid(t, "spiffe://example.org/web")
	st, tok := h.post(h.mtlsClient(old), oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {redirect}, "client_id": {"web"}, "code_verifier": {fixedVerifier}}, "", "")
	if st != http.StatusOK {
		t.Fatalf("code exchange: %d %v", st, tok)
	}
	st, out := h.post(h.mtlsClient(rotated), oauth.PathToken, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {tok["refresh_token"].(string)}, "client_id": {"web"}}, "", "")
	if st != http.StatusOK {
		t.Fatalf("refresh after rotation: %d %v", st, out)
	}
	c, err := h.p.VerifyAccessToken(out["access_token"].(string), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cnf == nil || c.Cnf.X5tS256 != accesstoken.Thumbprint(rotated.Leaf) {
		t.Fatal("refreshed access token not bound to the certificate that refreshed it")
	}
	// Another service's SVID cannot refresh web's tokens.
	st, out = h.post(h.mtlsClient(h.ca.svid(t, "spiffe://example.org/reports")), oauth.PathToken, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {out["refresh_token"].(string)}, "client_id": {"web"}}, "", "")
	if st != http.StatusUnauthorized {
		t.Fatalf("refresh with a foreign SVID: %d %v", st, out)
	}
}

// A quarantined workload gets no token: its SVID still authenticates at
// the TLS layer, but the client it is is refused every grant (red team,
// stop 31: only the key store checked quarantines among server routes).
// Lifting the quarantine gives it tokens again.
func TestQuarantinedClientGetsNoToken(t *testing.T) {
	var quarantined atomic.Bool
	h := newHarness(t, func(c *oauth.Config) {
		c.Quarantined = func(id string) bool { return quarantined.Load() && id == "spiffe://example.org/orders" }
	})
	h.client(store.OAuthClient{ID: "orders", AuthMethod: "tls_client_auth", SPIFFEID: "spiffe://example.org/orders",
		GrantTypes: []string{"client_credentials"}, Audience: []string{"spiffe://example.org/payments"}})
	cert := h.ca.svid(t, "spiffe://example.org/orders")
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"orders"}}
	if st, out := h.post(h.mtlsClient(cert), oauth.PathToken, form, "", ""); st != http.StatusOK {
		t.Fatalf("before the quarantine: %d %v", st, out)
	}
	quarantined.Store(true)
	st, out := h.post(h.mtlsClient(cert), oauth.PathToken, form, "", "")
	if st != http.StatusUnauthorized || out["error"] != "invalid_client" || !strings.Contains(fmt.Sprint(out["error_description"]), "quarantined") {
		t.Fatalf("quarantined: %d %v", st, out)
	}
	quarantined.Store(false)
	if st, out := h.post(h.mtlsClient(cert), oauth.PathToken, form, "", ""); st != http.StatusOK {
		t.Fatalf("after the lift: %d %v", st, out)
	}
}
