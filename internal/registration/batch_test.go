package registration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/store"
)

const parentA = "spiffe://example.org/rampart/agent/node-1"

func spec(i int) EntrySpec {
	return EntrySpec{SpiffeID: fmt.Sprintf("spiffe://example.org/svc/%d", i), ParentID: parentA, Selectors: []string{fmt.Sprintf("unix:uid:%d", 1000+i)}}
}

// One bad entry of a batch: nothing is stored, and the error names the
// entry by index and the field.
func TestNewEntriesAllOrNone(t *testing.T) {
	ctx := context.Background()
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name  string
		bad   func(*EntrySpec)
		index int
		kind  error
		field string
	}{
		{"bad selector", func(s *EntrySpec) { s.Selectors = []string{"unix:uid:x"} }, 3, ErrInvalid, "entries[3]: selectors:"},
		{"path without uid", func(s *EntrySpec) { s.Selectors = []string{"unix:path:/bin/x"} }, 0, ErrInvalid, "entries[0]: selectors:"},
		{"foreign trust domain", func(s *EntrySpec) { s.SpiffeID = "spiffe://evil.org/x" }, 7, ErrInvalid, "entries[7]: spiffe_id:"},
		{"parent not an agent", func(s *EntrySpec) { s.ParentID = "spiffe://example.org/orders" }, 9, ErrInvalid, "entries[9]: parent_id:"},
		{"bad DNS name", func(s *EntrySpec) { s.DNSNames = []string{"Not A Name"} }, 2, ErrInvalid, "entries[2]: dns_names:"},
		{"hint with a newline", func(s *EntrySpec) { s.Hint = "a\nb" }, 4, ErrInvalid, "entries[4]: hint:"},
		{"hint too long", func(s *EntrySpec) { s.Hint = strings.Repeat("h", MaxHintLen+1) }, 4, ErrInvalid, "entries[4]: hint:"},
		{"expired already", func(s *EntrySpec) { s.ExpiresAt = time.Now().Add(-time.Minute) }, 5, ErrInvalid, "entries[5]: expires_at:"},
		{"ttl too long", func(s *EntrySpec) { s.X509TTLSeconds = 1 << 40 }, 6, ErrInvalid, "entries[6]: x509_ttl_seconds:"},
		{"duplicate of an earlier one", func(s *EntrySpec) { *s = spec(1) }, 8, ErrConflict, "entries[8]: entry entries[1] already gives"},
		{"federates with a stranger", func(s *EntrySpec) { s.FederatesWith = []string{"partner.example", "nobody.example"} }, 3, ErrInvalid,
			"entries[3]: federates_with: no federation relationship with nobody.example"},
		{"federates with itself", func(s *EntrySpec) { s.FederatesWith = []string{"spiffe://example.org"} }, 2, ErrInvalid, "entries[2]: federates_with: example.org is this trust domain"},
		{"federates with a bad name", func(s *EntrySpec) { s.FederatesWith = []string{"Partner.Example"} }, 1, ErrInvalid, "entries[1]: federates_with: \"Partner.Example\" is not a trust domain"},
		{"federates with a look-alike", func(s *EntrySpec) { s.FederatesWith = []string{"partner.example."} }, 1, ErrInvalid, "entries[1]: federates_with: federation: trust domain \"partner.example.\" has an empty label"},
		{"federates with a path", func(s *EntrySpec) { s.FederatesWith = []string{"spiffe://partner.example/x"} }, 1, ErrInvalid, "entries[1]: federates_with:"},
		{"federates with too many", func(s *EntrySpec) { s.FederatesWith = make([]string, MaxFederatesWith+1) }, 0, ErrInvalid, "entries[0]: federates_with: at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, st := newRegistrar(t)
			specs := make([]EntrySpec, 10)
			for i := range specs {
				specs[i] = spec(i)
				specs[i].ExpiresAt = future
			}
			tt.bad(&specs[tt.index])
			_, err := g.NewEntries(ctx, st, specs)
			var be *BatchError
			if !errors.As(err, &be) || be.Index != tt.index || !errors.Is(err, tt.kind) || !strings.HasPrefix(err.Error(), tt.field) {
				t.Fatalf("got %v, want %v at index %d starting %q", err, tt.kind, tt.index, tt.field)
			}
			if all, _ := st.ListEntries(ctx, ""); len(all) != 0 {
				t.Fatalf("%d entries stored from a refused batch", len(all))
			}
		})
	}
}

