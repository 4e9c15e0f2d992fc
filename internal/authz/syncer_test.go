package authz

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/sdk/sdktest"
)

// Issue 26 ("directories others control"): the policy cache directory (the
// proxy's --data, the SDK's WithPolicyCache) was used whatever its owner.
// Another local user who made it first (in /tmp, after a reboot) puts a
// policy there that lets their own service in; after a restart while the
// server is down, the proxy enforced it. Start refuses the directory, and
// loads nothing from it.
func TestSyncerRefusesACacheDirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-authz-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	payments := spiffeid.RequireFromString("spiffe://example.org/payments")
	forged, _ := json.Marshal(api.WorkloadSyncResponse{Revision: 1, Service: payments.String(), Policy: &api.Policy{
		Service: payments.String(), Seq: 1, Version: "forged",
		Source: "service: spiffe://example.org/payments\nrules:\n  - name: r\n    callers: [spiffe://example.org/mallory]\n    paths: ['/payments/{id}']\n"}})
	theirs := filepath.Join(tmp, "proxy-data")
	asNobody := func(script string) {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Stdin = strings.NewReader(string(forged))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s as uid 65534: %v %s", script, err, out)
		}
	}
	asNobody("mkdir -m 0777 " + theirs + " && cat > " + filepath.Join(theirs, cacheFile))

	ca := sdktest.NewCA(payments.TrustDomain())
	start := func(dir string) (*Guard, error) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		g := NewGuard(GuardConfig{Service: payments})
		sy := &Syncer{ServerAddr: "127.0.0.1:1", SVID: ca.SVID(payments), Bundles: ca.Bundle(), Guard: g, CacheDir: dir} // the server is down
		return g, sy.Start(ctx)
	}
	mallory := func(g *Guard) int {
		w := httptest.NewRecorder()
		g.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, request(t, "spiffe://example.org/mallory", "/payments/1"))
		return w.Code
	}
	g, err := start(theirs)
	if err == nil || !strings.Contains(err.Error(), "the policy cache directory "+theirs+" is owned by uid 65534") {
		t.Fatalf("Start with a cache directory uid 65534 made: %v", err)
	}
	if code := mallory(g); code != 403 {
		t.Fatalf("the forged cached policy let mallory in (%d)", code)
	}
	// Below it too: its owner could swap what is under it.
	if _, err := start(filepath.Join(theirs, "cache")); err == nil || !strings.Contains(err.Error(), "a parent of") {
		t.Fatalf("Start with a cache directory below one uid 65534 owns: %v", err)
	}
	// The same file in a directory of our own is the cache working.
	mine := filepath.Join(tmp, "mine")
	os.Mkdir(mine, 0o700)
	os.WriteFile(filepath.Join(mine, cacheFile), forged, 0o600)
	if g, err = start(mine); err != nil {
		t.Fatal(err)
	}
	if code := mallory(g); code == 403 {
		t.Fatal("the cache in our own directory was not loaded")
	}
}
