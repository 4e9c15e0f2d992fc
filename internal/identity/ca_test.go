package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store/storetest"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// clock is a settable clock for driving rotation without sleeping.
type fixture struct {
	st    store.Store
	w     *keywrap.Wrapper
	clk   *fakeclock.Clock
	start time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	st := storetest.SQLite(t, dir)
	w, err := keywrap.LoadOrCreateFile(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	// Start at the real time: go-spiffe's JWT validation reads the wall clock.
	start := time.Now().Truncate(time.Second)
	return &fixture{st: st, w: w, clk: fakeclock.New(start), start: start}
}

func (f *fixture) ca(t *testing.T, mod func(*Config)) *CA {
	t.Helper()
	cfg := Config{TrustDomain: td, Store: f.st, Wrapper: f.w, Now: f.clk.Now,
		RootTTL: 300 * time.Hour, IntermediateTTL: 24 * time.Hour, JWTKeyTTL: 48 * time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	ca, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustSign(t *testing.T, ca *CA, id spiffeid.ID, ttl time.Duration) []*x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := ca.SignX509SVID(id, k.Public(), ttl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func verifyAt(chain []*x509.Certificate, roots []*x509.Certificate, at time.Time) error {
	_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(at))
	return err
}

func TestSignX509SVID(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	id := spiffeid.RequireFromString("spiffe://example.org/orders")
	chain := mustSign(t, ca, id, time.Hour)
	if err := verifyAt(chain, ca.X509Bundle(), f.clk.Now()); err != nil {
		t.Fatalf("SVID does not verify against the bundle: %v", err)
	}
	leaf := chain[0]
	if got := leaf.NotAfter.Sub(f.clk.Now()); got != time.Hour {
		t.Fatalf("lifetime %v, want 1h", got)
	}
	if leaf.IsCA || len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("leaf is not a proper SVID: CA=%v URIs=%v", leaf.IsCA, leaf.URIs)
	}
	// TTL is cut to the intermediate's life.
	long := mustSign(t, ca, id, 1000*time.Hour)
	if !long[0].NotAfter.Equal(chain[1].NotAfter) {
		t.Fatalf("long SVID expires %v, after its intermediate %v", long[0].NotAfter, chain[1].NotAfter)
	}
	// A lifetime of zero or less is refused, not turned into a default or
	// a certificate born expired.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := ca.SignX509SVID(id, k.Public(), ttl, nil, nil); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Fatalf("SVID with ttl %v: %v", ttl, err)
		}
		if _, _, err := ca.SignJWTSVID(id, []string{"payments"}, ttl); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Fatalf("JWT-SVID with ttl %v: %v", ttl, err)
		}
	}
	// Foreign trust domain.
	if _, err := ca.SignX509SVID(spiffeid.RequireFromString("spiffe://evil.org/x"), k.Public(), time.Hour, nil, nil); err == nil {
		t.Fatal("signed an SVID for a foreign trust domain")
	}
}

