package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/sdktest"
)

// A service using the SDK is tested without an agent: an in-memory CA
// (sdktest) gives payments and its callers their SVIDs, and the policy is
// the one shipped beside it.
func TestPaymentsEnforcesItsPolicy(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("demo.rampart.local")
	ca := sdktest.NewCA(td)
	source := func(path string) *sdk.Source {
		s, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(spiffeid.RequireFromPath(td, path)), ca.Bundle()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	payments := source("/examples/payments")
	policy, err := os.ReadFile("policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := payments.SetPolicy(policy); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(payments, "")
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	base := "https://" + ln.Addr().String()

	orders := source("/examples/orders").HTTPClient(payments.ID())
	resp, err := orders.Post(base+"/charges", "application/json", strings.NewReader(`{"order": "ord-1", "amount_cents": 1250}`))
	if err != nil {
		t.Fatal(err)
	}
	var c Charge
	json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || c.ID != 1 || c.Caller != "spiffe://demo.rampart.local/examples/orders" {
		t.Fatalf("orders' charge: %d %+v", resp.StatusCode, c)
	}
	if resp, err := orders.Get(base + "/charges/1"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("orders reading its charge: %v %v", resp, err)
	}

	// Any other service of the trust domain is refused by the policy, its
	// request never reaching the ledger.
	rogue := source("/examples/rogue").HTTPClient(payments.ID())
	resp, err = rogue.Post(base+"/charges", "application/json", strings.NewReader(`{"order": "ord-x", "amount_cents": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("rogue's charge: %d", resp.StatusCode)
	}
	if resp, err := orders.Get(base + "/charges/2"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("rogue's charge was recorded: %v %v", resp, err)
	}

	// A caller of another trust domain does not get past the handshake.
	other := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("other.org"))
	foreign, err := sdk.New(ctx, sdk.WithX509Source(other.SVID(spiffeid.RequireFromString("spiffe://other.org/examples/orders")), ca.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if _, err := foreign.HTTPClient(payments.ID()).Post(base+"/charges", "application/json", strings.NewReader(`{}`)); err == nil {
		t.Fatal("a caller of another trust domain was served")
	}
}
