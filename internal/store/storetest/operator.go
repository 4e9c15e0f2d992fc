package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

func operators(t *testing.T, h harness) store.OperatorStore {
	t.Helper()
	s := h.open(t)
	os, ok := store.Operators(s)
	if !ok {
		t.Fatal("the store has no operator tables")
	}
	return os
}

func testOperators(t *testing.T, h harness) {
	s := h.open(t)
	os, _ := store.Operators(s)
	ctx := t.Context()
	alice := store.Operator{Name: "alice", Kind: store.OperatorUser, RequireMFA: true, By: "admin",
		Roles:     []store.OperatorRole{{Role: "responder"}, {Role: "policy-author", Services: []string{"spiffe://example.org/payments/*"}}},
		CreatedAt: at(0), UpdatedAt: at(0)}
	ci := store.Operator{Name: "spiffe://example.org/ci/*", Kind: store.OperatorWorkload, By: "alice",
		Roles: []store.OperatorRole{{Role: "policy-author"}}, CreatedAt: at(time.Second), UpdatedAt: at(time.Second)}
	rev := revision(t, s)
	must(t, os.CreateOperator(ctx, alice))
	must(t, os.CreateOperator(ctx, ci))
	if revision(t, s) <= rev {
		t.Fatal("creating an operator did not bump the revision")
	}
	wantErrIs(t, "a second alice", os.CreateOperator(ctx, alice), store.ErrConflict)
	got, err := os.GetOperator(ctx, "alice")
	must(t, err)
	wantEqual(t, "GetOperator", got, alice)
	_, err = os.GetOperator(ctx, "bob")
	wantErrIs(t, "unknown operator", err, store.ErrNotFound)
	all, err := os.ListOperators(ctx)
	must(t, err)
	wantEqual(t, "ListOperators", all, []store.Operator{alice, ci})

	alice.Disabled, alice.Roles, alice.UpdatedAt, alice.By = true, []store.OperatorRole{{Role: "auditor"}}, at(time.Minute), "carol"
	rev = revision(t, s)
	must(t, os.UpdateOperator(ctx, alice))
	if revision(t, s) <= rev {
		t.Fatal("updating an operator did not bump the revision")
	}
	got, err = os.GetOperator(ctx, "alice")
	must(t, err)
	wantEqual(t, "after UpdateOperator", got, alice)
	wantErrIs(t, "update an unknown operator", os.UpdateOperator(ctx, store.Operator{Name: "bob", UpdatedAt: at(0)}), store.ErrNotFound)
}

func testDeviceCodes(t *testing.T, h harness) {
	os, ctx := operators(t, h), t.Context()
	d := store.DeviceCode{DeviceHash: []byte("device-1"), UserHash: []byte("user-1"), ClientID: "rampart-cli", Scope: "openid",
		ExpiresAt: at(10 * time.Minute), Interval: 5 * time.Second, CreatedAt: at(0)}
	must(t, os.CreateDeviceCode(ctx, d))
	wantErrIs(t, "the same user code again", os.CreateDeviceCode(ctx, store.DeviceCode{DeviceHash: []byte("device-2"), UserHash: []byte("user-1"),
		ExpiresAt: at(time.Minute), CreatedAt: at(0)}), store.ErrConflict)
	got, err := os.GetDeviceCodeByUser(ctx, []byte("user-1"))
	must(t, err)
	wantEqual(t, "pending", got.Status, store.DevicePending)
	wantEqual(t, "client", got.ClientID, "rampart-cli")

	// Polling: the first poll is pending; one within the interval is
	// slow_down, and the interval grows by five seconds.
	p, slow, err := os.PollDeviceCode(ctx, []byte("device-1"), at(time.Second))
	must(t, err)
	wantEqual(t, "first poll", [2]any{p.Status, slow}, [2]any{store.DevicePending, false})
	_, slow, err = os.PollDeviceCode(ctx, []byte("device-1"), at(3*time.Second))
	must(t, err)
	wantEqual(t, "a poll too soon slows down", slow, true)
	p, slow, err = os.PollDeviceCode(ctx, []byte("device-1"), at(14*time.Second))
	must(t, err)
	wantEqual(t, "interval after slow_down", [2]any{p.Interval, slow}, [2]any{10 * time.Second, false})

	// Approval happens once; only one poll sees it.
	must(t, os.DecideDeviceCode(ctx, []byte("user-1"), true, "alice", []byte(`{"amr":["pwd","otp"]}`), at(20*time.Second)))
	wantErrIs(t, "decide twice", os.DecideDeviceCode(ctx, []byte("user-1"), true, "mallory", nil, at(21*time.Second)), store.ErrStateConflict)
	var wg sync.WaitGroup
	var mu sync.Mutex
	approved := 0
	for i := range 4 {
		wg.Go(func() {
			p, _, err := os.PollDeviceCode(ctx, []byte("device-1"), at(time.Duration(40+20*i)*time.Second))
			if err != nil {
				t.Error(err)
				return
			}
			if p.Status == store.DeviceApproved {
				mu.Lock()
				approved++
				mu.Unlock()
				if p.Subject != "alice" || string(p.Data) != `{"amr":["pwd","otp"]}` {
					t.Errorf("approved for %q with %s", p.Subject, p.Data)
				}
			}
		})
	}
	wg.Wait()
	wantEqual(t, "polls that saw the approval", approved, 1)

	// An expired authorization cannot be approved.
	must(t, os.CreateDeviceCode(ctx, store.DeviceCode{DeviceHash: []byte("device-3"), UserHash: []byte("user-3"),
		ExpiresAt: at(time.Minute), Interval: 5 * time.Second, CreatedAt: at(0)}))
	wantErrIs(t, "approve expired", os.DecideDeviceCode(ctx, []byte("user-3"), true, "alice", nil, at(2*time.Minute)), store.ErrStateConflict)
	wantErrIs(t, "decide unknown", os.DecideDeviceCode(ctx, []byte("nope"), true, "alice", nil, at(0)), store.ErrNotFound)
	_, _, err = os.PollDeviceCode(ctx, []byte("nope"), at(0))
	wantErrIs(t, "poll unknown", err, store.ErrNotFound)
}