func TestRestartKeepsCA(t *testing.T) {
	f := newFixture(t)
	ca1 := f.ca(t, nil)
	ca2 := f.ca(t, nil)
	if string(EncodePEM(ca1.X509Bundle())) != string(EncodePEM(ca2.X509Bundle())) {
		t.Fatal("a restarted CA has another bundle")
	}
	chain := mustSign(t, ca2, spiffeid.RequireFromString("spiffe://example.org/a"), time.Hour)
	if err := verifyAt(chain, ca1.X509Bundle(), f.clk.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestCAKeysAreWrappedInStore(t *testing.T) {
	f := newFixture(t)
	f.ca(t, nil)
	keys, err := f.st.ListCAKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := x509.ParsePKCS8PrivateKey(k.WrappedKey); err == nil {
			t.Fatalf("key %s is stored in the clear", k.ID)
		}
		if _, err := f.w.Unwrap(k.ID, k.WrappedKey); err != nil {
			t.Fatalf("key %s does not unwrap: %v", k.ID, err)
		}
	}
	other, _ := keywrap.New(make([]byte, 32))
	if _, err := New(context.Background(), Config{TrustDomain: td, Store: f.st, Wrapper: other, Now: f.clk.Now}); err == nil {
		t.Fatal("CA loaded with the wrong key-encryption key")
	}
}

// The intermediate rotates at half life; SVIDs from the old one keep
// verifying, and new ones chain to the same root.
func TestIntermediateRotation(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	id := spiffeid.RequireFromString("spiffe://example.org/a")
	old := mustSign(t, ca, id, time.Hour)
	f.clk.Add(11 * time.Hour)
	if err := ca.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if same := mustSign(t, ca, id, time.Hour); !same[1].Equal(old[1]) {
		t.Fatal("intermediate rotated before half life")
	}
	f.clk.Add(2 * time.Hour)
	if err := ca.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	fresh := mustSign(t, ca, id, time.Hour)
	if fresh[1].Equal(old[1]) {
		t.Fatal("intermediate did not rotate after half life")
	}
	// The old SVID still verifies (at a time it was valid) against today's bundle.
	if err := verifyAt(old, ca.X509Bundle(), old[0].NotAfter.Add(-time.Minute)); err != nil {
		t.Fatalf("an SVID of the old intermediate stopped verifying: %v", err)
	}
	if err := verifyAt(fresh, ca.X509Bundle(), f.clk.Now()); err != nil {
		t.Fatal(err)
	}
}

// Root rotation: prepared (published) at 1/2, active at 2/3, old root kept
// in the bundle until it expires, so SVIDs under either verify throughout.
func TestRootRotationSchedule(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/a")
	if n := len(ca.X509Bundle()); n != 1 {
		t.Fatalf("bundle has %d roots, want 1", n)
	}
	// Walk the clock in steps of 10h (< half the intermediate life) so the
	// intermediate rotates on schedule too, as the server's loop would.
	step := func(to time.Duration) {
		for f.clk.Now().Sub(f.start) < to {
			f.clk.Add(10 * time.Hour)
			if err := ca.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	step(140 * time.Hour)
	oldSVID := mustSign(t, ca, id, time.Hour)
	if n := len(ca.X509Bundle()); n != 1 {
		t.Fatalf("bundle has %d roots before half life", n)
	}
	step(160 * time.Hour)
	bundle := ca.X509Bundle()
	if len(bundle) != 2 {
		t.Fatalf("after half life the bundle has %d roots, want 2 (next root published)", len(bundle))
	}
	if s := mustSign(t, ca, id, time.Hour); !bytes.Equal(s[1].AuthorityKeyId, oldSVID[1].AuthorityKeyId) {
		t.Fatal("the prepared root signs before activation")
	}
	// Relying parties that fetched the bundle now trust both roots.
	step(210 * time.Hour)
	newSVID := mustSign(t, ca, id, time.Hour)
	if bytes.Equal(newSVID[1].AuthorityKeyId, oldSVID[1].AuthorityKeyId) {
		t.Fatal("after two thirds the new root is not signing")
	}
	if err := verifyAt(newSVID, bundle, f.clk.Now()); err != nil {
		t.Fatalf("an SVID under the new root fails against the bundle published before activation: %v", err)
	}
	if len(ca.X509Bundle()) != 2 {
		t.Fatal("the retired root left the bundle before it expired")
	}
	// After the old root expires it leaves the bundle.
	firstRoot := bundle[0]
	step(310 * time.Hour)
	for _, r := range ca.X509Bundle() {
		if r.Equal(firstRoot) {
			t.Fatal("expired root still in the bundle")
		}
	}
}

func TestManualRootRotation(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	ctx := context.Background()
	if err := ca.ActivateRoot(ctx); err == nil {
		t.Fatal("activated a root that was never prepared")
	}
	if err := ca.PrepareRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ca.PrepareRoot(ctx); err == nil {
		t.Fatal("prepared two roots at once")
	}
	before := mustSign(t, ca, spiffeid.RequireFromString("spiffe://example.org/a"), time.Hour)
	if err := ca.ActivateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	after := mustSign(t, ca, spiffeid.RequireFromString("spiffe://example.org/a"), time.Hour)
	if bytes.Equal(before[1].AuthorityKeyId, after[1].AuthorityKeyId) {
		t.Fatal("activation did not switch roots")
	}
	for _, c := range [][]*x509.Certificate{before, after} {
		if err := verifyAt(c, ca.X509Bundle(), f.clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpstreamRoot(t *testing.T) {
	f := newFixture(t)
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, _ := svid.CATemplate(td, "upstream test root", f.clk.Now(), f.clk.Now().Add(10000*time.Hour), -1)
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(der)
	ca := f.ca(t, func(c *Config) { c.Upstream = &Upstream{Roots: []*x509.Certificate{root}, Key: rootKey} })
	chain := mustSign(t, ca, spiffeid.RequireFromString("spiffe://example.org/a"), time.Hour)
	if err := verifyAt(chain, []*x509.Certificate{root}, f.clk.Now()); err != nil {
		t.Fatalf("SVID does not chain to the upstream root: %v", err)
	}
	keys, _ := f.st.ListCAKeys(context.Background())
	for _, k := range keys {
		if k.Kind == store.KindRoot {
			t.Fatal("the upstream root was written to the store")
		}
	}
	// Root kept offline: the intermediate keeps signing after a restart.
	offline := f.ca(t, func(c *Config) { c.Upstream = &Upstream{Roots: []*x509.Certificate{root}} })
	mustSign(t, offline, spiffeid.RequireFromString("spiffe://example.org/a"), time.Hour)
	if err := offline.PrepareRoot(context.Background()); err == nil {
		t.Fatal("prepared a root although the root is upstream")
	}
}

// JWT keys are published before they sign, and stay published after.
func TestJWTKeyRotation(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/a")
	kidOf := func(tok string) string {
		jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return jws.Signatures[0].Header.KeyID
	}
	tok1, _, err := ca.SignJWTSVID(id, []string{"payments"}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	validate := func(tok string) error {
		b, _ := ca.JWTBundle()
		bundle, err := jwtbundle.Parse(td, b)
		if err != nil {
			t.Fatal(err)
		}
		_, err = jwtsvid.ParseAndValidate(tok, bundle, []string{"payments"})
		return err
	}
	if err := validate(tok1); err != nil {
		t.Fatal(err)
	}
	f.clk.Add(25 * time.Hour) // past half life: next key published, not signing
	if err := ca.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := ca.JWTBundle()
	published, _ := jwtbundle.Parse(td, b)
	if n := len(published.JWTAuthorities()); n != 2 {
		t.Fatalf("JWKS has %d keys after half life, want 2", n)
	}
	tok2, _, _ := ca.SignJWTSVID(id, []string{"payments"}, 5*time.Minute)
	if kidOf(tok2) != kidOf(tok1) {
		t.Fatal("the prepared JWT key signs before two thirds")
	}
	f.clk.Add(8 * time.Hour)
	if err := ca.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	tok3, _, _ := ca.SignJWTSVID(id, []string{"payments"}, 5*time.Minute)
	if kidOf(tok3) == kidOf(tok1) {
		t.Fatal("JWT key did not rotate at two thirds")
	}
	if _, ok := published.FindJWTAuthority(kidOf(tok3)); !ok {
		t.Fatal("the new signing key was not in the JWKS published before it signed")
	}
	if _, _, err := ca.SignJWTSVID(id, nil, time.Minute); err == nil {
		t.Fatal("signed a JWT-SVID without audience")
	}
}
