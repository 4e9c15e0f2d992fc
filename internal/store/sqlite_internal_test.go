package store

import (
	"path/filepath"
	"testing"
)

// TestSQLiteCommitsAreDurable checks the connection's settings: a commit
// (a revocation, a spent refresh token) must survive a power loss, which in
// WAL mode takes synchronous=FULL (2).
func TestSQLiteCommitsAreDurable(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.(*sqlStore).db
	var mode string
	var sync int
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	if err := db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
}
