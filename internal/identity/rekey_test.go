package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

func bundleIDs(ca *CA) []string {
	var out []string
	for _, c := range ca.X509Bundle() {
		out = append(out, keyID(c))
	}
	return out
}

// The burn-down sequence: the new root is published before it signs, old
// SVIDs keep verifying during the overlap, and once the old root is
// dropped what it signed is refused, by the bundle and by the control
// plane's verifier (cached chain or not), long before it would expire.
func TestRekeyOverlapThenDrop(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ca := f.ca(t, nil)
	v := &Verifier{CA: ca, Now: f.clk.Now}
	id := spiffeid.RequireFromString("spiffe://example.org/orders")
	oldChain := mustSign(t, ca, id, time.Hour)
	oldRoot := ca.ActiveRootID()
	if _, err := v.Verify(rawChain(oldChain)); err != nil { // cached from here on
		t.Fatal(err)
	}
	// A root prepared by the schedule before the compromise is not trusted.
	if err := ca.PrepareRoot(ctx); err != nil {
		t.Fatal(err)
	}
	_, stale := ca.rootsByState()

	newRoot, err := ca.RekeyPrepareRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ids := bundleIDs(ca); !slices.Contains(ids, newRoot) || !slices.Contains(ids, oldRoot) || slices.Contains(ids, stale.id) {
		t.Fatalf("bundle after prepare: %v; want old %s and new %s, not the stale prepared %s", ids, oldRoot, newRoot, stale.id)
	}
	if IssuedUnder(mustSign(t, ca, id, time.Hour), newRoot) {
		t.Fatal("the new root signs before it is activated")
	}
	res, err := ca.RekeyActivate(ctx, newRoot)
	if err != nil {
		t.Fatal(err)
	}
	if res.NewRoot != newRoot || !slices.Contains(res.RetiredRoots, oldRoot) || res.NewIntermediate == res.OldIntermediate || res.NewJWTKey == "" || slices.Contains(res.OldJWTKeys, res.NewJWTKey) {
		t.Fatalf("activate: %+v", res)
	}
	newChain := mustSign(t, ca, id, time.Hour)
	if !IssuedUnder(newChain, newRoot) || IssuedUnder(oldChain, newRoot) || ca.ActiveRootID() != newRoot {
		t.Fatal("SVIDs after activation must descend from the new root, and only those")
	}
	// Overlap: both verify against the bundle.
	for name, c := range map[string][]*x509.Certificate{"old": oldChain, "new": newChain} {
		if err := verifyAt(c, ca.X509Bundle(), f.clk.Now()); err != nil {
			t.Fatalf("%s SVID during the overlap: %v", name, err)
		}
	}
	// Resuming an activation is harmless: same root, intermediate kept.
	again, err := ca.RekeyActivate(ctx, newRoot)
	if err != nil || again.NewIntermediate != res.NewIntermediate {
		t.Fatalf("repeated activation: %+v %v", again, err)
	}
	// The signing keys cannot be dropped.
	for _, k := range []string{newRoot, res.NewIntermediate, again.NewJWTKey} {
		if _, err := ca.DropKeys(ctx, []string{k}); err == nil {
			t.Fatalf("dropped %s, which signs now", k)
		}
	}
	dropped, err := ca.DropKeys(ctx, append(append(res.RetiredRoots, res.OldJWTKeys...), res.OldIntermediate))
	if err != nil || !slices.Contains(dropped, oldRoot) {
		t.Fatalf("drop: %v %v", dropped, err)
	}
	v.Reset() // the server resets on every bundle change
	if ids := bundleIDs(ca); !slices.Equal(ids, []string{newRoot}) {
		t.Fatalf("bundle after drop: %v, want only %s", ids, newRoot)
	}
	if err := verifyAt(oldChain, ca.X509Bundle(), f.clk.Now()); err == nil {
		t.Fatal("an SVID under the dropped root still verifies against the bundle")
	}
	if _, err := v.Verify(rawChain(oldChain)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("the verifier accepts an SVID under the dropped root: %v", err)
	}
	if _, err := v.Verify(rawChain(newChain)); err != nil {
		t.Fatal(err)
	}
	jwks, _ := ca.JWTBundle()
	for _, k := range res.OldJWTKeys {
		if slices.Contains(bundleIDs(ca), k) || containsString(jwks, k) {
			t.Fatalf("old JWT-SVID key %s still published", k)
		}
	}
	// A restart (another replica) sees the same: dropped stays dropped,
	// and the schedule does not bring anything back.
	f.clk.Add(200 * time.Hour)
	ca2 := f.ca(t, nil)
	for _, k := range ca2.Status() {
		if k.ID == oldRoot || slices.Contains(res.OldJWTKeys, k.ID) {
			t.Fatalf("after a restart the dropped key %s is back: %+v", k.ID, k)
		}
	}
	keys, _ := f.st.ListCAKeys(ctx)
	for _, k := range keys {
		if k.ID == oldRoot && k.State != store.StateDropped {
			t.Fatalf("old root stored as %s", k.State)
		}
	}
	// Dropping again is not an error.
	if _, err := ca.DropKeys(ctx, []string{oldRoot}); err != nil {
		t.Fatal(err)
	}
}

