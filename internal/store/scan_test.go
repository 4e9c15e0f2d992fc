package store_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func TestScanStoreSQLite(t *testing.T) {
	testScanStore(t, openSQLite(t, filepath.Join(t.TempDir(), "rampart.db")))
}

func TestScanStorePostgres(t *testing.T) {
	s, err := store.OpenPostgres(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	testScanStore(t, s)
}

func testScanStore(t *testing.T, st store.Store) {
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	s, ok := store.Scan(st)
	if !ok {
		t.Fatal("the store has no scan tables")
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err := s.ScanDB(ctx)
	if err != nil || m.Generation != 0 || m.Records != 0 {
		t.Fatalf("empty database: %+v, %v", m, err)
	}
	gen, err := s.ImportOSV(ctx, store.ScanDBMeta{Source: "a", ImportedAt: now, Digest: "d1"},
		[]store.OSVRecord{{ID: "GO-1", Modified: now, Raw: []byte(`{"id":"GO-1"}`)}, {ID: "GO-2", Raw: []byte(`{"id":"GO-2"}`)}})
	if err != nil || gen != 1 {
		t.Fatalf("import: %d, %v", gen, err)
	}
	// A second import replaces the first entirely.
	if gen, err = s.ImportOSV(ctx, store.ScanDBMeta{Source: "b", ImportedAt: now.Add(time.Hour), Digest: "d2"},
		[]store.OSVRecord{{ID: "GO-3", Raw: []byte(`{"id":"GO-3"}`)}}); err != nil || gen != 2 {
		t.Fatalf("second import: %d, %v", gen, err)
	}
	var ids []string
	if err := s.EachOSV(ctx, func(r store.OSVRecord) error { ids = append(ids, r.ID+"="+string(r.Raw)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != `GO-3={"id":"GO-3"}` {
		t.Errorf("records after the second import: %v", ids)
	}
	if m, _ = s.ScanDB(ctx); m.Source != "b" || m.Records != 1 || m.Digest != "d2" || !m.ImportedAt.Equal(now.Add(time.Hour)) {
		t.Errorf("meta %+v", m)
	}
	ex := store.ScanException{ID: "x1", Vuln: "GO-3", Service: "spiffe://td/a", Reason: "no fix yet", Expires: now.Add(24 * time.Hour), CreatedAt: now, CreatedBy: "admin"}
	if err := s.CreateScanException(ctx, ex); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateScanException(ctx, ex); err == nil {
		t.Error("a second exception with the same id was accepted")
	}
	if got, err := s.ListScanExceptions(ctx); err != nil || len(got) != 1 || got[0] != ex {
		t.Errorf("exceptions %+v, %v", got, err)
	}
	if err := s.DeleteScanException(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteScanException(ctx, "x1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
	if err := s.PutScanGate(ctx, store.ScanGate{Severity: "HIGH"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutScanGate(ctx, store.ScanGate{Entry: "e1", Severity: "CRITICAL", DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutScanGate(ctx, store.ScanGate{Severity: "MEDIUM", Unknown: "LOW"}); err != nil {
		t.Fatal(err)
	}
	gates, err := s.ListScanGates(ctx)
	if err != nil || len(gates) != 2 || gates[0] != (store.ScanGate{Severity: "MEDIUM", Unknown: "LOW"}) || gates[1] != (store.ScanGate{Entry: "e1", Severity: "CRITICAL", DryRun: true}) {
		t.Errorf("gates %+v, %v", gates, err)
	}
	s.PutScanGate(ctx, store.ScanGate{Entry: "e1"})
	if gates, _ = s.ListScanGates(ctx); len(gates) != 1 {
		t.Errorf("gate without severity not removed: %+v", gates)
	}
	if m, _ = s.ScanDB(ctx); m.Generation != 8 {
		t.Errorf("generation %d after 2 imports, 2 exception changes and 4 gate changes; want 8", m.Generation)
	}
	b := store.InventoryBinary{SHA256: "ab", Host: "h1", Info: []byte(`{"go_version":"go1.26"}`), FirstSeen: now}
	if created, err := s.PutInventoryBinary(ctx, b); err != nil || !created {
		t.Fatalf("put binary: %v %v", created, err)
	}
	if created, err := s.PutInventoryBinary(ctx, store.InventoryBinary{SHA256: "ab", Host: "h1", Info: []byte(`{}`), FirstSeen: now}); err != nil || created {
		t.Errorf("second put: created %v, %v", created, err)
	}
	if got, err := s.GetInventoryBinary(ctx, "ab", "h1"); err != nil || string(got.Info) != string(b.Info) {
		t.Errorf("binary %+v, %v (the first report is kept)", got, err)
	}
	// Another host's report of the same hash is its own.
	if created, err := s.PutInventoryBinary(ctx, store.InventoryBinary{SHA256: "ab", Host: "h2", Info: []byte(`{"lie":1}`), FirstSeen: now}); err != nil || !created {
		t.Errorf("h2's report: created %v, %v", created, err)
	}
	if got, _ := s.GetInventoryBinary(ctx, "ab", "h1"); string(got.Info) != string(b.Info) {
		t.Errorf("h2's report changed h1's: %s", got.Info)
	}
	if _, err := s.GetInventoryBinary(ctx, "cd", "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown binary: %v", err)
	}
	x := store.Sighting{Service: "spiffe://td/a", Host: "spiffe://td/agent/n1", SHA256: "ab", Exe: "/bin/a", FirstSeen: now, LastSeen: now.Add(time.Minute)}
	if err := s.UpsertSightings(ctx, []store.Sighting{x}); err != nil {
		t.Fatal(err)
	}
	// A late batch with older times moves nothing backwards.
	older := x
	older.FirstSeen, older.LastSeen, older.Exe = now.Add(time.Second), now.Add(30*time.Second), "/bin/a2"
	later := x
	later.FirstSeen, later.LastSeen = now.Add(time.Hour), now.Add(2*time.Hour)
	if err := s.UpsertSightings(ctx, []store.Sighting{older, later}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListSightings(ctx, store.SightingFilter{SHA256: "ab"})
	if err != nil || len(got) != 1 || !got[0].FirstSeen.Equal(now) || !got[0].LastSeen.Equal(now.Add(2*time.Hour)) {
		t.Errorf("sightings %+v, %v", got, err)
	}
	if got, _ := s.ListSightings(ctx, store.SightingFilter{SeenSince: now.Add(3 * time.Hour)}); len(got) != 0 {
		t.Errorf("seen since later: %+v", got)
	}
}
