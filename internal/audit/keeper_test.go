package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/objstore"
)

// memStore is an archive in memory that fails while down is set.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	down    bool
}

func (s *memStore) Put(_ context.Context, key string, data []byte, _ bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("archive unreachable")
	}
	s.objects[key] = append([]byte(nil), data...)
	return nil
}

func (s *memStore) Get(_ context.Context, key string, _ int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("archive unreachable")
	}
	b, ok := s.objects[key]
	if !ok {
		return nil, objstore.ErrNotFound
	}
	return b, nil
}

func (s *memStore) List(_ context.Context, prefix string) ([]objstore.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("archive unreachable")
	}
	var out []objstore.Object
	for k, b := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, objstore.Object{Key: k, Size: int64(len(b))})
		}
	}
	return out, nil
}

func actions(t *testing.T, l *Log, from int64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := from; i < l.Size(); i++ {
		b, err := l.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Action+"/"+e.Outcome]++
	}
	return out
}

// A pass of the keeper records the refusals being counted, signs a
// checkpoint covering them, seals the completed segments and copies them
// to the archive, and records the seal and the copies in the log; an
// archive that fails is recorded once, not at every retry; Close signs a
// checkpoint that covers everything, the log's last write.
func TestKeeperCheckpointsSealsAndArchives(t *testing.T) {
	dir := t.TempDir()
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l, err := OpenWith(dir, origin, Options{SegmentEntries: 512, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	signer, verifier := keys(t)
	fill(t, l, 0, 1100)
	record := func(ctx context.Context, es ...*Entry) {
		if _, err := l.AppendEntries(ctx, es...); err != nil {
			t.Error(err)
		}
	}
	refusals := NewRefusals(clk.Now, record)
	refusals.Add(&Entry{V: SchemaVersion, Time: clk.Now(), Actor: Actor{User: "anonymous"}, Action: "admin.auth", Outcome: OutcomeDenied}, "192.0.2.1:1")
	refusals.Add(&Entry{V: SchemaVersion, Time: clk.Now(), Actor: Actor{User: "anonymous"}, Action: "admin.auth", Outcome: OutcomeDenied}, "192.0.2.1:2")
	arch := &memStore{objects: map[string][]byte{}}
	var snapshots []int64
	reg := prometheus.NewRegistry()
	k := &Keeper{Log: l, Signer: signer, Archiver: NewArchiver(dir, arch), ArchiveName: "mem://bucket", Refusals: refusals,
		AfterCheckpoint: func(n int64) error { snapshots = append(snapshots, n); return nil },
		Record:          record, Actor: Actor{SpiffeID: "spiffe://example.org/rampart/server"}, Source: "server", Now: clk.Now, Registry: reg}
	k.init()
	last := int64(-1)
	k.checkpoint(&last, time.Minute)

	got := actions(t, l, 1100)
	if got["admin.auth/denied"] != 1 || got["audit.seal/success"] != 1 || got["audit.archive/success"] != 2 {
		t.Fatalf("recorded %v; want the refusal aggregate, one seal and two archived segments", got)
	}
	if len(snapshots) != 1 || snapshots[0] != 1101 {
		t.Fatalf("snapshots at %v, want one at 1101 (the entries and the refusal, before the seal records)", snapshots)
	}
	if n := testutil.ToFloat64(k.metrics.archived); n != 2 {
		t.Errorf("archived counter %v, want 2", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoint")); err != nil {
		t.Fatalf("no checkpoint published: %v", err)
	}

	// The archive goes away: the failure is recorded once, whatever the
	// number of retries, and counted each time.
	arch.mu.Lock()
	arch.down = true
	arch.mu.Unlock()
	fill(t, l, int(l.Size()), 10)
	before := l.Size()
	k.checkpoint(&last, time.Second)
	k.checkpoint(&last, time.Second)
	if got := actions(t, l, before); got["audit.archive/failure"] != 1 {
		t.Fatalf("after two failed copies, recorded %v; want one audit.archive failure", got)
	}
	if n := testutil.ToFloat64(k.metrics.archiveFailures); n != 2 {
		t.Errorf("archive failures counter %v, want 2", n)
	}

	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Uncovered != 0 {
		t.Fatalf("after Close: %+v; want a log the last checkpoint covers whole", rep)
	}
}

// LoadSigner creates the key once (0600, its verifier beside it) and
// loads the same key afterwards.
func TestLoadSigner(t *testing.T) {
	dir := t.TempDir()
	keyPath, pubPath := filepath.Join(dir, "keys", "audit.key"), filepath.Join(dir, "audit.pub")
	s1, err := LoadSigner(keyPath, pubPath, origin)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	if _, err := os.Stat(pubPath); err != nil {
		t.Fatal(err)
	}
	s2, err := LoadSigner(keyPath, pubPath, origin)
	if err != nil {
		t.Fatal(err)
	}
	if s1.KeyHash() != s2.KeyHash() || s1.Name() != origin {
		t.Fatal("the second start loaded another key")
	}
	os.WriteFile(keyPath, []byte("not a key"), 0o600)
	if _, err := LoadSigner(keyPath, pubPath, origin); err == nil || !strings.Contains(err.Error(), keyPath) {
		t.Fatalf("a damaged key: %v, want an error naming the file", err)
	}
}