func TestEntryBatches(t *testing.T) {
	ctx := context.Background()
	g, st := newRegistrar(t)
	specs := []EntrySpec{spec(0), spec(1), spec(2)}
	specs[1].Hint, specs[1].Admin, specs[1].Downstream = "external", true, true
	es, err := g.NewEntries(ctx, st, specs)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetEntry(ctx, es[1].ID); got.Hint != "external" || !got.Admin || !got.Downstream {
		t.Fatalf("fields not stored: %+v", got)
	}
	// Creating one that exists already is a conflict naming the entry.
	if _, err := g.NewEntries(ctx, st, []EntrySpec{spec(5), spec(2)}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), es[2].ID) {
		t.Fatalf("re-creating an entry: %v", err)
	}

	// Update: every field replaced; a missing ID refuses the batch.
	up := spec(0)
	up.Selectors = []string{"unix:uid:4242"}
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: up}, {ID: "missing", Spec: spec(9)}}); !errors.Is(err, store.ErrNotFound) || !strings.HasPrefix(err.Error(), "entries[1]: id:") {
		t.Fatalf("update with a missing ID: %v", err)
	}
	if got, _ := st.GetEntry(ctx, es[0].ID); got.Selectors[0].Value != "1000" {
		t.Fatal("a refused update batch changed an entry")
	}
	// An update may not make two entries grant the same thing.
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: spec(2)}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("update into a duplicate: %v", err)
	}
	out, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: up}})
	if err != nil || out[0].ID != es[0].ID || !out[0].CreatedAt.Equal(es[0].CreatedAt) {
		t.Fatalf("update: %v %+v", err, out)
	}
	if got, _ := st.GetEntry(ctx, es[0].ID); got.Selectors[0].Value != "4242" {
		t.Fatalf("update not stored: %+v", got)
	}

	// Delete: all or none.
	if _, err := g.DeleteEntries(ctx, st, []string{es[0].ID, "missing"}); !errors.Is(err, store.ErrNotFound) || !strings.HasPrefix(err.Error(), "entries[1]: id:") {
		t.Fatalf("delete with a missing ID: %v", err)
	}
	if _, err := g.DeleteEntries(ctx, st, []string{es[0].ID, es[0].ID}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("delete naming one entry twice: %v", err)
	}
	if _, err := g.DeleteEntries(ctx, st, []string{es[0].ID, es[1].ID}); err != nil {
		t.Fatal(err)
	}
	if all, _ := st.ListEntries(ctx, ""); len(all) != 1 {
		t.Fatalf("%d entries left, want 1", len(all))
	}
	if _, err := g.NewEntries(ctx, st, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty batch: %v", err)
	}
}

// An expired entry gets no SVID; one that expires soon gets an SVID that
// ends with it.
func TestEntryExpiry(t *testing.T) {
	ctx := context.Background()
	g, st := newRegistrar(t)
	s := spec(0)
	s.ExpiresAt = g.Now().Add(10 * time.Minute)
	es, err := g.NewEntries(ctx, st, []EntrySpec{s})
	if err != nil {
		t.Fatal(err)
	}
	agent := spiffeid.RequireFromString(parentA)
	id := spiffeid.RequireFromString(s.SpiffeID)
	res, err := g.SignWorkloads(ctx, agent, []SignRequest{{EntryID: es[0].ID, CSR: csrFor(t, id)}})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	if na := res[0].Chain[0].NotAfter; na.After(s.ExpiresAt) {
		t.Fatalf("SVID ends %v, after its entry (%v)", na, s.ExpiresAt)
	}
	if Expired(es[0], g.Now()) || !Expired(es[0], s.ExpiresAt) {
		t.Fatal("Expired is wrong")
	}
	// Past the expiry (the store's copy, as the server sees it then).
	g.Now = func() time.Time { return s.ExpiresAt.Add(time.Second) }
	res, err = g.SignWorkloads(ctx, agent, []SignRequest{{EntryID: es[0].ID, CSR: csrFor(t, id)}})
	if err != nil || !errors.Is(res[0].Err, ErrNotEntitled) {
		t.Fatalf("SVID for an expired entry: %v %v", err, res[0].Err)
	}
	if _, _, _, err := g.SignJWT(ctx, st, agent, es[0].ID, []string{"a"}); !errors.Is(err, ErrNotEntitled) {
		t.Fatalf("JWT-SVID for an expired entry: %v", err)
	}
}

// federates_with: names read as trust domains (either form), stored
// sorted without repeats, filtered on, replaced by an update; a single
// create naming a trust domain without a relationship is refused too.
func TestEntryFederatesWith(t *testing.T) {
	ctx := context.Background()
	g, st := newRegistrar(t)
	s0 := spec(0)
	s0.FederatesWith = []string{"spiffe://partner.example", "partner.example"}
	es, err := g.NewEntries(ctx, st, []EntrySpec{s0, spec(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetEntry(ctx, es[0].ID); len(got.FederatesWith) != 1 || got.FederatesWith[0] != "partner.example" {
		t.Fatalf("stored federates_with %q", got.FederatesWith)
	}
	if got, _ := st.FindEntries(ctx, store.EntryFilter{FederatesWith: "partner.example"}); len(got) != 1 || got[0].ID != es[0].ID {
		t.Fatalf("filter by federates_with: %d entries", len(got))
	}
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[0].ID, Spec: spec(0)}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetEntry(ctx, es[0].ID); len(got.FederatesWith) != 0 {
		t.Fatalf("update kept federates_with %q", got.FederatesWith)
	}
	up := spec(1)
	up.FederatesWith = []string{"nobody.example"}
	if _, err := g.UpdateEntries(ctx, st, []EntryUpdate{{ID: es[1].ID, Spec: up}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update to a stranger: %v", err)
	}
	s2 := spec(2)
	s2.FederatesWith = []string{"nobody.example"}
	if _, err := g.NewEntry(ctx, s2); !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "federates_with: no federation relationship") {
		t.Fatalf("single create federating with a stranger: %v", err)
	}
	// Without a way to list relationships, no entry may federate.
	g.Federations = nil
	s3 := spec(3)
	s3.FederatesWith = []string{"partner.example"}
	if _, err := g.NewEntry(ctx, s3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no relationships known: %v", err)
	}
}
