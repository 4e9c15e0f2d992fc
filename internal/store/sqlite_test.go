package store_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func openSQLite(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSQLite(t *testing.T) {
	// One file per test, so a second open in the same test reopens it.
	var mu sync.Mutex
	paths := map[*testing.T]string{}
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		path, ok := paths[t]
		if !ok {
			path = filepath.Join(t.TempDir(), "rampart.db")
			paths[t] = path
		}
		mu.Unlock()
		return openSQLite(t, path)
	})
}

func TestSQLiteFileMode(t *testing.T) {
	dir := t.TempDir()
	s := openSQLite(t, filepath.Join(dir, "rampart.db"))
	defer s.Close()
	// Write something so SQLite creates its WAL and shared-memory files too.
	if err := s.UpsertAgent(t.Context(), store.Agent{SpiffeID: "spiffe://example.org/agent/a", LastSeen: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		info, err := f.Info()
		if err != nil {
			t.Fatal(err)
		}
		seen[f.Name()] = true
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", f.Name(), perm)
		}
	}
	for _, name := range []string{"rampart.db", "rampart.db-wal"} {
		if !seen[name] {
			t.Errorf("%s was not created (have %v)", name, seen)
		}
	}
}

// TestSQLiteNewerSchema checks that a program refuses a database migrated by
// a newer version of itself rather than running on a schema it does not know.
func TestSQLiteNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rampart.db")
	if err := openSQLite(t, path).Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`INSERT INTO schema_version (version) VALUES (99)`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite of a database at schema version 99 succeeded")
	}
	if !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Fatalf("error %q does not name the newer schema version", err)
	}
}

func TestSQLiteBadPath(t *testing.T) {
	for _, path := range []string{
		filepath.Join(t.TempDir(), "no", "such", "dir", "rampart.db"),
		filepath.Join(t.TempDir(), "what?.db"),
	} {
		if s, err := store.OpenSQLite(path); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded, want an error", path)
		}
	}
}
