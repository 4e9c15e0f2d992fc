package oidcdiscovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestParseIssuer(t *testing.T) {
	tests := []struct {
		issuer, err string
	}{
		{"https://rampart.example.org/spiffe", ""},
		{"https://rampart.example.org:8443/td/example.org", ""},
		{"http://rampart.example.org/spiffe", "scheme must be https"},
		{"https://rampart.example.org", "needs a path"},
		{"https://rampart.example.org/", "needs a path"},
		{"https://rampart.example.org/spiffe/", "no trailing slash"},
		{"https://rampart.example.org/spiffe?x=1", "no query or fragment"},
		{"https://rampart.example.org/spiffe#f", "no query or fragment"},
		{"https:///spiffe", "needs a host"},
		{"https://user@rampart.example.org/spiffe", "no user information"},
		{"https://rampart.example.org/v1/jwt", "is the API's own"},
		{"https://rampart.example.org/oauth2", "is the API's own"},
		{"https://rampart.example.org/.well-known", "is the API's own"},
		{"https://rampart.example.org/a%20b", "only unreserved characters"},
		{"https://rampart.example.org/{id}", "only unreserved characters"},
	}
	for _, tt := range tests {
		_, err := ParseIssuer(tt.issuer)
		if tt.err == "" && err != nil {
			t.Errorf("%s: %v", tt.issuer, err)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: got %v, want an error containing %q", tt.issuer, err, tt.err)
		}
	}
}

// bundle is a SPIFFE JWT bundle (use "jwt-svid") with one fresh key.
func bundle(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Use: "jwt-svid", Algorithm: "ES256"}}})
	return key, b
}

func sign(t *testing.T, key *ecdsa.PrivateKey, kid string, c jwt.Claims) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// go-oidc finds the document and the keys under the issuer's path and
// verifies a token signed with a published key; refuses one of another
// issuer, of another key, or expired.
func TestGoOIDCVerifiesThroughDiscovery(t *testing.T) {
	key, b := bundle(t)
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	p, err := New(srv.URL+"/spiffe", func() ([]byte, error) { return b, nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Routes() {
		mux.HandleFunc(r.Pattern, r.Handler)
	}
	ctx := oidc.ClientContext(context.Background(), srv.Client())
	provider, err := oidc.NewProvider(ctx, p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	v := provider.Verifier(&oidc.Config{ClientID: "vault", SupportedSigningAlgs: []string{oidc.ES256}})
	now := time.Now()
	good := jwt.Claims{Issuer: p.Issuer(), Subject: "spiffe://example.org/orders", Audience: jwt.Audience{"vault"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}
	if tok, err := v.Verify(ctx, sign(t, key, "k1", good)); err != nil || tok.Subject != good.Subject {
		t.Fatalf("verify: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrongIss := good
	wrongIss.Issuer = srv.URL
	expired := good
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Minute))
	for name, tok := range map[string]string{
		"another issuer":      sign(t, key, "k1", wrongIss),
		"an unpublished key":  sign(t, other, "k1", good),
		"an unknown kid":      sign(t, other, "k2", good),
		"an expired JWT-SVID": sign(t, key, "k1", expired),
	} {
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Errorf("%s verified", name)
		}
	}
}

func TestRelabel(t *testing.T) {
	_, b := bundle(t)
	out, err := Relabel(b)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(out, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Use != "sig" || set.Keys[0].KeyID != "k1" || !set.Keys[0].IsPublic() {
		t.Fatalf("relabelled set %s (%v)", out, err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaked, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv, KeyID: "k1", Algorithm: "ES256"}}})
	if _, err := Relabel(leaked); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("a private key would be published: %v", err)
	}
	noKid, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv.Public(), Algorithm: "ES256"}}})
	if _, err := Relabel(noKid); err == nil {
		t.Fatal("a key without kid was published")
	}
}
