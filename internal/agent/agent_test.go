package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
)

// Renewal lands between 40% and 50% of the remaining life, and is spread out.
func TestRenewTimeJitter(t *testing.T) {
	now := time.Now()
	notAfter := now.Add(time.Hour)
	seen := map[time.Duration]bool{}
	for range 1000 {
		at := renewTime(now, notAfter).Sub(now)
		if at < 24*time.Minute || at > 30*time.Minute {
			t.Fatalf("renewal at %v of a 1h life; want 24m-30m", at)
		}
		seen[at.Truncate(30*time.Second)] = true
	}
	if len(seen) < 8 {
		t.Fatalf("renewal times not spread: %d distinct 30s buckets in 1000 draws", len(seen))
	}
}

func testHeld(t testing.TB) *held {
	t.Helper()
	id := spiffeid.RequireFromString("spiffe://example.org/orders")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id.URL()}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	return &held{ID: id, Chain: []*x509.Certificate{cert}, Key: key, RenewAt: time.Now().Add(30 * time.Minute).Round(0),
		Entry: api.Entry{ID: "e1", SpiffeID: id.String(), Selectors: []string{"unix:uid:1"}}, Received: time.Now().Round(0)}
}

// The cache survives a restart, holds keys, and is readable by its owner only.
func TestCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{DataDir: dir}, td: spiffeid.RequireTrustDomainFromString("example.org"),
		revoked: map[string]struct{}{"ab": {}}, workloads: map[string]*held{}}
	h := testHeld(t)
	a.svid, a.workloads["e1"], a.bundle, a.revision = h, h, h.Chain, 7
	a.entries = entriesOf(h.Entry)
	if err := a.saveCache(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "cache.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600 (%v)", fi.Mode().Perm(), err)
	}
	b := &Agent{cfg: Config{DataDir: dir}, warned: map[string]bool{}}
	if err := b.loadCache(); err != nil {
		t.Fatal(err)
	}
	if b.entries.len() != 1 || b.entries.find("e1") != 0 || !sameEntry(b.entries.entry(0), h.Entry) {
		t.Fatalf("entries did not round-trip: %+v", b.entries)
	}
	got := b.workloads["e1"]
	if got == nil || !got.Chain[0].Equal(h.Chain[0]) || !got.Key.Public().(*ecdsa.PublicKey).Equal(h.Key.Public()) ||
		!got.RenewAt.Equal(h.RenewAt) || b.revision != 7 || b.td != a.td || len(b.revoked) != 1 || b.svid == nil {
		t.Fatalf("cache did not round-trip: %+v", b)
	}
	// A cache for another trust domain is refused, not silently used.
	c := &Agent{cfg: Config{DataDir: dir}, warned: map[string]bool{}, td: spiffeid.RequireTrustDomainFromString("other.org")}
	if err := c.loadCache(); err == nil {
		t.Fatal("loaded a cache of another trust domain")
	}
	os.WriteFile(filepath.Join(dir, "cache.json"), []byte("{broken"), 0o600)
	if err := (&Agent{cfg: Config{DataDir: dir}, warned: map[string]bool{}}).loadCache(); err == nil {
		t.Fatal("loaded a damaged cache")
	}
}

// entriesOf builds the entry set a sync of es would.
func entriesOf(es ...api.Entry) *entrySet {
	var b entryBuilder
	for _, e := range es {
		b.add(e)
	}
	return b.done()
}

func TestSameEntry(t *testing.T) {
	e := api.Entry{SpiffeID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}, X509TTLSeconds: 60}
	changed := []api.Entry{
		{SpiffeID: "spiffe://example.org/b", Selectors: e.Selectors, X509TTLSeconds: 60},
		{SpiffeID: e.SpiffeID, Selectors: []string{"unix:uid:2"}, X509TTLSeconds: 60},
		{SpiffeID: e.SpiffeID, Selectors: e.Selectors, X509TTLSeconds: 30},
		{SpiffeID: e.SpiffeID, Selectors: e.Selectors, X509TTLSeconds: 60, DNSNames: []string{"a.example"}},
	}
	if !sameEntry(e, e) {
		t.Fatal("entry differs from itself")
	}
	// An SVID held in an older cache recorded the selectors as the server
	// sent them; the agent now keeps them in their normal order.
	two := api.Entry{SpiffeID: e.SpiffeID, Selectors: []string{"unix:uid:1", "unix:gid:2"}}
	if !sameEntry(two, api.Entry{SpiffeID: e.SpiffeID, Selectors: []string{"unix:gid:2", "unix:uid:1"}}) {
		t.Fatal("the same selectors in another order were taken for a change (every held SVID re-minted after an upgrade)")
	}
	for i, c := range changed {
		if sameEntry(e, c) {
			t.Errorf("change %d not noticed", i)
		}
	}
}
