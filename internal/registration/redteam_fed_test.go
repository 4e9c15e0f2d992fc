package registration

// Red team (federation boundary, low): once a federation relationship is
// deleted, every entry still naming it (docs/federation.md: "Deleting a
// relationship leaves the entries that name it as they are") can no longer
// be changed at all: narrowing its selectors, setting expires_at or
// shortening its TTL during an incident is refused with "no federation
// relationship with b.example (create it first: rampart federation
// create)", which tells the responder to re-create the trust they just
// ended. The check exists to refuse misspelt names as they are written; a
// name the entry already held is not being written.

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/store"
)

func TestRedTeamEntryNamingAnEndedFederationStaysEditable(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var mu sync.Mutex
	known := []string{"b.example"}
	g := &Registrar{TrustDomain: spiffeid.RequireTrustDomainFromString("a.example"), Store: st, MaxTTL: 24 * time.Hour,
		JoinTokenTTL: time.Minute, AgentTTL: time.Hour, X509TTL: time.Hour, JWTTTL: 5 * time.Minute, Now: time.Now,
		Federations: func(context.Context) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), known...), nil
		}}
	spec := EntrySpec{SpiffeID: "spiffe://a.example/orders", ParentID: "spiffe://a.example/rampart/agent/node-1",
		Selectors: []string{"unix:uid:1000"}, FederatesWith: []string{"b.example"}}
	es, err := g.NewEntries(ctx, st, []EntrySpec{spec})
	if err != nil {
		t.Fatal(err)
	}
	// The federation with b.example ends.
	mu.Lock()
	known = nil
	mu.Unlock()

	// A responder narrows the compromised workload's entry: another uid
	// and an expiry. federates_with is unchanged.
	spec.Selectors = []string{"unix:uid:1000", "unix:path:/usr/bin/orders"}
	spec.ExpiresAt = time.Now().Add(time.Hour)
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: spec}}); err != nil {
		t.Errorf("narrowing an entry that names an ended federation is refused: %v", err)
	}
	// Adding a trust domain without a relationship is still refused.
	spec.FederatesWith = []string{"b.example", "c.example"}
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: spec}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("adding c.example (no relationship): %v, want ErrInvalid", err)
	}
}
