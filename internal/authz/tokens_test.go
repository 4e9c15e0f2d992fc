package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/dpop"
)

func selfSigned(t *testing.T) *x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestTokensBoundAndRevoked: a certificate-bound token is refused over
// another client's connection; a revoked grant family is refused; a
// client's own token exposes no user.
func TestTokensBoundAndRevoked(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	tk := newTokens("spiffe://ex.org/payments")
	if _, err := tk.Verify("x.y.z", nil, ""); err == nil {
		t.Fatal("verified before knowing the issuer")
	}
	if err := tk.Update("https://issuer", jwks, nil); err != nil {
		t.Fatal(err)
	}
	owner, thief := selfSigned(t), selfSigned(t)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("at+jwt"))
	now := time.Now()
	mk := func(sub, client, sid string, cnf *accesstoken.Confirmation) string {
		raw, _ := jwt.Signed(signer).Claims(accesstoken.Claims{Issuer: "https://issuer", Subject: sub, Audience: jwt.Audience{"spiffe://ex.org/payments"},
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: "j-" + sub + sid, ClientID: client, SessionID: sid, Cnf: cnf}).Serialize()
		return raw
	}
	bound := mk("alice", "orders", "s1", &accesstoken.Confirmation{X5tS256: accesstoken.Thumbprint(owner)})
	if _, err := tk.Verify(bound, owner, ""); err != nil {
		t.Fatalf("bound token from its owner: %v", err)
	}
	if _, err := tk.Verify(bound, thief, ""); err == nil || !strings.Contains(err.Error(), "bound to another") {
		t.Fatalf("bound token from a thief: %v", err)
	}
	if err := tk.Update("https://issuer", jwks, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify(bound, owner, ""); err == nil {
		t.Fatal("token of a revoked family verified")
	}
	c, err := tk.Verify(mk("spiffe://ex.org/orders", "orders", "", nil), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := userClaims(c)["sub"]; ok {
		t.Fatal("a client's own token exposed a user")
	}
	// Another issuer's keys are not accepted when the issuer changes.
	if err := tk.Update("https://other", jwks, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify(mk("bob", "orders", "s2", nil), nil, ""); err == nil || !strings.Contains(err.Error(), "iss") {
		t.Fatalf("token of the old issuer after the issuer changed: %v", err)
	}
}

// TestTokensDPoP: a DPoP-bound token works only with the DPoP scheme and a
// fresh proof by its key for this request; an unbound token cannot be
// dressed up as DPoP.
func TestTokensDPoP(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	tk := newTokens("spiffe://ex.org/payments")
	if err := tk.Update("https://issuer", jwks, nil); err != nil {
		t.Fatal(err)
	}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("at+jwt"))
	now := time.Now()
	mk := func(id string, cnf *accesstoken.Confirmation) string {
		raw, _ := jwt.Signed(signer).Claims(accesstoken.Claims{Issuer: "https://issuer", Subject: "alice", Audience: jwt.Audience{"spiffe://ex.org/payments"},
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: id, ClientID: "spa", Cnf: cnf}).Serialize()
		return raw
	}
	holder, thief := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	jkt, _ := dpop.Thumbprint(holder.Public())
	bound := mk("j1", &accesstoken.Confirmation{JKT: jkt})
	plain := mk("j2", nil)
	const target = "https://payments.example/payments/7"
	req := func(scheme, tok string, proofs ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.TLS = &tls.ConnectionState{}
		r.Header.Set("Authorization", scheme+" "+tok)
		for _, p := range proofs {
			r.Header.Add("DPoP", p)
		}
		return r
	}
	proof := func(k *ecdsa.PrivateKey, method, u, tok string) string {
		p, err := dpop.NewProof(k, jose.ES256, method, u, tok, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := proof(holder, "GET", target, bound)
	if c, scheme, err := tk.FromRequest(req("DPoP", bound, good), nil); err != nil || scheme != "DPoP" || c.Subject != "alice" {
		t.Fatalf("bound token with its proof: %v", err)
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"replayed proof", req("DPoP", bound, good), "already used"},
		{"as a bearer token", req("Bearer", bound), "bound to a DPoP key"},
		{"thief's proof", req("DPoP", bound, proof(thief, "GET", target, bound)), "another key"},
		{"proof for another path", req("DPoP", bound, proof(holder, "GET", "https://payments.example/payments/8", bound)), "htu"},
		{"proof for another token", req("DPoP", bound, proof(holder, "GET", target, plain)), "ath"},
		{"two proofs", req("DPoP", bound, proof(holder, "GET", target, bound), proof(holder, "GET", target, bound)), "exactly one"},
		{"unbound token as DPoP", req("DPoP", plain, proof(holder, "GET", target, plain)), "not bound to a DPoP key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := tk.FromRequest(tc.r, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if c, scheme, err := tk.FromRequest(req("Bearer", plain), nil); err != nil || scheme != "Bearer" || c == nil {
		t.Fatalf("plain bearer token: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// replayLen is how many DPoP proofs tk remembers.
func replayLen(tk *Tokens) int { return tk.proofs.Replay.(*dpop.MemoryReplay).Len() }

// TestDPoPReplayCacheOnlyForBoundTokens: proofs that come with no valid
// token bound to their key are refused without being remembered, so no
// one can fill the replay cache (and have every proof refused) without
// holding valid tokens for this service; and one key holds at most its
// quota, so even a token holder only crowds out itself.
func TestDPoPReplayCacheOnlyForBoundTokens(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	tk := newTokens("spiffe://ex.org/payments")
	if err := tk.Update("https://issuer", jwks, nil); err != nil {
		t.Fatal(err)
	}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("at+jwt"))
	now := time.Now()
	mk := func(id, aud string, cnf *accesstoken.Confirmation) string {
		raw, _ := jwt.Signed(signer).Claims(accesstoken.Claims{Issuer: "https://issuer", Subject: "alice", Audience: jwt.Audience{aud},
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: id, ClientID: "spa", Cnf: cnf}).Serialize()
		return raw
	}
	const target = "https://payments.example/payments/7"
	call := func(k *ecdsa.PrivateKey, tok string) error {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.TLS = &tls.ConnectionState{}
		r.Header.Set("Authorization", "DPoP "+tok)
		p, err := dpop.NewProof(k, jose.ES256, http.MethodGet, target, tok, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("DPoP", p)
		_, _, err = tk.FromRequest(r, nil)
		return err
	}
	victim := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	victimJKT, _ := dpop.Thumbprint(victim.Public())
	stolen := mk("victim", "spiffe://ex.org/payments", &accesstoken.Confirmation{JKT: victimJKT})
	for i := 0; i < 200; i++ {
		k := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		jkt, _ := dpop.Thumbprint(k.Public())
		var tok string
		switch i % 4 {
		case 0:
			tok = "not-a-token"
		case 1:
			tok = mk("other", "spiffe://ex.org/orders", &accesstoken.Confirmation{JKT: jkt}) // another service's
		case 2:
			tok = mk("plain", "spiffe://ex.org/payments", nil) // not DPoP-bound
		case 3:
			tok = stolen // bound to another key
		}
		if err := call(k, tok); err == nil {
			t.Fatalf("request %d accepted", i)
		}
	}
	if n := replayLen(tk); n != 0 {
		t.Fatalf("the replay cache holds %d proofs from requests that were all refused", n)
	}

	// A holder of a bound token is bounded by its key's quota.
	tk.proofs.Replay = must(dpop.NewMemoryReplay(3, 100, time.Now))
	holder := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	hjkt, _ := dpop.Thumbprint(holder.Public())
	mine := mk("mine", "spiffe://ex.org/payments", &accesstoken.Confirmation{JKT: hjkt})
	for i := 0; i < 3; i++ {
		if err := call(holder, mine); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := call(holder, mine); err == nil || !strings.Contains(err.Error(), "too many recent proofs") {
		t.Fatalf("a key beyond its quota: %v", err)
	}
	if err := call(victim, stolen); err != nil {
		t.Fatalf("another key's holder while the first is at its quota: %v", err)
	}
}
