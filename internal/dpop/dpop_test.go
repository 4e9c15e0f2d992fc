package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const tokenURL = "https://rampart.example:8443/token"

func checker() *Checker {
	now := func() time.Time { return t0 }
	r, _ := NewMemoryReplay(100, 1000, now)
	return &Checker{Now: now, Replay: r}
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// forge signs arbitrary header fields and claims, for the attacks.
func forge(t *testing.T, key crypto.Signer, alg jose.SignatureAlgorithm, opts *jose.SignerOptions, cl map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cl)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := obj.CompactSerialize()
	return out
}

func claimsAt(iat time.Time, extra map[string]any) map[string]any {
	m := map[string]any{"jti": "j-" + iat.String(), "htm": "POST", "htu": tokenURL, "iat": iat.Unix()}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	c := checker()
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  jose.SignatureAlgorithm
	}{{"ES256", ecKey(t), jose.ES256}, {"EdDSA", func() crypto.Signer { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }(), jose.EdDSA}} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := NewProof(tc.key, tc.alg, "GET", "https://orders.example/orders/42?x=1", "the-token", "", t0)
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.Check(t.Context(), raw, "GET", "https://ORDERS.example:443/orders/42", "the-token")
			if err != nil {
				t.Fatal(err)
			}
			want, _ := Thumbprint(tc.key.Public())
			if p.JKT != want {
				t.Fatalf("jkt %s, want %s", p.JKT, want)
			}
		})
	}
}

