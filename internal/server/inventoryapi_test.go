package server

import (
	"archive/zip"
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

// TestInventorySightingsOnlyForServedServices: an agent may report what
// runs as the services it serves, not as another agent's.
func TestInventorySightingsOnlyForServedServices(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cert1, _ := h.attest("node-1")
	h.attest("node-2")
	h.createEntry("spiffe://example.org/orders", "spiffe://example.org/rampart/agent/node-1")
	h.createEntry("spiffe://example.org/payments", "spiffe://example.org/rampart/agent/node-2")
	c := h.client("", cert1)
	sha := strings.Repeat("ab", 32)
	sight := func(svc string) error {
		return c.Do(ctx, http.MethodPost, "/v1/agent/inventory", api.InventoryReport{
			Binaries:  []api.InventoryBinary{{SHA256: sha, Size: 1}},
			Sightings: []api.InventorySighting{{SHA256: sha, Service: svc, Exe: "/bin/x", LastSeen: h.clk.Now()}}}, nil)
	}
	if err := sight("spiffe://example.org/orders"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, sight("spiffe://example.org/payments"), http.StatusForbidden, "serves no entry")
	var items []api.InventoryItem
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/inventory", nil, &items); err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Service != "spiffe://example.org/orders" || items[0].Host != "spiffe://example.org/rampart/agent/node-1" {
		t.Errorf("inventory: %+v", items)
	}
	// The admin API needs the admin token; the agent API an agent SVID.
	wantStatus(t, h.client("", cert1).Do(ctx, http.MethodGet, "/v1/inventory", nil, nil), http.StatusUnauthorized, "admin token")
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/agent/inventory", api.InventoryReport{}, nil), http.StatusUnauthorized, "")
}

// TestScanAdminAPIRefusesBadInput: a database upload that is not OSV, an
// exception without a reason or expiry, a gate on an unknown entry.
func TestScanAdminAPIRefusesBadInput(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("GO-1.json")
	w.Write([]byte(`{"id":"GO-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1.0.0"}]}]}]}`))
	zw.Close()
	wantStatus(t, h.admin.DoRaw(ctx, http.MethodPost, "/v1/scan/db", "application/zip", zb.Bytes(), nil), http.StatusBadRequest, "no introduced event")
	wantStatus(t, h.admin.DoRaw(ctx, http.MethodPost, "/v1/scan/db", "application/zip", []byte("not a zip"), nil), http.StatusBadRequest, "not a zip")
	future := h.clk.Now().Add(time.Hour)
	for _, tc := range []struct {
		ex   api.ScanException
		want string
	}{
		{api.ScanException{Reason: "r", Expires: future}, "vuln"},
		{api.ScanException{Vuln: "GO-1", Expires: future}, "reason"},
		{api.ScanException{Vuln: "GO-1", Reason: "r"}, "expires"},
		{api.ScanException{Vuln: "GO-1", Reason: "r", Expires: h.clk.Now().AddDate(2, 0, 0)}, "one year"},
		{api.ScanException{Vuln: "GO-1", Reason: "r", Expires: future, Binary: "xyz"}, "binary"},
		{api.ScanException{Vuln: "GO-1", Reason: "r", Expires: future, Service: "orders"}, "SPIFFE ID"},
	} {
		wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/scan/exceptions", tc.ex, nil), http.StatusBadRequest, tc.want)
	}
	wantStatus(t, h.admin.Do(ctx, http.MethodPut, "/v1/scan/gates", api.ScanGate{Entry: "nope", Severity: "HIGH"}, nil), http.StatusNotFound, "no registration entry")
	wantStatus(t, h.admin.Do(ctx, http.MethodPut, "/v1/scan/gates", api.ScanGate{Severity: "SEVERE"}, nil), http.StatusBadRequest, "severity")
	var g api.ScanGate
	if err := h.admin.Do(ctx, http.MethodPut, "/v1/scan/gates", api.ScanGate{Severity: "high"}, &g); err != nil || g.Severity != "HIGH" {
		t.Errorf("gate: %+v %v", g, err)
	}
}
