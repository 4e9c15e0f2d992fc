package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/authz"
)

// kill -9 the server while four senders push batches as fast as it takes
// them; after a restart every acknowledged entry is in the log, once, and
// the log verifies.
func TestAuditSurvivesKill9DuringIngestion(t *testing.T) {
	s, a := setup(t)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/loadgen", "--parent", agentID, "--selector", myUID())
	// Only an enforcement point (a policy protects it) may ship, and only
	// decisions about itself (decision 0030).
	pol := filepath.Join(t.TempDir(), "loadgen.yaml")
	os.WriteFile(pol, []byte("service: spiffe://example.org/loadgen\nrules:\n  - name: none\n    callers: [spiffe://example.org/nobody]\n"), 0o600)
	mustCLI(t, s.adminEnv(), "policy", "put", pol)
	ctx := context.Background()
	src := x509Source(t, ctx, a)
	client := authz.ServerClient(s.addr, spiffeid.RequireTrustDomainFromString("example.org"), src, src)
	send := spool.APISender{Client: client, Timeout: 5 * time.Second}

	const senders, batch = 4, 100
	acked := make([]uint64, senders)
	streams := make([]string, senders)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	began := time.Now()
	for w := range senders {
		streams[w] = fmt.Sprintf("%032x", w+1)
		wg.Go(func() {
			var next uint64 = 1
			for {
				select {
				case <-stop:
					return
				default:
				}
				es := make([]*audit.Entry, batch)
				for i := range es {
					es[i] = &audit.Entry{V: 1, Time: time.Now(), Actor: audit.Actor{SpiffeID: "spiffe://example.org/caller"}, Action: "authz.decision", Target: "spiffe://example.org/loadgen",
						Outcome: audit.OutcomeSuccess, Stream: streams[w], Seq: next + uint64(i), Details: map[string]string{"pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}
				}
				up, err := send.Send(ctx, es)
				if err != nil {
					return // the server died
				}
				acked[w] = up
				next = up + 1
			}
		})
	}
	// Let it ingest for a while, then pull the plug mid-stream.
	eventually(t, 30*time.Second, "ingestion under way", func() error {
		if n, _ := audit.Count(filepath.Join(s.dir, "audit")); n < 20000 {
			return fmt.Errorf("%d entries so far", n)
		}
		return nil
	})
	s.kill()
	elapsed := time.Since(began)
	close(stop)
	wg.Wait()

	s2 := startServerAt(t, s.dir, s.addr) // Open repairs what the crash left
	s2.stop()
	seen := map[string]map[uint64]int{}
	err := audit.Scan(filepath.Join(s.dir, "audit"), 0, func(i int64, raw []byte) error {
		e, err := audit.ParseEntry(raw)
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Stream != "" {
			if seen[e.Stream] == nil {
				seen[e.Stream] = map[uint64]int{}
			}
			seen[e.Stream][e.Seq]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(0)
	for w := range senders {
		for q := uint64(1); q <= acked[w]; q++ {
			if seen[streams[w]][q] != 1 {
				t.Fatalf("stream %d: acknowledged entry %d is present %d times", w, q, seen[streams[w]][q])
			}
		}
		total += acked[w]
	}
	if total < 10000 {
		t.Fatalf("only %d entries acknowledged before the kill; the test did not load the server", total)
	}
	if out, err := cli(t, nil, "audit", "verify", "--data", s.dir); err != nil {
		t.Fatalf("audit verify after kill -9: %v\n%s", err, out)
	}
	t.Logf("%d acknowledged entries all present after kill -9 (%.0f entries/s acknowledged over mTLS before the kill)", total, float64(total)/elapsed.Seconds())
}
