package accesstoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

type keys struct {
	kid string
	pub any
}

func (k keys) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	if kid != k.kid {
		return nil, "", false
	}
	return k.pub, jose.ES256, true
}
func (k keys) Algorithms() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{jose.ES256} }

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func sign(t testing.TB, key *ecdsa.PrivateKey, typ string, c Claims) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k"}}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func valid() Claims {
	return Claims{Issuer: "https://rampart.example", Subject: "alice", Audience: jwt.Audience{"spiffe://ex.org/orders"},
		Expiry: jwt.NewNumericDate(t0.Add(10 * time.Minute)), NotBefore: jwt.NewNumericDate(t0), IssuedAt: jwt.NewNumericDate(t0),
		ID: "jti-1", ClientID: "gw", SessionID: "sid-1"}
}

// TestVerifyClaims is the table of claim checks.
func TestVerifyClaims(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := keys{kid: "k", pub: key.Public()}
	opts := Options{Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders", Now: t0.Add(time.Minute), Leeway: DefaultLeeway,
		Revoked: func(id string) bool { return id == "revoked-jti" || id == "revoked-sid" }}
	for _, tt := range []struct {
		name string
		mod  func(*Claims)
		typ  string
		now  time.Time
		opts func(*Options)
		want error
		msg  string
	}{
		{name: "valid"},
		{name: "wrong issuer", mod: func(c *Claims) { c.Issuer = "https://evil.example" }, want: ErrClaims, msg: "iss"},
		{name: "wrong audience", mod: func(c *Claims) { c.Audience = jwt.Audience{"spiffe://ex.org/payments"} }, want: ErrClaims, msg: "aud"},
		{name: "expired", now: t0.Add(11 * time.Minute), want: ErrClaims, msg: "expired"},
		{name: "inside leeway", now: t0.Add(10*time.Minute + 10*time.Second)},
		// The issuer itself allows no skew: a token past exp is expired.
		{name: "no leeway at the issuer", now: t0.Add(10 * time.Minute), opts: func(o *Options) { o.Leeway = 0 }, want: ErrClaims, msg: "expired"},
		{name: "no leeway at the issuer, nbf", now: t0.Add(-time.Second), opts: func(o *Options) { o.Leeway = 0 }, want: ErrClaims, msg: "not valid before"},
		{name: "negative leeway", opts: func(o *Options) { o.Leeway = -time.Second }, want: ErrClaims, msg: "leeway -1s"},
		// Revocations are kept until exp + MaxLeeway: more skew would take
		// a revoked token once its revocation is gone.
		{name: "leeway beyond what revocations outlive", opts: func(o *Options) { o.Leeway = MaxLeeway + time.Second }, want: ErrClaims, msg: "MaxLeeway"},
		{name: "not yet valid", now: t0.Add(-time.Minute), want: ErrClaims, msg: "not valid before"},
		{name: "no exp", mod: func(c *Claims) { c.Expiry = nil }, want: ErrClaims, msg: "exp missing"},
		{name: "no jti", mod: func(c *Claims) { c.ID = "" }, want: ErrClaims, msg: "jti"},
		{name: "revoked jti", mod: func(c *Claims) { c.ID = "revoked-jti" }, want: ErrRevoked},
		{name: "revoked family", mod: func(c *Claims) { c.SessionID = "revoked-sid" }, want: ErrRevoked},
		{name: "ID token typ", typ: "JWT", want: ErrMalformed, msg: "typ"},
		{name: "media type typ", typ: "application/at+jwt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			if tt.mod != nil {
				tt.mod(&c)
			}
			typ := tt.typ
			if typ == "" {
				typ = Type
			}
			o := opts
			if !tt.now.IsZero() {
				o.Now = tt.now
			}
			if tt.opts != nil {
				tt.opts(&o)
			}
			got, err := Verify(sign(t, key, typ, c), ks, o)
			if tt.want == nil {
				if err != nil || got.Subject != "alice" {
					t.Fatalf("Verify = %v, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

// FuzzVerify: arbitrary input never panics and never verifies without the
// key's signature.
func FuzzVerify(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := keys{kid: "k", pub: key.Public()}
	good := sign(f, key, Type, valid())
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add(good[:len(good)-3])
	f.Add(strings.Replace(good, ".", "..", 1))
	opts := Options{Issuer: "https://rampart.example", Now: t0.Add(time.Minute)}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := Verify(raw, ks, opts)
		// Only a signature by the key verifies, and the key signed exactly
		// one set of claims: whatever verifies must carry those.
		if err == nil && (c.ID != "jti-1" || c.Subject != "alice" || c.ClientID != "gw" || c.SessionID != "sid-1") {
			t.Fatalf("input with other claims verified: %q -> %+v", raw, c)
		}
	})
}

// TestVerifierCache: a cached token is still refused once expired or
// revoked, and an altered token never hits the cache.
func TestVerifierCache(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := t0.Add(time.Minute)
	revoked := map[string]bool{}
	v := &Verifier{Keys: keys{kid: "k", pub: key.Public()}, Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders",
		Now: func() time.Time { return now }, Revoked: func(id string) bool { return revoked[id] }, CacheSize: 2}
	raw := sign(t, key, Type, valid())
	for i := 0; i < 2; i++ {
		if _, err := v.Verify(raw); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	// Change one signature character well inside the base64 (the last
	// ones carry padding bits that a decoder may ignore).
	i := len(raw) - 10
	c := byte('A')
	if raw[i] == c {
		c = 'B'
	}
	if _, err := v.Verify(raw[:i] + string(c) + raw[i+1:]); err == nil {
		t.Fatal("altered token verified")
	}
	revoked["sid-1"] = true
	if _, err := v.Verify(raw); !errors.Is(err, ErrRevoked) {
		t.Fatalf("cached token after revocation: %v", err)
	}
	revoked["sid-1"] = false
	now = t0.Add(time.Hour)
	if _, err := v.Verify(raw); !errors.Is(err, ErrClaims) {
		t.Fatalf("cached token after expiry: %v", err)
	}
	// The cache stays bounded.
	now = t0.Add(time.Minute)
	for i := 0; i < 5; i++ {
		c := valid()
		c.ID = "jti-" + string(rune('a'+i))
		if _, err := v.Verify(sign(t, key, Type, c)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cache); n > 2 {
		t.Fatalf("cache holds %d tokens, bound is 2", n)
	}
}

// BenchmarkVerifyCold: a token never seen before, keys known (the JWKS
// cached): the ES256 signature dominates.
func BenchmarkVerifyCold(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := keys{kid: "k", pub: key.Public()}
	raw := sign(b, key, Type, valid())
	o := Options{Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders", Now: t0.Add(time.Minute)}
	loopP99(b, func() error { _, err := Verify(raw, ks, o); return err })
}

// loopP99 runs f b.N times and reports the 99th percentile latency as
// p99-ns next to the mean (the target is a p99).
func loopP99(b *testing.B, f func() error) {
	var lat []time.Duration
	for b.Loop() {
		t := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkVerifyCached: the same token again through a Verifier.
func BenchmarkVerifyCached(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw := sign(b, key, Type, valid())
	v := &Verifier{Keys: keys{kid: "k", pub: key.Public()}, Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders",
		Now: func() time.Time { return t0.Add(time.Minute) }, Revoked: func(string) bool { return false }}
	loopP99(b, func() error { _, err := v.Verify(raw); return err })
}

type edKeys struct{ pub ed25519.PublicKey }

func (k edKeys) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	return k.pub, jose.EdDSA, kid == "k"
}
func (edKeys) Algorithms() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{jose.EdDSA} }

// BenchmarkVerifyColdEdDSA: as BenchmarkVerifyCold with an Ed25519 key
// (rampart server --oauth-alg EdDSA).
func BenchmarkVerifyColdEdDSA(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "k"}}, (&jose.SignerOptions{}).WithType(Type))
	raw, _ := jwt.Signed(s).Claims(valid()).Serialize()
	o := Options{Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders", Now: t0.Add(time.Minute)}
	loopP99(b, func() error { _, err := Verify(raw, edKeys{pub}, o); return err })
}

// rotatingKeys is a key set whose key can be withdrawn.
type rotatingKeys struct{ ks map[string]any }

func (k *rotatingKeys) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	p, ok := k.ks[kid]
	return p, jose.ES256, ok
}
func (k *rotatingKeys) Algorithms() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.ES256}
}

// A token verified (and cached) before its key was withdrawn, as a
// burn-down withdraws a compromised signing key, is refused from then on:
// the cache must not outlive the key.
func TestVerifierCacheDiesWithItsKey(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := &rotatingKeys{ks: map[string]any{"k": key.Public()}}
	v := &Verifier{Keys: ks, Issuer: "https://rampart.example", Audience: "spiffe://ex.org/orders",
		Now: func() time.Time { return t0.Add(time.Minute) }}
	raw := sign(t, key, Type, valid())
	if _, err := v.Verify(raw); err != nil {
		t.Fatal(err)
	}
	if len(v.cache) != 1 {
		t.Fatal("the token was not cached; the test would prove nothing")
	}
	delete(ks.ks, "k")
	if _, err := v.Verify(raw); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), `unknown key ID "k"`) {
		t.Fatalf("cached token after its key was withdrawn: %v", err)
	}
	if len(v.cache) != 0 {
		t.Fatal("the refused token stays cached")
	}
}
