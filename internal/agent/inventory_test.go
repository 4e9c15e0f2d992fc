package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/inventory/verdict"
	"github.com/rampartsec/rampart/internal/workload"
)

func testExe(t *testing.T, opens *atomic.Int32) workload.Executable {
	t.Helper()
	file := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(file, []byte("#!/bin/sh\necho not a Go binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return workload.Executable{PID: 42, Path: file, Dev: 1, Ino: 2, Mtime: 3, Size: 4,
		Open: func() (*os.File, error) { opens.Add(1); return os.Open(file) }}
}

var orders = workload.Identity{EntryID: "e1", SpiffeID: spiffeid.RequireFromString("spiffe://example.org/orders")}

// TestExecutableHashedOnce: the same file version is hashed once however
// often it asks; the report carries it once, with its sighting.
func TestExecutableHashedOnce(t *testing.T) {
	var reports []api.InventoryReport
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep api.InventoryReport
		json.NewDecoder(r.Body).Decode(&rep)
		reports = append(reports, rep)
		json.NewEncoder(w).Encode(api.InventoryResponse{Generation: 1})
	}))
	defer srv.Close()
	c := &api.Client{BaseURL: srv.URL, HTTP: srv.Client()}
	r := newInventoryReporter(c, slog.New(slog.DiscardHandler), time.Now, time.Hour, filepath.Join(t.TempDir(), "scan-state.json"), nil)
	var opens atomic.Int32
	exe := testExe(t, &opens)
	for range 5 {
		if ids, refused := r.Inspect(context.Background(), exe, []workload.Identity{orders}); len(ids) != 1 || len(refused) != 0 {
			t.Fatalf("no gate: %v %v", ids, refused)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("the executable was opened %d times, want once", n)
	}
	if err := r.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var binaries, sightings int
	for _, rep := range reports {
		binaries += len(rep.Binaries)
		sightings += len(rep.Sightings)
	}
	if binaries != 1 || sightings != 1 {
		t.Errorf("reported %d binaries and %d sightings over %d reports, want 1 and 1", binaries, sightings, len(reports))
	}
}

// TestGateFailsClosedWithoutVerdict: once the agent knows a gate applies,
// a binary it has no verdict for is refused while the server is away.
func TestGateFailsClosedWithoutVerdict(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "scan-state.json")
	b, _ := json.Marshal(scanState{Generation: 3, Known: true, Policy: policyOf(api.ScanGate{Severity: "HIGH"}), Verdicts: map[string]*api.BinaryVerdict{}})
	os.WriteFile(state, b, 0o600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := &api.Client{BaseURL: srv.URL, HTTP: srv.Client()}
	r := newInventoryReporter(c, slog.New(slog.DiscardHandler), time.Now, time.Hour, state, nil)
	var opens atomic.Int32
	ids, refused := r.Inspect(context.Background(), testExe(t, &opens), []workload.Identity{orders})
	if len(ids) != 0 || len(refused) != 1 || refused[0].DryRun || !strings.Contains(refused[0].Reason, "no vulnerability verdict") {
		t.Errorf("gate with the server away: allowed %v, refused %+v; want refused, saying why", ids, refused)
	}
}

func policyOf(gs ...api.ScanGate) (p verdict.Policy) {
	p.Gates = gs
	return p
}
