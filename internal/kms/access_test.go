package kms

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

var (
	td     = spiffeid.RequireTrustDomainFromString("example.org")
	orders = spiffeid.RequireFromString("spiffe://example.org/orders")
)

func putPolicy(t *testing.T, st store.Store, src string) {
	t.Helper()
	if _, err := st.PutPolicy(t.Context(), store.Policy{Service: ServiceID(td).String(), Version: src, Source: []byte(src), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// Without a key-use policy every use is denied; with one, only what a rule
// allows; a new version of the policy applies at the next Load.
func TestAccess(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := NewAccess(td)
	if d := a.Decide(orders, "pii", "decrypt"); d.Allowed || d.Version != "none" {
		t.Fatalf("before Load: %+v, want denied at version none", d)
	}
	if err := a.Load(ctx, e.st); err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(orders, "pii", "decrypt"); d.Allowed {
		t.Fatalf("no policy: %+v, want denied", d)
	}
	putPolicy(t, e.st, "service: spiffe://example.org/rampart/kms\nrules:\n  - name: orders-encrypts\n    callers: [spiffe://example.org/orders]\n    paths: [/keys/pii/encrypt]\n")
	if err := a.Load(ctx, e.st); err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(orders, "pii", "encrypt"); !d.Allowed || d.Rule != "orders-encrypts" {
		t.Fatalf("allowed use: %+v", d)
	}
	for _, c := range []struct {
		caller  spiffeid.ID
		key, op string
	}{{orders, "pii", "decrypt"}, {orders, "other", "encrypt"}, {spiffeid.RequireFromString("spiffe://example.org/reports"), "pii", "encrypt"}} {
		if d := a.Decide(c.caller, c.key, c.op); d.Allowed {
			t.Errorf("%s %s on %s: allowed, want denied", c.caller, c.op, c.key)
		}
	}
	putPolicy(t, e.st, "service: spiffe://example.org/rampart/kms\nrules:\n  - name: orders-decrypts\n    callers: [spiffe://example.org/orders]\n    paths: [/keys/pii/decrypt]\n")
	if err := a.Load(ctx, e.st); err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(orders, "pii", "encrypt"); d.Allowed {
		t.Fatal("the old version still applies after Load")
	}
}

// A scheduled rotation is an audit entry naming the key store as actor,
// and wakes the replicas.
func TestMaintainerAuditsScheduledActions(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "k", TypeAES, 24*time.Hour))
	var recorded []*audit.Entry
	changed := 0
	m := &Maintainer{Service: e.svc, Actor: audit.Actor{SpiffeID: ServiceID(td).String()}, Now: e.clock.Now,
		Record:  func(_ context.Context, es ...*audit.Entry) { recorded = append(recorded, es...) },
		Changed: func(context.Context) { changed++ }}
	m.Step(ctx)
	if len(recorded) != 0 || changed != 0 {
		t.Fatalf("nothing due: recorded %d, changed %d", len(recorded), changed)
	}
	e.clock.Add(24 * time.Hour)
	m.Step(ctx)
	if len(recorded) != 1 || changed != 1 {
		t.Fatalf("rotation due: recorded %d, changed %d", len(recorded), changed)
	}
	r := recorded[0]
	if r.Action != "kms.rotate" || r.Target != "kms:k" || r.Actor.SpiffeID != "spiffe://example.org/rampart/kms" || r.Details["trigger"] != "schedule" || r.Details["version"] != "2" {
		t.Fatalf("entry %+v", r)
	}
}