func containsString(b []byte, s string) bool { return strings.Contains(string(b), s) }

// An upstream root is the operator's to replace: the CA refuses to
// pretend it burned it down.
func TestRekeyRefusesUpstreamRoot(t *testing.T) {
	f := newFixture(t)
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, _ := svid.CATemplate(td, "upstream test root", f.clk.Now(), f.clk.Now().Add(10000*time.Hour), -1)
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(der)
	ca := f.ca(t, func(c *Config) { c.Upstream = &Upstream{Roots: []*x509.Certificate{root}, Key: rootKey} })
	if _, err := ca.RekeyPrepareRoot(context.Background()); !errors.Is(err, ErrUpstreamRekey) {
		t.Fatalf("prepare with an upstream root: %v", err)
	}
	if _, err := ca.RekeyActivate(context.Background(), "x"); !errors.Is(err, ErrUpstreamRekey) {
		t.Fatalf("activate with an upstream root: %v", err)
	}
}

// Only the CA's own kinds can be dropped through it.
func TestDropKeysRefusesOtherKinds(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	ctx := context.Background()
	if err := f.st.PutCAKey(ctx, store.CAKey{ID: "oauth-1", Kind: store.KindOAuth, State: store.StateRetired, CertDER: []byte{1},
		NotBefore: f.clk.Now(), NotAfter: f.clk.Now().Add(time.Hour), CreatedAt: f.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.DropKeys(ctx, []string{"oauth-1"}); err == nil {
		t.Fatal("the CA dropped an OAuth key")
	}
}

// Every replica's API certificate follows a burn-down by itself: at its
// next handshake after the new root signs, it is re-issued under it.
func TestServerCertFollowsRekey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ca := f.ca(t, nil)
	sc := &ServerCert{CA: ca, Listen: "127.0.0.1:8443", Now: f.clk.Now, Log: slog.New(slog.DiscardHandler)}
	first, err := sc.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := sc.GetCertificate(nil); again != first {
		t.Fatal("a fresh certificate was replaced for no reason")
	}
	root, err := ca.RekeyPrepareRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := sc.GetCertificate(nil); again != first {
		t.Fatal("replaced before the new root signs")
	}
	if _, err := ca.RekeyActivate(ctx, root); err != nil {
		t.Fatal(err)
	}
	next, err := sc.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(next.Certificate[1])
	if next == first || !IssuedUnder([]*x509.Certificate{next.Leaf, inter}, root) {
		t.Fatal("the server certificate still chains to the old root after activation")
	}
}
