package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func TestPlacementsSQLite(t *testing.T) { testPlacements(t, storetest.SQLite(t, t.TempDir())) }

func TestPlacementsPostgres(t *testing.T) {
	st, err := store.OpenPostgres(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testPlacements(t, st)
}

func testPlacements(t *testing.T, st store.Store) {
	ctx := context.Background()
	ns, ok := store.Netpol(st)
	if !ok {
		t.Fatal("the SQLite store has no placement table")
	}
	t0 := time.Unix(1_700_000_000, 0)
	a := []store.Placement{
		{Host: "10.0.0.1", Service: "spiffe://example.org/orders", Ports: []uint16{8443, 9443}, ReportedAt: t0},
		{Host: "10.0.0.1", Service: "spiffe://example.org/batch", ReportedAt: t0},
	}
	if err := ns.ReplacePlacements(ctx, "spiffe://example.org/agent/a", a); err != nil {
		t.Fatal(err)
	}
	if err := ns.ReplacePlacements(ctx, "spiffe://example.org/agent/b", []store.Placement{{Host: "10.0.0.2", Service: "spiffe://example.org/payments", Ports: []uint16{8443}, ReportedAt: t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	ps, err := ns.ListPlacements(ctx, t0)
	if err != nil || len(ps) != 3 {
		t.Fatalf("%v %v", ps, err)
	}
	if ps[1].Service != "spiffe://example.org/orders" || len(ps[1].Ports) != 2 || ps[1].Ports[1] != 9443 || !ps[1].ReportedAt.Equal(t0) || ps[1].Agent != "spiffe://example.org/agent/a" {
		t.Fatalf("orders %+v", ps[1])
	}
	// A new report replaces the agent's whole host; the other agent's stays.
	if err := ns.ReplacePlacements(ctx, "spiffe://example.org/agent/a", a[:1]); err != nil {
		t.Fatal(err)
	}
	if ps, _ = ns.ListPlacements(ctx, t0); len(ps) != 2 {
		t.Fatalf("after the new report: %v", ps)
	}
	// Stale reports are left out.
	if ps, _ = ns.ListPlacements(ctx, t0.Add(time.Second)); len(ps) != 1 || ps[0].Service != "spiffe://example.org/payments" {
		t.Fatalf("since: %v", ps)
	}
}
