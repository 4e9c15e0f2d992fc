package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func backupHarness(t *testing.T, postgres string) (*harness, backup.Destination) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dest, err := backup.NewDir(filepath.Join(t.TempDir(), "dest"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", PostgresDSN: postgres, Backup: &BackupConfig{
		Destinations: []backup.Destination{dest}, Recipients: []age.Recipient{id.Recipient()}, RecipientNames: []string{id.Recipient().String()},
		DrillIdentities: []age.Identity{id}}}
	return newHarnessWith(t, cfg), dest
}

// TestDrillBootsTheRestoredServer makes a backup through the API, drills
// it (restore into a scratch directory, a second server started on it on
// loopback, every check), then corrupts the backup and drills again.
func TestDrillBootsTheRestoredServer(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := ""
			if backend == "postgres" {
				dsn = storetest.PostgresDSN(t)
			}
			h, dest := backupHarness(t, dsn)
			h.attest("node-1")
			ctx := context.Background()
			var res backup.Result
			if err := h.admin.Do(ctx, http.MethodPost, "/v1/backups", nil, &res); err != nil {
				t.Fatal(err)
			}
			if res.Seq != 1 || res.Manifest != nil && res.Manifest.Store.Backend != backend {
				t.Fatalf("backup: %+v", res)
			}
			var rep backup.DrillReport
			if err := h.admin.Do(ctx, http.MethodPost, "/v1/backups/drill", nil, &rep); err != nil {
				t.Fatal(err)
			}
			if !rep.OK || rep.Seq != 1 {
				t.Fatalf("drill: %+v", rep)
			}
			names := map[string]bool{}
			for _, c := range rep.Checks {
				names[c.Name] = c.OK
			}
			for _, n := range []string{"restore", "audit-tree", "server-start", "api", "ca-signs", "oauth-keys", "audit-verify", "store-counts"} {
				if !names[n] {
					t.Errorf("check %s missing or failed: %+v", n, rep.Checks)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(h.dir, "backup", "drills")); len(ents) != 0 {
				t.Errorf("the drill left %d scratch directories", len(ents))
			}
			var list []backup.Entry
			if err := h.admin.Do(ctx, http.MethodGet, "/v1/backups", nil, &list); err != nil || len(list) != 1 || list[0].Problem != "" {
				t.Fatalf("list: %+v, %v", list, err)
			}

			// Corrupt the store snapshot in the destination: the drill fails.
			objs, _ := dest.List(ctx, "objects/")
			for _, o := range objs {
				b, _ := dest.Get(ctx, o.Key, 1<<30)
				b[len(b)-1] ^= 1
				dest.Put(ctx, o.Key, b)
			}
			rep = backup.DrillReport{}
			if err := h.admin.Do(ctx, http.MethodPost, "/v1/backups/drill", nil, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.OK || !strings.Contains(rep.Error, "does not match its SHA-256") {
				t.Fatalf("drill of a corrupted backup: %+v", rep)
			}
		})
	}
}

func TestBackupAPIWithoutConfig(t *testing.T) {
	h := newHarness(t)
	err := h.admin.Do(context.Background(), http.MethodPost, "/v1/backups", nil, nil)
	wantStatus(t, err, http.StatusNotFound, "backups are not configured")
}
