package workload

import (
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rampartsec/rampart/internal/selector"
)

// The owner index never hides an entry a caller matches: for random
// entries and callers, the entries that match among the candidates are
// exactly those that match among all entries, in the same order; and it
// reads fewer entries than there are.
func TestOwnerIndexFindsEveryMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	snap := &Snapshot{}
	for i := range 2000 {
		sels := randomSelectors(r)
		id := Identity{EntryID: fmt.Sprintf("e%05d", i), Selectors: sels}
		if i%3 == 0 {
			snap.Unminted = append(snap.Unminted, id)
		} else {
			snap.Identities = append(snap.Identities, id)
		}
	}
	full := *snap // no index: every entry
	snap.Index()
	ids := func(is []Identity, caller selector.Set) []string {
		var out []string
		for _, id := range is {
			if caller.Matches(id.Selectors) {
				out = append(out, id.EntryID)
			}
		}
		return out
	}
	for range 500 {
		caller := selector.NewSet(sel(selector.UnixUID, r.IntN(25)))
		for range r.IntN(4) {
			caller[sel(selector.UnixGID, r.IntN(25))] = struct{}{}
		}
		if r.IntN(2) == 0 {
			caller[selector.Selector{Type: selector.UnixPath, Value: "/bin/x"}] = struct{}{}
		}
		cands := snap.candidates(caller)
		if got, want := ids(cands, caller), ids(full.candidates(caller), caller); !slices.Equal(got, want) {
			t.Fatalf("caller %v: index found %v, all entries %v", caller, got, want)
		}
		if len(cands) >= len(snap.Identities)+len(snap.Unminted) {
			t.Fatalf("caller %v: the index read all %d entries", caller, len(cands))
		}
	}
}

// An agent's snapshot built on shared Entries (IndexEntries: the entries
// with an SVID in Identities, the others only in the Entries) offers a
// caller exactly the candidates, in the same order, as a snapshot holding
// them all (Identities ++ Unminted, indexed); the Entries are not copied
// into it, and one Entries serves every snapshot built on it.
func TestSharedEntriesMatchSnapshot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var all []Identity
	for i := range 2000 {
		sels := randomSelectors(r)
		all = append(all, Identity{EntryID: fmt.Sprintf("e%05d", i), Selectors: sels})
	}
	es := NewEntries(all)
	for round := range 3 {
		// Some entries minted (Chain set), as an agent publishes them.
		full, shared := &Snapshot{}, &Snapshot{}
		for _, id := range all {
			if r.IntN(10) < 3*round {
				id.Chain = []*x509.Certificate{{Raw: []byte(id.EntryID)}}
				full.Identities = append(full.Identities, id)
				shared.Identities = append(shared.Identities, id)
				continue
			}
			full.Unminted = append(full.Unminted, id)
		}
		full.Index()
		shared.IndexEntries(es)
		if shared.owners != es.idx || len(shared.Unminted) != 0 {
			t.Fatal("the snapshot copied the shared entries")
		}
		for range 300 {
			caller := selector.NewSet(sel(selector.UnixUID, r.IntN(25)))
			for range r.IntN(4) {
				caller[sel(selector.UnixGID, r.IntN(25))] = struct{}{}
			}
			got, want := shared.candidates(caller), full.candidates(caller)
			if len(got) != len(want) {
				t.Fatalf("round %d caller %v: %d candidates, want %d", round, caller, len(got), len(want))
			}
			for i := range got {
				if got[i].EntryID != want[i].EntryID || (got[i].Chain == nil) != (want[i].Chain == nil) {
					t.Fatalf("round %d caller %v: candidate %d is %s (minted %v), want %s (minted %v)", round, caller, i,
						got[i].EntryID, got[i].Chain != nil, want[i].EntryID, want[i].Chain != nil)
				}
			}
		}
	}
}

func sel(typ string, n int) selector.Selector {
	return selector.Selector{Type: typ, Value: fmt.Sprint(n)}
}

// randomSelectors is an entry's selectors: a uid, a gid, both, or neither
// (a path: never served, but must still be found), out of 20 of each.
func randomSelectors(r *rand.Rand) []selector.Selector {
	switch r.IntN(4) {
	case 0:
		return []selector.Selector{sel(selector.UnixUID, r.IntN(20))}
	case 1:
		return []selector.Selector{sel(selector.UnixGID, r.IntN(20))}
	case 2:
		return []selector.Selector{sel(selector.UnixGID, r.IntN(20)), sel(selector.UnixUID, r.IntN(20))}
	default:
		return []selector.Selector{{Type: selector.UnixPath, Value: "/bin/x"}}
	}
}
