package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store/storetest"
)

// TestOneAuditLogPerDeployment: replicas sharing PostgreSQL keep one audit
// log. A second replica that would keep its own is refused; one started
// with --audit-forward-to spools its entries and ships them to the
// holder, also while the holder is down (nothing lost, nothing twice), and
// sends agents and witnesses there.
func TestOneAuditLogPerDeployment(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	root := t.TempDir()
	holderDir := filepath.Join(root, "a")
	a := startServer(t, holderDir, "--postgres", dsn)
	kek := []string{"--postgres", dsn, "--kek-file", filepath.Join(holderDir, "keys", "kek")}

	// A second log keeper on the same database is refused, with the fix.
	out, err := cli(t, nil, append([]string{"server", "--data", filepath.Join(root, "c"), "--listen", "127.0.0.1:0", "--trust-domain", "example.org"}, kek...)...)
	if err == nil || !strings.Contains(out, "--audit-forward-to") {
		t.Fatalf("second replica keeping its own log: %v\n%s", err, out)
	}

	b := startServer(t, filepath.Join(root, "b"), append(kek, "--audit-forward-to", a.addr)...)
	want := map[string]int{} // agent name -> times it must be in the holder's log
	tokens := func(prefix string, n int) {
		for i := range n {
			name := fmt.Sprintf("%s-%d", prefix, i)
			mustCLI(t, b.adminEnv(), "token", "create", "--agent-name", name)
			want[name] = 1
		}
	}
	tokens("up", 5)
	// While the holder is down the forwarding replica keeps working and
	// keeps its entries on disk.
	a.stop()
	tokens("down", 5)
	a = startServerAt(t, holderDir, a.addr, "--postgres", dsn)
	tokens("back", 2)

	eventually(t, 30*time.Second, "every forwarded entry in the holder's log once", func() error {
		out, err := cli(t, nil, "audit", "query", "--data", holderDir, "--action", "join_token.create", "--json")
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			for name := range want {
				if strings.Contains(line, `/agent/`+name+`"`) {
					got[name]++
				}
			}
		}
		var bad []string
		for name, n := range want {
			if got[name] != n {
				bad = append(bad, fmt.Sprintf("%s %d times", name, got[name]))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("want each once, got %v", bad)
		}
		return nil
	})
	b.stop()
	a.stop()
	if out, err := cli(t, nil, "audit", "verify", "--data", holderDir); err != nil {
		t.Fatalf("holder's log: %v\n%s", err, out)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "b", "audit", "*")); len(m) != 0 {
		t.Fatalf("the forwarding replica kept a log of its own: %v", m)
	}
}

// A forwarding replica sends ingestion and witness requests to the holder.
func TestForwardingReplicaRedirects(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	root := t.TempDir()
	a := startServer(t, filepath.Join(root, "a"), "--postgres", dsn)
	b := startServer(t, filepath.Join(root, "b"), "--postgres", dsn, "--kek-file", filepath.Join(root, "a", "keys", "kek"), "--audit-forward-to", a.addr)
	client, _ := adminHTTP(t, b)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tc := range []struct{ method, path string }{{"POST", "/v1/audit/ingest"}, {"GET", "/v1/audit/checkpoint"}, {"GET", "/v1/audit/consistency?old=1&new=2"}} {
		req, _ := http.NewRequest(tc.method, "https://"+b.addr+tc.path, strings.NewReader("{}"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "https://"+a.addr+tc.path {
			t.Errorf("%s %s on the forwarding replica: %s to %q", tc.method, tc.path, resp.Status, resp.Header.Get("Location"))
		}
	}
}
