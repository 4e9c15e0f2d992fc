package registration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newRegistrar(t *testing.T) (*Registrar, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st := storetest.SQLite(t, dir)
	w, err := keywrap.LoadOrCreateFile(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Now())
	ca, err := identity.New(context.Background(), identity.Config{TrustDomain: td, Store: st, Wrapper: w, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &Registrar{TrustDomain: td, Store: st, CA: ca, JoinTokenTTL: 10 * time.Minute, AgentTTL: time.Hour,
		X509TTL: time.Hour, JWTTTL: 5 * time.Minute, Now: clk.Now,
		Federations: func(context.Context) ([]string, error) { return []string{"partner.example"}, nil }}, st
}

func csrFor(t *testing.T, id spiffeid.ID) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id.String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestEntryRules(t *testing.T) {
	g, _ := newRegistrar(t)
	ctx := context.Background()
	parent := "spiffe://example.org/rampart/agent/node-1"
	ok := EntrySpec{SpiffeID: "spiffe://example.org/orders", ParentID: parent, Selectors: []string{"unix:uid:1000"}}
	for _, c := range []struct {
		name string
		mod  func(*EntrySpec)
		want string
	}{
		{"foreign", func(s *EntrySpec) { s.SpiffeID = "spiffe://evil.org/a" }, "spiffe_id:"},
		{"parent", func(s *EntrySpec) { s.ParentID = "spiffe://example.org/orders" }, "parent_id:"},
		{"no selectors", func(s *EntrySpec) { s.Selectors = nil }, "selectors: at least one"},
		{"path only", func(s *EntrySpec) { s.Selectors = []string{"unix:path:/bin/x"} }, "selectors:"},
		{"ttl too long", func(s *EntrySpec) { s.X509TTLSeconds = int64(identity.DefaultIntermediateTTL/time.Second) + 1 }, "x509_ttl_seconds"},
		{"ttl wraps", func(s *EntrySpec) { s.JWTTTLSeconds = 18446744074 }, "jwt_ttl_seconds"},
		{"dns", func(s *EntrySpec) { s.DNSNames = []string{"Upper.example"} }, "dns_names"},
	} {
		spec := ok
		c.mod(&spec)
		_, err := g.NewEntry(ctx, spec)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %q", c.name, err, c.want)
		}
	}
	if _, err := g.NewEntry(ctx, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := g.NewEntry(ctx, ok); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "already gives") {
		t.Fatalf("the same entry twice: %v", err)
	}
}

func TestJoinTokens(t *testing.T) {
	g, _ := newRegistrar(t)
	ctx := context.Background()
	tok, jt, err := g.NewJoinToken(ctx, "node-1", 0)
	if err != nil || !strings.HasPrefix(tok, "rjt_") || jt.ExpiresAt.Sub(jt.CreatedAt) != 10*time.Minute || jt.AgentID != "spiffe://example.org/rampart/agent/node-1" {
		t.Fatalf("%q %+v %v", tok, jt, err)
	}
	for _, ttl := range []int64{-1, int64(MaxJoinTokenTTL/time.Second) + 1, 18446744074} {
		if _, _, err := g.NewJoinToken(ctx, "node-2", ttl); !errors.Is(err, ErrInvalid) {
			t.Errorf("ttl %d: %v, want ErrInvalid", ttl, err)
		}
	}
	agent := spiffeid.RequireFromString(jt.AgentID)
	if _, err := g.SignAgent(ctx, agent, csrFor(t, agent), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.NewJoinToken(ctx, "node-1", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("a token for an attested agent: %v, want ErrConflict", err)
	}
}

// An agent has SVIDs signed only for the entries it parents, and learns
// nothing of the others; a CSR for another ID is refused; what is signed
// is recorded.
func TestSignWorkloads(t *testing.T) {
	g, st := newRegistrar(t)
	ctx := context.Background()
	node1, _ := identity.AgentID(td, "node-1")
	node2, _ := identity.AgentID(td, "node-2")
	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
	mine, err := g.NewEntry(ctx, EntrySpec{SpiffeID: orders.String(), ParentID: node1.String(), Selectors: []string{"unix:uid:1"}})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := g.NewEntry(ctx, EntrySpec{SpiffeID: "spiffe://example.org/payments", ParentID: node2.String(), Selectors: []string{"unix:uid:2"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := g.SignWorkloads(ctx, node1, []SignRequest{
		{EntryID: mine.ID, CSR: csrFor(t, orders)},
		{EntryID: theirs.ID, CSR: csrFor(t, orders)},
		{EntryID: "nope", CSR: csrFor(t, orders)},
		{EntryID: mine.ID, CSR: csrFor(t, spiffeid.RequireFromString("spiffe://example.org/payments"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Err != nil || len(out[0].Chain) == 0 {
		t.Fatalf("own entry: %v", out[0].Err)
	}
	if !errors.Is(out[1].Err, ErrNotEntitled) || !errors.Is(out[2].Err, ErrNotEntitled) || out[1].Err.Error() != strings.Replace(out[2].Err.Error(), "nope", theirs.ID, 1) {
		t.Fatalf("another's entry and no entry must read alike: %v / %v", out[1].Err, out[2].Err)
	}
	if !errors.Is(out[3].Err, ErrInvalid) {
		t.Fatalf("a CSR for another ID: %v", out[3].Err)
	}
	got, err := st.ListSVIDs(ctx, store.SVIDFilter{AgentID: node1.String()}, g.Now())
	if err != nil || len(got) != 1 || got[0].EntryID != mine.ID {
		t.Fatalf("recorded %+v %v, want the one signed", got, err)
	}
	if _, _, _, err := g.SignJWT(ctx, st, node1, theirs.ID, []string{"aud"}); !errors.Is(err, ErrNotEntitled) {
		t.Fatalf("JWT for another's entry: %v", err)
	}
	if _, _, _, err := g.SignJWT(ctx, st, node1, mine.ID, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("JWT without audience: %v", err)
	}
}

// Evicting an agent revokes every unexpired SVID issued through it, its
// own included; Revoke takes exactly one of serial and SPIFFE ID.
func TestEvictAndRevoke(t *testing.T) {
	g, st := newRegistrar(t)
	ctx := context.Background()
	node1, _ := identity.AgentID(td, "node-1")
	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
	if _, err := g.SignAgent(ctx, node1, csrFor(t, node1), false); err != nil {
		t.Fatal(err)
	}
	e, err := g.NewEntry(ctx, EntrySpec{SpiffeID: orders.String(), ParentID: node1.String(), Selectors: []string{"unix:uid:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.SignWorkloads(ctx, node1, []SignRequest{{EntryID: e.ID, CSR: csrFor(t, orders)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Revoke(ctx, st, "", "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("neither serial nor SPIFFE ID: %v", err)
	}
	if _, err := g.Revoke(ctx, st, "ab", orders.String(), ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("both: %v", err)
	}
	if _, err := g.Revoke(ctx, st, "ffff", "", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown serial: %v", err)
	}
	a, err := st.GetAgent(ctx, node1.String())
	if err != nil {
		t.Fatal(err)
	}
	revs, err := g.Evict(ctx, st, a)
	if err != nil || len(revs) != 2 {
		t.Fatalf("evict: %d revocations, %v; want the agent's SVID and the workload's", len(revs), err)
	}
	if a, err = st.GetAgent(ctx, node1.String()); err != nil || !a.Evicted {
		t.Fatalf("agent after eviction: %+v %v", a, err)
	}
	if _, err := g.Evict(ctx, st, a); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "agent node-1 was already evicted at ") {
		t.Fatalf("evicting again: %v", err)
	}
}

// evictingStore evicts the agent (marks it and revokes what is recorded,
// as Registrar.Evict does) at the moment hook names: after the signing
// checked that the agent was not evicted, before the SVIDs are recorded.
type evictingStore struct {
	store.Store
	g     *Registrar
	agent spiffeid.ID
	hook  string // "UpsertAgent" or "ListEntries"
	done  bool
}

func (s *evictingStore) evictOnce(ctx context.Context, at string) {
	if s.done || at != s.hook {
		return
	}
	s.done = true
	a, err := s.Store.GetAgent(ctx, s.agent.String())
	if err != nil {
		panic(err)
	}
	if _, err := s.g.Evict(ctx, s.Store, a); err != nil {
		panic(err)
	}
}

func (s *evictingStore) UpsertAgent(ctx context.Context, a store.Agent) error {
	err := s.Store.UpsertAgent(ctx, a)
	s.evictOnce(ctx, "UpsertAgent")
	return err
}

func (s *evictingStore) ListEntries(ctx context.Context, parent string) ([]store.Entry, error) {
	es, err := s.Store.ListEntries(ctx, parent)
	s.evictOnce(ctx, "ListEntries")
	return es, err
}

// The race: an operator evicts an agent while it renews its SVID, or has
// workload SVIDs signed. Eviction revokes what it finds recorded; the
// SVIDs signed in between are recorded after. They must be revoked all
// the same, the call refused, and the agent stay evicted (a renewal used
// to write the agent back as not evicted).
func TestSigningRacingAnEviction(t *testing.T) {
	for _, hook := range []string{"UpsertAgent", "ListEntries"} {
		t.Run(hook, func(t *testing.T) {
			g, st := newRegistrar(t)
			ctx := context.Background()
			node1, _ := identity.AgentID(td, "node-1")
			orders := spiffeid.RequireFromString("spiffe://example.org/orders")
			e, err := g.NewEntry(ctx, EntrySpec{SpiffeID: orders.String(), ParentID: node1.String(), Selectors: []string{"unix:uid:1"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := g.SignAgent(ctx, node1, csrFor(t, node1), false); err != nil {
				t.Fatal(err)
			}
			racing := *g
			racing.Store = &evictingStore{Store: st, g: g, agent: node1, hook: hook}
			if hook == "UpsertAgent" {
				_, err = racing.SignAgent(ctx, node1, csrFor(t, node1), false)
			} else {
				_, err = racing.SignWorkloads(ctx, node1, []SignRequest{{EntryID: e.ID, CSR: csrFor(t, orders)}})
			}
			if !errors.Is(err, ErrNotEntitled) {
				t.Fatalf("signing while evicted: %v, want ErrNotEntitled", err)
			}
			if a, _ := st.GetAgent(ctx, node1.String()); !a.Evicted {
				t.Fatal("the agent is no longer evicted")
			}
			issued, _ := st.ListSVIDs(ctx, store.SVIDFilter{AgentID: node1.String()}, g.Now())
			revs, _ := st.ListRevocations(ctx, g.Now())
			revoked := map[string]bool{}
			for _, r := range revs {
				revoked[r.Serial] = true
			}
			if len(issued) < 2 {
				t.Fatalf("%d SVIDs recorded, want the first and the racing one", len(issued))
			}
			for _, sv := range issued {
				if !revoked[sv.Serial] {
					t.Errorf("SVID %s (%s) signed through the evicted agent is not revoked", sv.Serial, sv.SpiffeID)
				}
			}
			// Signing again once evicted is refused before anything is signed.
			before := len(issued)
			if _, err := g.SignAgent(ctx, node1, csrFor(t, node1), false); !errors.Is(err, ErrNotEntitled) {
				t.Fatalf("renewing an evicted agent: %v", err)
			}
			if again, _ := st.ListSVIDs(ctx, store.SVIDFilter{AgentID: node1.String()}, g.Now()); len(again) != before {
				t.Fatal("an SVID was signed for an evicted agent")
			}
			// A join token spent for it readmits it.
			if _, err := g.SignAgent(ctx, node1, csrFor(t, node1), true); err != nil {
				t.Fatalf("readmitting: %v", err)
			}
			if a, _ := st.GetAgent(ctx, node1.String()); a.Evicted {
				t.Fatal("still evicted after readmission")
			}
		})
	}
}
