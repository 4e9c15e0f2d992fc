package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

func kmsVersion(name string, v int, t time.Time) store.KMSKeyVersion {
	return store.KMSKeyVersion{Name: name, Version: v, State: store.KMSEnabled, Material: []byte{byte(v), 1, 2, 3}, CreatedAt: t}
}

func testKMSKeys(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	k := store.KMSKey{Name: "orders-pii", Type: "aes256-gcm", RotateEvery: 24 * time.Hour, CreatedAt: at(0), RotatedAt: at(0)}
	rev := revision(t, s)
	must(t, s.CreateKMSKey(ctx, k, kmsVersion("orders-pii", 1, at(0))))
	if revision(t, s) <= rev {
		t.Fatal("creating a key did not bump the revision")
	}
	wantErrIs(t, "create twice", s.CreateKMSKey(ctx, k, kmsVersion("orders-pii", 1, at(0))), store.ErrConflict)
	got, vs, err := s.GetKMSKey(ctx, "orders-pii")
	must(t, err)
	k.Latest, k.Generation = 1, 1
	wantEqual(t, "key", got, k)
	wantEqual(t, "versions", vs, []store.KMSKeyVersion{kmsVersion("orders-pii", 1, at(0))})
	_, _, err = s.GetKMSKey(ctx, "nope")
	wantErrIs(t, "get unknown", err, store.ErrNotFound)

	// Rotation must name the next version.
	wantErrIs(t, "skip a version", s.RotateKMSKey(ctx, kmsVersion("orders-pii", 3, at(time.Hour))), store.ErrConflict)
	wantErrIs(t, "rotate to the current version", s.RotateKMSKey(ctx, kmsVersion("orders-pii", 1, at(time.Hour))), store.ErrConflict)
	must(t, s.RotateKMSKey(ctx, kmsVersion("orders-pii", 2, at(time.Hour))))
	got, vs, err = s.GetKMSKey(ctx, "orders-pii")
	must(t, err)
	if got.Latest != 2 || !got.RotatedAt.Equal(at(time.Hour)) || got.Generation != 2 || len(vs) != 2 {
		t.Fatalf("after rotation: %+v %+v", got, vs)
	}

	// States: enabled -> disabled -> destroy-scheduled -> destroyed (final).
	any := []string{store.KMSEnabled, store.KMSDisabled}
	must(t, s.SetKMSVersionState(ctx, "orders-pii", 1, any, store.KMSDisabled, time.Time{}))
	wantErrIs(t, "from a state not listed", s.SetKMSVersionState(ctx, "orders-pii", 1, []string{store.KMSEnabled}, store.KMSDisabled, time.Time{}), store.ErrStateConflict)
	wantErrIs(t, "unknown version", s.SetKMSVersionState(ctx, "orders-pii", 9, any, store.KMSDisabled, time.Time{}), store.ErrNotFound)
	must(t, s.SetKMSVersionState(ctx, "orders-pii", 1, any, store.KMSDestroyScheduled, at(2*time.Hour)))
	done, err := s.DestroyDueKMSVersions(ctx, at(2*time.Hour-time.Second))
	must(t, err)
	if len(done) != 0 {
		t.Fatalf("destroyed before due: %+v", done)
	}
	done, err = s.DestroyDueKMSVersions(ctx, at(2*time.Hour))
	must(t, err)
	if len(done) != 1 || done[0].Version != 1 || done[0].Material != nil || done[0].State != store.KMSDestroyed {
		t.Fatalf("destroyed = %+v", done)
	}
	_, vs, err = s.GetKMSKey(ctx, "orders-pii")
	must(t, err)
	if vs[0].State != store.KMSDestroyed || vs[0].Material != nil || vs[1].Material == nil {
		t.Fatalf("after destroy: %+v", vs)
	}
	wantErrIs(t, "revive destroyed", s.SetKMSVersionState(ctx, "orders-pii", 1, []string{store.KMSEnabled, store.KMSDisabled, store.KMSDestroyScheduled}, store.KMSEnabled, time.Time{}), store.ErrStateConflict)

	must(t, s.CreateKMSKey(ctx, store.KMSKey{Name: "audit-sign", Type: "ed25519", CreatedAt: at(0), RotatedAt: at(0)},
		store.KMSKeyVersion{Name: "audit-sign", Version: 1, State: store.KMSEnabled, Material: []byte{1}, Public: []byte{2}, CreatedAt: at(0)}))
	list, err := s.ListKMSKeys(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Name != "audit-sign" || list[1].Name != "orders-pii" {
		t.Fatalf("list = %+v", list)
	}
}

// Two replicas rotating the same key at once: exactly one wins.
func testKMSRotateRace(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	must(t, s.CreateKMSKey(ctx, store.KMSKey{Name: "k", Type: "aes256-gcm", CreatedAt: at(0), RotatedAt: at(0)}, kmsVersion("k", 1, at(0))))
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.RotateKMSKey(ctx, kmsVersion("k", 2, at(time.Minute))) == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d rotations to version 2 succeeded, want 1", wins.Load())
	}
}
