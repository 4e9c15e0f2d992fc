package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/store/storetest"
)

// The server on PostgreSQL instead of SQLite: a real server process against
// the real database, issuing to a real agent, and state surviving a restart.
func TestServerOnPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	root := t.TempDir()
	dir := filepath.Join(root, "server")
	s := startServer(t, dir, "--postgres", dsn)
	tok := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	a := startAgent(t, s, filepath.Join(root, "agent"), tok)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())
	eventually(t, 20*time.Second, "SVID from a PostgreSQL-backed server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := workloadapi.FetchX509SVID(ctx, addr(a))
		return err
	})
	s.stop()
	s2 := startServer(t, dir, "--postgres", dsn)
	var entries []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, s2.adminEnv(), "entry", "list", "--json")), &entries); err != nil || len(entries) != 1 {
		t.Fatalf("entries after restart on PostgreSQL: %v %v", err, entries)
	}
}