// Every guard, attacked.
func TestAttacks(t *testing.T) {
	key := ecKey(t)
	other := ecKey(t)
	embed := (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt")
	good := func(extra map[string]any) string { return forge(t, key, jose.ES256, embed, claimsAt(t0, extra)) }
	// A proof whose jwk header names another key than the one that signed.
	swapped := func() string {
		a := strings.Split(forge(t, key, jose.ES256, embed, claimsAt(t0, nil)), ".")
		b := strings.Split(forge(t, other, jose.ES256, embed, claimsAt(t0, nil)), ".")
		return b[0] + "." + a[1] + "." + a[2]
	}()
	privJWK := func() string {
		jwk := jose.JSONWebKey{Key: key}
		return forge(t, key, jose.ES256, (&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jwk), claimsAt(t0, nil))
	}()
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"dpop+jwt"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"x","htm":"POST","htu":"`+tokenURL+`","iat":`+itoa(t0.Unix())+`}`)) + "."
	tests := []struct {
		name, proof, method, url, token, want string
	}{
		{"alg none", none, "POST", tokenURL, "", "accepted algorithm"},
		{"typ JWT", forge(t, key, jose.ES256, (&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"), claimsAt(t0, nil)), "POST", tokenURL, "", "typ"},
		{"no jwk header", forge(t, key, jose.ES256, (&jose.SignerOptions{}).WithType("dpop+jwt"), claimsAt(t0, nil)), "POST", tokenURL, "", "jwk"},
		{"private key in jwk", privJWK, "POST", tokenURL, "", "private"},
		{"signed by another key than the jwk", swapped, "POST", tokenURL, "", "does not verify"},
		{"other method", good(nil), "GET", tokenURL, "", "htm"},
		{"other path", good(map[string]any{"htu": "https://rampart.example:8443/authorize"}), "POST", tokenURL, "", "htu"},
		{"other host", good(map[string]any{"htu": "https://evil.example:8443/token"}), "POST", tokenURL, "", "htu"},
		{"other scheme", good(map[string]any{"htu": "http://rampart.example:8443/token"}), "POST", tokenURL, "", "htu"},
		{"relative htu", good(map[string]any{"htu": "/token"}), "POST", tokenURL, "", "htu"},
		{"no iat", good(map[string]any{"iat": nil}), "POST", tokenURL, "", "iat missing"},
		{"iat too old", forge(t, key, jose.ES256, embed, claimsAt(t0.Add(-2*time.Minute), nil)), "POST", tokenURL, "", "outside"},
		{"iat in the future", forge(t, key, jose.ES256, embed, claimsAt(t0.Add(2*time.Minute), nil)), "POST", tokenURL, "", "outside"},
		{"no jti", good(map[string]any{"jti": nil}), "POST", tokenURL, "", "jti"},
		{"ath missing with a token", good(nil), "POST", tokenURL, "tok", "ath"},
		{"ath of another token", good(map[string]any{"ath": "AAAA"}), "POST", tokenURL, "tok", "ath"},
		{"not a JWT", "hello", "POST", tokenURL, "", "not a compact JWS"},
		{"empty", "", "POST", tokenURL, "", "no DPoP header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checker().Check(t.Context(), tt.proof, tt.method, tt.url, tt.token)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an invalid proof naming %q", err, tt.want)
			}
		})
	}
	// A symmetric (HS256) proof is not accepted, whatever key it claims.
	hsSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithType("dpop+jwt"))
	b, _ := json.Marshal(claimsAt(t0, nil))
	obj, _ := hsSigner.Sign(b)
	hsProof, _ := obj.CompactSerialize()
	if _, err := checker().Check(t.Context(), hsProof, "POST", tokenURL, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("HS256 proof: %v", err)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestReplay(t *testing.T) {
	c := checker()
	raw, _ := NewProof(ecKey(t), jose.ES256, "POST", tokenURL, "", "", t0)
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed proof: %v", err)
	}
}

func FuzzCheck(f *testing.F) {
	// A fixed key: fuzz workers rerun this setup and must get the same one.
	k := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	good, _ := NewProof(k, jose.EdDSA, "POST", tokenURL, "", "", t0)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	want, _ := Thumbprint(k.Public())
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := checker().Check(t.Context(), raw, "POST", tokenURL, "")
		// The fuzzer cannot sign: whatever it gets accepted can only be a
		// re-encoding of the seed, proven by the seed's key.
		if err == nil && p.JKT != want {
			t.Fatalf("accepted %q proven by another key %s", raw, p.JKT)
		}
	})
}

// RFC 9864's "Ed25519" algorithm name (what openid-client sends for
// Ed25519 keys) is accepted, and its signature really checked.
func TestEd25519AlgorithmName(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: pub})
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"Ed25519","typ":"dpop+jwt","jwk":` + string(jwk) + `}`))
	body, _ := json.Marshal(claimsAt(t0, nil))
	pl := base64.RawURLEncoding.EncodeToString(body)
	sig := ed25519.Sign(key, []byte(hdr+"."+pl))
	raw := hdr + "." + pl + "." + base64.RawURLEncoding.EncodeToString(sig)
	p, err := checker().Check(t.Context(), raw, "POST", tokenURL, "")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := Thumbprint(pub); p.JKT != want {
		t.Fatalf("jkt %s, want %s", p.JKT, want)
	}
	sig[10] ^= 1
	bad := hdr + "." + pl + "." + base64.RawURLEncoding.EncodeToString(sig)
	if _, err := checker().Check(t.Context(), bad, "POST", tokenURL, ""); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("edited Ed25519 signature: %v", err)
	}
	// An Ed25519 alg with an EC key is refused.
	ec := ecKey(t)
	ejwk, _ := json.Marshal(jose.JSONWebKey{Key: ec.Public()})
	ehdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"Ed25519","typ":"dpop+jwt","jwk":` + string(ejwk) + `}`))
	if _, err := checker().Check(t.Context(), ehdr+"."+pl+"."+base64.RawURLEncoding.EncodeToString(sig), "POST", tokenURL, ""); err == nil {
		t.Fatal("alg Ed25519 with an EC key accepted")
	}
}

// TestNonce: with a nonce checker, a proof without a nonce or with a
// refused one fails with ErrUseNonce (and ErrInvalid); with an accepted
// one it passes.
func TestNonce(t *testing.T) {
	c := checker()
	c.Nonce = func(n string) bool { return n == "current" }
	key := ecKey(t)
	for _, tc := range []struct{ nonce, want string }{{"", "no nonce"}, {"stale", "stale"}} {
		raw, _ := NewProof(key, jose.ES256, "POST", tokenURL, "", tc.nonce, t0)
		_, err := c.Check(t.Context(), raw, "POST", tokenURL, "")
		if !errors.Is(err, ErrUseNonce) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("nonce %q: %v", tc.nonce, err)
		}
	}
	raw, _ := NewProof(key, jose.ES256, "POST", tokenURL, "", "current", t0)
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err != nil {
		t.Fatal(err)
	}
}

// TestReplayQuotaPerKey: one key filling its quota is refused, and only
// it: another key's proofs still pass. Expired proofs stop counting.
func TestReplayQuotaPerKey(t *testing.T) {
	now := t0
	r, err := NewMemoryReplay(3, 10, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	c := &Checker{Now: func() time.Time { return now }, Replay: r}
	greedy, other := ecKey(t), ecKey(t)
	for i := 0; i < 3; i++ {
		raw, _ := NewProof(greedy, jose.ES256, "POST", tokenURL, "", "", now)
		if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
	}
	raw, _ := NewProof(greedy, jose.ES256, "POST", tokenURL, "", "", now)
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); !errors.Is(err, ErrQuota) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("fourth proof by one key: %v", err)
	}
	raw, _ = NewProof(other, jose.ES256, "POST", tokenURL, "", "", now)
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err != nil {
		t.Fatalf("another key's proof while the first is at its quota: %v", err)
	}
	now = now.Add(DefaultWindow + 2*time.Second)
	raw, _ = NewProof(greedy, jose.ES256, "POST", tokenURL, "", "", now)
	if _, err := c.Check(t.Context(), raw, "POST", tokenURL, ""); err != nil {
		t.Fatalf("after its proofs expired: %v", err)
	}
	if r.Len() > 2 {
		t.Fatalf("cache holds %d proofs, want the expired ones gone", r.Len())
	}
}

// TestMemoryReplayBounded: many keys cannot grow the cache past Max; it
// then refuses new proofs rather than forget live ones (a replay window).
func TestMemoryReplayBounded(t *testing.T) {
	r, _ := NewMemoryReplay(2, 100, func() time.Time { return t0 })
	refused := 0
	for i := 0; i < 300; i++ {
		if err := r.Use(t.Context(), fmt.Sprintf("key-%d", i), "j", t0.Add(time.Minute)); errors.Is(err, ErrQuota) {
			refused++
		}
	}
	if r.Len() != 100 || refused != 200 {
		t.Fatalf("cache holds %d, refused %d; want 100 and 200", r.Len(), refused)
	}
	if err := r.Use(t.Context(), "key-1", "j", t0.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("a remembered proof: %v", err)
	}
	if _, err := NewMemoryReplay(0, 10, time.Now); err == nil {
		t.Fatal("a quota of 0 accepted")
	}
}

// TestNonceChallenge: clients recognise the server's use_dpop_nonce
// answers, at a token endpoint and at a resource.
func TestNonceChallenge(t *testing.T) {
	mk := func(status int, hdr map[string]string) *http.Response {
		r := &http.Response{StatusCode: status, Header: http.Header{}}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		return r
	}
	if n, ok := IsNonceChallenge(mk(400, map[string]string{"DPoP-Nonce": "n1"}), []byte(`{"error":"use_dpop_nonce"}`)); !ok || n != "n1" {
		t.Fatal("token endpoint challenge not recognised")
	}
	if n, ok := IsNonceChallenge(mk(401, map[string]string{"DPoP-Nonce": "n2", "WWW-Authenticate": `DPoP error="use_dpop_nonce"`}), nil); !ok || n != "n2" {
		t.Fatal("resource challenge not recognised")
	}
	if _, ok := IsNonceChallenge(mk(400, map[string]string{"DPoP-Nonce": "n1"}), []byte(`{"error":"invalid_grant"}`)); ok {
		t.Fatal("another error taken for a nonce challenge")
	}
	if _, ok := IsNonceChallenge(mk(200, map[string]string{"DPoP-Nonce": "n1"}), nil); ok {
		t.Fatal("a success taken for a nonce challenge")
	}
}
