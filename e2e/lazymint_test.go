package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// agentCache is what the agent's cache says it holds.
func agentCache(t *testing.T, a *agent) (entries int, svids map[string]json.RawMessage) {
	t.Helper()
	var c struct {
		Entries   []json.RawMessage          `json:"entries"`
		Workloads map[string]json.RawMessage `json:"workloads"`
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "data", "cache.json"))
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		return 0, nil
	}
	return len(c.Entries), c.Workloads
}

// The agent mints an SVID when a workload first asks for it, not for every
// entry parented to it; an SVID nobody asked for during its life is dropped
// at renewal, not renewed, and minted again when asked for.
func TestAgentMintsOnFirstRequest(t *testing.T) {
	s, a := setup(t)
	for i := range 30 { // workloads that are not on this host
		mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/absent/"+strconv.Itoa(i),
			"--parent", agentID, "--selector", "unix:uid:"+strconv.Itoa(54000+i))
	}
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID(), "--ttl", "8s")
	eventually(t, 30*time.Second, "the agent's sync", func() error {
		if n, _ := agentCache(t, a); n != 31 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	})
	if _, held := agentCache(t, a); len(held) != 0 {
		t.Fatalf("the agent minted %d SVIDs before any workload asked", len(held))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	sv, err := workloadapi.FetchX509SVID(ctx, addr(a))
	if err != nil || sv.ID.String() != "spiffe://example.org/orders" {
		t.Fatalf("first fetch: %v %v", sv, err)
	}
	t.Logf("first FetchX509SVID, minted on request: %v", time.Since(start))
	eventually(t, 10*time.Second, "the minted SVID in the cache", func() error {
		if _, held := agentCache(t, a); len(held) != 1 {
			return fmt.Errorf("%d SVIDs held, want only the one asked for", len(held))
		}
		return nil
	})
	// Nobody holds a stream or asks again: at renewal (40-50% of 8 s) the
	// SVID is dropped, not renewed.
	eventually(t, 20*time.Second, "the unused SVID dropped", func() error {
		if _, held := agentCache(t, a); len(held) != 0 {
			return fmt.Errorf("%d SVIDs held", len(held))
		}
		return nil
	})
	sv2, err := workloadapi.FetchX509SVID(ctx, addr(a))
	if err != nil || sv2.Certificates[0].SerialNumber.Cmp(sv.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("fetch after the drop: %v (same serial: %v)", err, err == nil)
	}
}
