package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk"
)

// The SDK in-process gives the same guarantees as the proxy: this test
// process is the "ledger" service, served with sdk.Middleware and called
// through the orders proxy, and it calls payments' proxy with sdk.HTTPClient.
func TestSDKService(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	mustCLI(t, m.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/ledger", "--parent", agentID,
		"--selector", myUID(), "--selector", "unix:path:"+exe)
	m.putPolicy(`service: spiffe://example.org/ledger
rules:
  - name: orders-reads-ledger
    callers: [spiffe://example.org/orders]
    methods: [GET]
    paths: ["/ledger/{id}"]
`)
	m.putPolicy(`service: spiffe://example.org/payments
rules:
  - name: ledger-reads-payments
    callers: [spiffe://example.org/ledger]
    paths: ["/payments/{id}"]
`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var src *sdk.Source
	eventually(t, 20*time.Second, "sdk.New", func() error {
		c, cc := context.WithTimeout(ctx, 3*time.Second)
		defer cc()
		var err error
		src, err = sdk.New(c, sdk.WithSocket(m.a.socket), sdk.WithServer(m.s.addr), sdk.WithPolicyCache(t.TempDir()), sdk.WithAuditSpool(filepath.Join(m.binDir, "ledger-spool")))
		return err
	})
	defer src.Close()
	if src.ID().String() != "spiffe://example.org/ledger" {
		t.Fatalf("SDK identity %s", src.ID())
	}

	// Serve ledger with the SDK.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: src.ServerTLSConfig(), Handler: src.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, ok := sdk.CallerID(r.Context())
		fmt.Fprintf(w, "caller=%s ok=%v header=%s", caller, ok, r.Header.Get("X-Rampart-Admin"))
	}))}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+ln.Addr().String()+",spiffe://example.org/ledger")[1]
	var body string
	eventually(t, 10*time.Second, "ledger policy installed in the SDK", func() error {
		var code int
		code, body = get(t, "http://"+outA+"/ledger/7", map[string]string{"X-Rampart-Admin": "forged"})
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	if body != "caller=spiffe://example.org/orders ok=true header=" {
		t.Fatalf("SDK handler saw %q", body)
	}
	if code, body := get(t, "http://"+outA+"/admin", nil); code != 403 || !strings.Contains(body, "policy version") {
		t.Fatalf("SDK did not deny: %d %s", code, body)
	}
	// The SDK's decisions reach the audit log like the proxy's.
	eventually(t, 20*time.Second, "SDK decisions in the audit log", func() error {
		out := mustCLI(t, nil, "audit", "query", "--data", m.s.dir, "--action", "authz.decision", "--target", "spiffe://example.org/ledger", "--outcome", "denied", "--json")
		if !strings.Contains(out, `"path":"/admin"`) || !strings.Contains(out, `"source":"spiffe://example.org/ledger"`) {
			return fmt.Errorf("no denied /admin decision from the SDK yet: %s", out)
		}
		return nil
	})

	// Call payments' proxy with the SDK client.
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	resp, err := src.HTTPClient(spiffeid.RequireFromString("spiffe://example.org/payments")).Get("https://" + inB + "/payments/3")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var saw appSaw
	json.Unmarshal(b, &saw)
	if resp.StatusCode != 200 || len(saw.Caller) != 1 || saw.Caller[0] != "spiffe://example.org/ledger" {
		t.Fatalf("SDK client call: %d %s", resp.StatusCode, b)
	}
	// The SDK client refuses a server that is not who it expects.
	if _, err := src.HTTPClient(spiffeid.RequireFromString("spiffe://example.org/billing")).Get("https://" + inB + "/payments/3"); err == nil {
		t.Fatal("SDK client accepted the wrong server identity")
	}
	// A static policy for another service is refused.
	if err := src.SetPolicy([]byte("service: spiffe://example.org/other\nrules:\n  - name: a\n    callers: ['*']\n")); err == nil {
		t.Fatal("SetPolicy accepted a policy for another service")
	}
}
