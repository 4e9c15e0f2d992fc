package kms

import (
	"context"
	"errors"
	"strings"
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

// Do asks the key-use policy first, and every use, allowed or not, comes
// with its audit entry; the data never goes into it.
func TestDoAuditsEveryUse(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "pii", TypeAES, 0))
	a := NewAccess(td)
	putPolicy(t, e.st, "service: spiffe://example.org/rampart/kms\nrules:\n  - name: orders-encrypts\n    callers: [spiffe://example.org/orders]\n    paths: [/keys/pii/encrypt, /keys/pii/decrypt]\n")
	if err := a.Load(ctx, e.st); err != nil {
		t.Fatal(err)
	}
	secret := []byte("4111 1111 1111 1111")
	_, ent, err := e.svc.Do(ctx, a, Use{Caller: orders, Key: "pii", Op: "sign", Message: secret}, e.clock.Now())
	if !errors.Is(err, ErrDenied) || ent.Outcome != audit.OutcomeDenied || ent.Details["policy_version"] == "" {
		t.Fatalf("denied use: %v %+v", err, ent)
	}
	res, ent, err := e.svc.Do(ctx, a, Use{Caller: orders, Key: "pii", Op: "encrypt", Plaintext: secret}, e.clock.Now())
	if err != nil || ent.Outcome != audit.OutcomeSuccess || ent.Details["version"] != "1" || ent.Details["rule"] != "orders-encrypts" || ent.Details["size"] != "19" {
		t.Fatalf("allowed use: %v %+v", err, ent)
	}
	_, ent, err = e.svc.Do(ctx, a, Use{Caller: orders, Key: "pii", Op: "decrypt", Ciphertext: res.Ciphertext[:10]}, e.clock.Now())
	if err == nil || !CallerError(err) || ent.Outcome != audit.OutcomeFailure || ent.Reason != err.Error() {
		t.Fatalf("a damaged ciphertext: %v %+v", err, ent)
	}
	for _, v := range ent.Details {
		if strings.Contains(v, "4111") {
			t.Fatal("the data went into the audit entry")
		}
	}
}
