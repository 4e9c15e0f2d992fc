package operator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
)

type joined struct {
	store.Store
	store.OperatorStore
}

// An admin entry lends its SPIFFE ID the admin role, read from the store
// at every call: expiry, clearing the flag and deletion end it at the
// next call; another ID (a sibling, a longer path) gets nothing.
func TestAdminEntryGrant(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ops, _ := store.Operators(st)
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := &Authenticator{Store: joined{st, ops}, Now: clk.Now}
	id := spiffeid.RequireFromString("spiffe://example.org/ops/bot")
	sel, _ := selector.Parse("unix:uid:1000")
	e := store.Entry{ID: "e1", SpiffeID: id.String(), ParentID: "spiffe://example.org/rampart/agent/n1", Selectors: []selector.Selector{sel},
		Admin: true, ExpiresAt: clk.Now().Add(time.Hour), CreatedAt: clk.Now()}
	if err := st.CreateEntry(ctx, e); err != nil {
		t.Fatal(err)
	}
	c, err := a.Workload(ctx, id)
	if err != nil || !c.Allows(permission.OperatorWrite) || len(c.Via) != 1 || c.Via[0] != ViaEntry+"e1" || c.Actor.SpiffeID != id.String() {
		t.Fatalf("admin entry's workload: %+v, %v; want the admin role via entry:e1", c, err)
	}
	for _, other := range []string{"spiffe://example.org/ops/bot2", "spiffe://example.org/ops/bot/x", "spiffe://example.org/ops"} {
		if _, err := a.Workload(ctx, spiffeid.RequireFromString(other)); !errors.Is(err, ErrNoOperator) {
			t.Errorf("%s holds something: %v", other, err)
		}
	}
	// Expired: nothing, at once.
	clk.Add(time.Hour)
	if _, err := a.Workload(ctx, id); !errors.Is(err, ErrNoOperator) {
		t.Fatalf("after the entry's expiry: %v, want ErrNoOperator", err)
	}
	// Unexpired again, the flag cleared: nothing.
	e.ExpiresAt = time.Time{}
	e.Admin = false
	if err := st.UpdateEntries(ctx, []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Workload(ctx, id); !errors.Is(err, ErrNoOperator) {
		t.Fatalf("admin cleared: %v, want ErrNoOperator", err)
	}
	e.Admin = true
	if err := st.UpdateEntries(ctx, []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Workload(ctx, id); err != nil {
		t.Fatalf("admin set again: %v", err)
	}
	if err := st.DeleteEntry(ctx, "e1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Workload(ctx, id); !errors.Is(err, ErrNoOperator) {
		t.Fatalf("entry deleted: %v, want ErrNoOperator", err)
	}
}

// BenchmarkWorkloadWithAdminEntries: what an admin request by a workload
// costs in the store with 10,000 entries (one indexed lookup by SPIFFE ID
// besides the operators).
func BenchmarkWorkloadWithAdminEntries(b *testing.B) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(b.TempDir(), "r.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ops, _ := store.Operators(st)
	sel, _ := selector.Parse("unix:uid:1000")
	es := make([]store.Entry, 10000)
	for i := range es {
		es[i] = store.Entry{ID: fmt.Sprintf("e%05d", i), SpiffeID: fmt.Sprintf("spiffe://example.org/svc/%d", i),
			ParentID: "spiffe://example.org/rampart/agent/n1", Selectors: []selector.Selector{sel}, Admin: i == 4242}
	}
	if err := st.CreateEntries(ctx, es); err != nil {
		b.Fatal(err)
	}
	a := &Authenticator{Store: joined{st, ops}, Now: time.Now}
	id := spiffeid.RequireFromString("spiffe://example.org/svc/4242")
	b.ResetTimer()
	for b.Loop() {
		if _, err := a.Workload(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
