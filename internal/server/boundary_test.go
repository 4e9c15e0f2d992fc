package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/api"
)

// An entry that selects only by executable path or hash names a program,
// not who runs it: any local user can start a copy of a binary (or exec it
// after connecting), so such an entry is refused with the rule named.
func TestEntryNeedsUIDOrGIDSelector(t *testing.T) {
	h := newHarness(t)
	parent := "spiffe://example.org/rampart/agent/node-1"
	for _, sels := range [][]string{
		{"unix:path:/usr/bin/payments"},
		{"unix:sha256:" + strings.Repeat("ab", 32)},
		{"unix:path:/usr/bin/payments", "unix:sha256:" + strings.Repeat("ab", 32)},
	} {
		err := h.admin.Do(context.Background(), http.MethodPost, "/v1/entries", api.Entry{SpiffeID: "spiffe://example.org/payments", ParentID: parent, Selectors: sels}, nil)
		wantStatus(t, err, http.StatusBadRequest, "needs a unix:uid or unix:gid selector")
	}
	for _, sels := range [][]string{
		{"unix:gid:1001", "unix:path:/usr/bin/payments"},
		{"unix:uid:1001", "unix:sha256:" + strings.Repeat("ab", 32)},
	} {
		if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/entries", api.Entry{SpiffeID: "spiffe://example.org/payments", ParentID: parent, Selectors: sels}, nil); err != nil {
			t.Fatalf("entry %v refused: %v", sels, err)
		}
	}
}

// The admin token is written 0600, and a token file others can read is
// refused at start with the fix in the message.
func TestAdminTokenFileMode(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, TrustDomain: td, Listen: "127.0.0.1:0"}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	path := filepath.Join(dir, "admin.token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token has mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err = New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable admin token file was accepted: %v", err)
	}
	// The refused start left nothing held: fixed, the server starts.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("after a refused start: %v", err)
	}
	srv.Close()
}
