package store_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// fill puts one or more rows in the tables a backup must carry, with NULLs,
// byte strings and booleans among them.
func fill(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.PutCAKey(ctx, store.CAKey{ID: "root-1", Kind: store.KindRoot, State: store.StateActive, CertDER: []byte{1, 2, 3}, WrappedKey: []byte("wrapped\x00key"), NotBefore: now, NotAfter: now.Add(time.Hour), CreatedAt: now}))
	must(st.PutCAKey(ctx, store.CAKey{ID: "offline", Kind: store.KindRoot, State: store.StateActive, CertDER: []byte{4}, NotBefore: now, NotAfter: now.Add(time.Hour), CreatedAt: now}))
	must(st.UpsertAgent(ctx, store.Agent{SpiffeID: "spiffe://example.org/agent/a", Serial: "ab", SVIDNotAfter: now, AttestedAt: now, LastSeen: now, Evicted: true, EvictedAt: now}))
	_, err := st.PutPolicy(ctx, store.Policy{Service: "spiffe://example.org/orders", Version: "v1", Source: []byte("rules: []\n\"quoted\" ü"), CreatedAt: now})
	must(err)
	must(st.DeletePolicy(ctx, "spiffe://example.org/orders", now))
	must(st.CreateKMSKey(ctx, store.KMSKey{Name: "k", Type: "aes256-gcm", Latest: 1, CreatedAt: now, RotatedAt: now}, store.KMSKeyVersion{Name: "k", Version: 1, State: "enabled", Material: []byte{9, 9}, CreatedAt: now}))
}

func snapshotOf(t *testing.T, st store.Store) ([]byte, store.SnapshotInfo) {
	t.Helper()
	var buf bytes.Buffer
	info, err := st.(store.Snapshotter).Snapshot(context.Background(), t.TempDir(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), info
}

func sameContents(t *testing.T, a, b store.Store) {
	t.Helper()
	ctx := context.Background()
	ka, _ := a.ListCAKeys(ctx)
	kb, _ := b.ListCAKeys(ctx)
	if len(ka) != 2 || !reflect.DeepEqual(ka, kb) {
		t.Errorf("CA keys differ:\n%+v\n%+v", ka, kb)
	}
	pa, _ := a.PolicyHistory(ctx, "spiffe://example.org/orders")
	pb, _ := b.PolicyHistory(ctx, "spiffe://example.org/orders")
	if len(pa) != 2 || !reflect.DeepEqual(pa, pb) {
		t.Errorf("policies differ:\n%+v\n%+v", pa, pb)
	}
	aa, _ := a.ListAgents(ctx)
	ab, _ := b.ListAgents(ctx)
	if len(aa) != 1 || !reflect.DeepEqual(aa, ab) {
		t.Errorf("agents differ:\n%+v\n%+v", aa, ab)
	}
	_, va, _ := a.GetKMSKey(ctx, "k")
	_, vb, _ := b.GetKMSKey(ctx, "k")
	if !reflect.DeepEqual(va, vb) {
		t.Errorf("KMS versions differ:\n%+v\n%+v", va, vb)
	}
	ra, _ := a.Revision(ctx)
	rb, _ := b.Revision(ctx)
	if ra == 0 || ra != rb {
		t.Errorf("revision %d, restored %d", ra, rb)
	}
}

func TestSnapshotSQLite(t *testing.T) {
	src := openSQLite(t, filepath.Join(t.TempDir(), "rampart.db"))
	defer src.Close()
	fill(t, src)
	data, info := snapshotOf(t, src)
	if info.Backend != "sqlite" || info.SchemaVersion < 5 || info.Tables["ca_keys"] != 2 || info.Tables["policies"] != 2 || info.Tables["revision"] != 1 {
		t.Fatalf("info = %+v", info)
	}
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := openSQLite(t, path)
	defer dst.Close()
	sameContents(t, src, dst)
	got, err := dst.(store.Snapshotter).Counts(context.Background())
	if err != nil || !reflect.DeepEqual(got, info) {
		t.Fatalf("counts of the copy = %+v, %v; want %+v", got, err, info)
	}
}

func TestSnapshotPostgres(t *testing.T) {
	ctx := context.Background()
	src, err := store.OpenPostgres(ctx, storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fill(t, src)
	data, info := snapshotOf(t, src)
	if !bytes.HasPrefix(data, []byte(`{"format":"rampart-store-dump","version":1,"backend":"postgres"`)) {
		t.Fatalf("dump starts %q", data[:80])
	}
	if info.Tables["ca_keys"] != 2 || info.Tables["kms_key_versions"] != 1 {
		t.Fatalf("info = %+v", info)
	}

	dsn := storetest.PostgresDSN(t)
	loaded, err := store.LoadPostgresDump(ctx, dsn, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, info) {
		t.Fatalf("loaded %+v, dumped %+v", loaded, info)
	}
	dst, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	sameContents(t, src, dst)

	// Into a schema that holds tables: refused, nothing changed.
	if _, err := store.LoadPostgresDump(ctx, dsn, bytes.NewReader(data)); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("load into a used schema: %v", err)
	}

	for name, tc := range map[string]struct {
		dump []byte
		want string
	}{
		"cut short":        {data[:len(data)-40], "cut short"},
		"no trailer":       {data[:bytes.LastIndex(data[:len(data)-1], []byte("\n"))+1], "cut short"},
		"row count edited": {bytes.Replace(data, []byte(`{"end":"ca_keys","rows":2}`), []byte(`{"end":"ca_keys","rows":3}`), 1), "the end says 3 rows"},
		"unknown table":    {bytes.Replace(data, []byte(`{"table":"agents"`), []byte(`{"table":"agentz"`), 1), `table "agentz" is not in schema version`},
		"wrong type":       {bytes.Replace(data, []byte(`"evicted","bool"`), []byte(`"evicted","int"`), 1), "is not int"},
		"sqlite file":      {[]byte("SQLite format 3\x00"), "header"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := store.LoadPostgresDump(ctx, storetest.PostgresDSN(t), bytes.NewReader(tc.dump))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
