package tessera

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tessera "github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
)

// writers is how many goroutines add entries at once, each waiting for its
// own entry to be durable before adding the next (as services waiting for
// an acknowledgement do).
const writers = 256

// duration of each measurement.
const duration = 5 * time.Second

// entry is a typical audit entry (an authorisation decision), ~300 bytes.
func entry(i int64) []byte {
	e := &audit.Entry{V: audit.SchemaVersion, Time: time.Unix(1_700_000_000, i), Action: "authz.decision",
		Target: "spiffe://example.org/payments", Outcome: audit.OutcomeSuccess, Source: "spiffe://example.org/payments",
		Details: map[string]string{"method": "GET", "path": fmt.Sprintf("/payments/%d", i), "rule": "orders-reads-payments", "policy_version": "3b745322a8ed"}}
	e.Actor.SpiffeID = "spiffe://example.org/orders"
	b, _ := e.Marshal()
	return b
}

func signer(t testing.TB) note.Signer {
	sk, _, err := note.GenerateKey(rand.Reader, "example.org/bench")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(sk)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run has `writers` goroutines call add until the time is up and returns
// entries made durable per second.
func run(add func(ctx context.Context, data []byte) error) (float64, error) {
	ctx := context.Background()
	var n, seq atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := add(ctx, entry(seq.Add(1))); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// TestSideBySide measures both logs and prints the figures (a test, not a
// benchmark, because each run needs a fresh log and a fixed duration).
func TestSideBySide(t *testing.T) {
	// Rampart's audit log: group commit, entries fsync'd before Append returns.
	l, err := audit.Open(t.TempDir(), "example.org/bench")
	if err != nil {
		t.Fatal(err)
	}
	rampart, err := run(func(ctx context.Context, data []byte) error {
		_, err := l.Append(ctx, data)
		return err
	})
	l.Close()
	if err != nil {
		t.Fatal(err)
	}

	// Tessera's POSIX driver with its defaults (and the checkpoint signer
	// it requires): Add returns a future resolved once the entry has its
	// durable index.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	driver, err := posix.New(ctx, posix.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	app, shutdown, _, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().WithCheckpointSigner(signer(t)))
	if err != nil {
		t.Fatal(err)
	}
	tess, err := run(func(ctx context.Context, data []byte) error {
		_, err := app.Add(ctx, tessera.NewEntry(data))()
		return err
	})
	shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers, %v each, ~%d-byte entries, durable before acknowledged", writers, duration, len(entry(1)))
	t.Logf("rampart audit log:        %8.0f entries/s", rampart)
	t.Logf("tessera POSIX (defaults): %8.0f entries/s", tess)
	t.Logf("ratio rampart/tessera: %.1fx", rampart/tess)
	if rampart <= 0 || tess <= 0 {
		t.Fatal("a measurement is empty")
	}
}
