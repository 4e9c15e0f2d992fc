package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/federation"
)

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Two servers, two trust domains: A federates with B over https_spiffe,
// takes B's bundle from B's endpoint, hands it to A's agents, and keeps it
// when B's endpoint stops authenticating as configured.
func TestFederationBetweenTwoServers(t *testing.T) {
	tdB := spiffeid.RequireTrustDomainFromString("b.example")
	fedAddr := freeLoopback(t)
	b := newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: tdB, Listen: "127.0.0.1:0",
		Federation: FederationConfig{Listen: fedAddr, Profile: federation.ProfileSPIFFE, RefreshHint: 2 * time.Minute}})
	a := newHarness(t)
	ctx := context.Background()

	// B's bundle, obtained out of band (its public API), bootstraps trust.
	var doc json.RawMessage
	if err := b.client("", nil).Do(ctx, http.MethodGet, "/v1/federation/bundle", nil, &doc); err != nil {
		t.Fatal(err)
	}
	rel := api.Federation{TrustDomain: "b.example", BundleURL: "https://" + fedAddr + "/", Profile: "https_spiffe",
		EndpointID: "spiffe://b.example/rampart/server", Bundle: doc}

	// A bundle of B offered for another trust domain is refused.
	bad := rel
	bad.TrustDomain, bad.EndpointID = "c.example", "spiffe://c.example/rampart/server"
	wantStatus(t, a.admin.Do(ctx, http.MethodPost, "/v1/federations", bad, nil), http.StatusBadRequest, "names another trust domain")
	// Federating with oneself is refused.
	self := rel
	self.TrustDomain, self.EndpointID = "example.org", "spiffe://example.org/rampart/server"
	wantStatus(t, a.admin.Do(ctx, http.MethodPost, "/v1/federations", self, nil), http.StatusBadRequest, "own trust domain")

	if err := a.admin.Do(ctx, http.MethodPost, "/v1/federations", rel, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, a.admin.Do(ctx, http.MethodPost, "/v1/federations", rel, nil), http.StatusConflict, "exists")

	// The refresher fetches from B's endpoint (the loop was kicked; a
	// direct call makes the test independent of its timing).
	waitEndpoint(t, fedAddr)
	if _, err := a.srv.fed.refresher.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	var got api.Federation
	if err := a.admin.Do(ctx, http.MethodGet, "/v1/federations/b.example", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.LastError != "" || got.X509Authorities == 0 || got.NextRefresh == nil || got.NextRefresh.Sub(a.clk.Now()) != 2*time.Minute {
		t.Fatalf("after a refresh: %+v", got)
	}

	// A's agents receive B's bundle if one of their entries federates
	// with B, and only then; an entry may not name a trust domain A has
	// no relationship with.
	agentCert, _ := a.attest("node-1")
	otherCert, _ := a.attest("node-2")
	var sync api.SyncResponse
	if err := a.client("", agentCert).Do(ctx, http.MethodGet, "/v1/agent/sync", nil, &sync); err != nil {
		t.Fatal(err)
	}
	if len(sync.FederatedBundles) != 0 {
		t.Fatalf("an agent with no federating entry was given %v", sync.FederatedBundles)
	}
	entry := func(agent, name string, fedWith ...string) api.Entry {
		return api.Entry{SpiffeID: "spiffe://example.org/" + name, ParentID: "spiffe://example.org/rampart/agent/" + agent,
			Selectors: []string{"unix:uid:1000"}, FederatesWith: fedWith}
	}
	wantStatus(t, a.admin.Do(ctx, http.MethodPost, "/v1/entries", entry("node-1", "x", "c.example"), nil), http.StatusBadRequest, "no federation relationship with c.example")
	for _, e := range []api.Entry{entry("node-1", "orders", "spiffe://b.example"), entry("node-2", "web")} {
		if err := a.admin.Do(ctx, http.MethodPost, "/v1/entries", e, nil); err != nil {
			t.Fatal(err)
		}
	}
	var listed []api.Entry
	if err := a.admin.Do(ctx, http.MethodGet, "/v1/entries?federates_with=b.example", nil, &listed); err != nil || len(listed) != 1 ||
		listed[0].SpiffeID != "spiffe://example.org/orders" || len(listed[0].FederatesWith) != 1 || listed[0].FederatesWith[0] != "b.example" {
		t.Fatalf("entries federating with b.example: %v %+v", err, listed)
	}
	var other api.SyncResponse
	if err := a.client("", otherCert).Do(ctx, http.MethodGet, "/v1/agent/sync", nil, &other); err != nil {
		t.Fatal(err)
	}
	if len(other.FederatedBundles) != 0 {
		t.Fatalf("node-2, whose entries federate with nobody, was given %v", other.FederatedBundles)
	}
	if err := a.client("", agentCert).Do(ctx, http.MethodGet, "/v1/agent/sync", nil, &sync); err != nil {
		t.Fatal(err)
	}
	if len(sync.Entries) != 1 || len(sync.Entries[0].FederatesWith) != 1 {
		t.Fatalf("the synced entry: %+v", sync.Entries)
	}
	fb, ok := sync.FederatedBundles["b.example"]
	if !ok {
		t.Fatalf("the agent's sync has no bundle of b.example: %v", sync.FederatedBundles)
	}
	held, err := federation.ParseBundle(tdB, fb)
	if err != nil || !held.HasX509Authority(b.srv.CA().X509Bundle()[0]) {
		t.Fatalf("the federated bundle does not hold B's root: %v", err)
	}

	// B's endpoint is expected to present another ID: refused, and the
	// bundle held stays.
	rel.EndpointID, rel.Bundle = "spiffe://b.example/impostor", nil
	if err := a.admin.Do(ctx, http.MethodPut, "/v1/federations/b.example", rel, nil); err != nil {
		t.Fatal(err)
	}
	// The loop (kicked by the update) may have tried first; either way
	// the next attempt is due within a minute.
	a.clk.Add(time.Minute)
	a.srv.fed.refresher.RefreshDue(ctx)
	if err := a.admin.Do(ctx, http.MethodGet, "/v1/federations/b.example", nil, &got); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.LastError, "unexpected ID") || got.X509Authorities == 0 {
		t.Fatalf("after a refused refresh: %+v", got)
	}

	// Deleting the relationship drops the bundle from agents' syncs.
	if err := a.admin.Do(ctx, http.MethodDelete, "/v1/federations/b.example", nil, nil); err != nil {
		t.Fatal(err)
	}
	sync = api.SyncResponse{}
	if err := a.client("", agentCert).Do(ctx, http.MethodGet, "/v1/agent/sync", nil, &sync); err != nil {
		t.Fatal(err)
	}
	if len(sync.FederatedBundles) != 0 {
		t.Errorf("after delete the sync still holds %v", sync.FederatedBundles)
	}
	wantStatus(t, a.admin.Do(ctx, http.MethodGet, "/v1/federations/b.example", nil, nil), http.StatusNotFound, "no relationship")
}

func waitEndpoint(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond) // the endpoint starts with Serve's loops
	}
	t.Fatalf("the bundle endpoint %s did not start", addr)
}
