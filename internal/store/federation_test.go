package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func TestFederationsSQLite(t *testing.T) { testFederations(t, storetest.SQLite(t, t.TempDir())) }

func TestFederationsPostgres(t *testing.T) {
	st, err := store.OpenPostgres(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testFederations(t, st)
}

func testFederations(t *testing.T, st store.Store) {
	ctx := context.Background()
	fs, ok := store.Federations(st)
	if !ok {
		t.Fatal("the store has no federation table")
	}
	t0 := time.Unix(1_700_000_000, 0).UTC()
	rev := func() int64 {
		r, err := st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := store.Federation{TrustDomain: "b.example", BundleURL: "https://b.example:8443/", Profile: "https_spiffe",
		EndpointID: "spiffe://b.example/rampart/server", Bundle: []byte(`{"keys":[]}`), CreatedAt: t0, UpdatedAt: t0, NextRefresh: t0}
	r0 := rev()
	if err := fs.CreateFederation(ctx, f); err != nil {
		t.Fatal(err)
	}
	if rev() == r0 {
		t.Error("creating a relationship did not bump the revision")
	}
	if err := fs.CreateFederation(ctx, f); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second create: %v, want ErrConflict", err)
	}
	got, err := fs.GetFederation(ctx, "b.example")
	if err != nil || got.BundleURL != f.BundleURL || string(got.Bundle) != string(f.Bundle) || !got.CreatedAt.Equal(t0) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	// A failed fetch keeps the bundle and does not wake agents.
	r1 := rev()
	if err := fs.RecordFederationAttempt(ctx, "b.example", t0.Add(time.Minute), t0.Add(2*time.Minute), "tls: bad certificate"); err != nil {
		t.Fatal(err)
	}
	got, _ = fs.GetFederation(ctx, "b.example")
	if got.LastError != "tls: bad certificate" || string(got.Bundle) != string(f.Bundle) || rev() != r1 {
		t.Errorf("after a failed fetch: %+v (revision %d → %d)", got, r1, rev())
	}
	// The same bundle again: no bump; a new one: a bump, error cleared.
	if err := fs.SetFederatedBundle(ctx, "b.example", f.Bundle, t0.Add(3*time.Minute), t0.Add(8*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if rev() != r1 {
		t.Error("an unchanged bundle bumped the revision")
	}
	nb := []byte(`{"keys":[{"use":"x509-svid"}]}`)
	if err := fs.SetFederatedBundle(ctx, "b.example", nb, t0.Add(4*time.Minute), t0.Add(9*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, _ = fs.GetFederation(ctx, "b.example")
	if string(got.Bundle) != string(nb) || got.LastError != "" || !got.NextRefresh.Equal(t0.Add(9*time.Minute)) || rev() == r1 {
		t.Errorf("after a new bundle: %+v", got)
	}
	got.BundleURL = "https://b.example:9443/"
	if err := fs.UpdateFederation(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := fs.UpdateFederation(ctx, store.Federation{TrustDomain: "c.example"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of an unknown relationship: %v", err)
	}
	list, err := fs.ListFederations(ctx)
	if err != nil || len(list) != 1 || list[0].BundleURL != "https://b.example:9443/" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := fs.DeleteFederation(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.GetFederation(ctx, "b.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := fs.DeleteFederation(ctx, "b.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}
