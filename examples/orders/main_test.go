package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/sdktest"
)

// orders charges through payments over mutual TLS, and refuses to talk to
// a server that is not payments, without an agent: sdktest's CA gives both
// sides their SVIDs.
func TestOrdersChargesThroughPayments(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := sdktest.NewCA(td)
	source := func(path string) *sdk.Source {
		s, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(spiffeid.RequireFromPath(td, path)), ca.Bundle()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// A stand-in for payments: its SDK, a policy letting orders charge.
	serve := func(path string) (*sdk.Source, string) {
		s := source(path)
		err := s.SetPolicy([]byte("service: spiffe://example.org" + path + "\nrules:\n  - name: orders\n    callers: [spiffe://example.org/examples/orders]\n"))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{TLSConfig: s.ServerTLSConfig(), Handler: s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := sdk.CallerID(r.Context())
			var c Charge
			json.NewDecoder(r.Body).Decode(&c)
			c.ID, c.Caller = 7, caller.String()
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(c)
		}))}
		go srv.ServeTLS(ln, "", "")
		t.Cleanup(func() { srv.Close() })
		return s, ln.Addr().String()
	}
	payments, addr := serve("/examples/payments")
	orders := source("/examples/orders")

	front := httptest.NewServer(newShop(orders, addr, payments.ID()).routes())
	defer front.Close()
	resp, err := http.Post(front.URL+"/orders", "application/json", strings.NewReader(`{"amount_cents": 1250}`))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Order  string `json:"order"`
		Charge Charge `json:"charge"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || got.Order != "ord-1" || got.Charge != (Charge{ID: 7, Order: "ord-1", Amount: 1250, Caller: "spiffe://example.org/examples/orders"}) {
		t.Fatalf("%d %+v", resp.StatusCode, got)
	}

	// A server presenting another SVID of the trust domain is not payments:
	// orders does not send it the charge.
	_, impostor := serve("/examples/impostor")
	front2 := httptest.NewServer(newShop(orders, impostor, payments.ID()).routes())
	defer front2.Close()
	resp, err = http.Post(front2.URL+"/orders", "application/json", strings.NewReader(`{"amount_cents": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "orders: payments:") {
		t.Fatalf("an impostor was charged: %d %s", resp.StatusCode, b)
	}
}
