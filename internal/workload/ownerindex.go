package workload

import (
	"cmp"
	"slices"
	"strings"

	"github.com/rampartsec/rampart/internal/selector"
)

// ownerIndex finds the entries a caller may match without reading every
// entry: each entry is filed under one of its unix:uid or unix:gid
// selectors (an entry matches only a caller who has all its selectors, so
// a caller without that one cannot match it). Entries with neither are
// kept apart and always read (they are not served: matching logs why).
//
// With 10,000 entries an agent read all of them, three times, on every
// Workload API call (SPIRE's agent looks its cache up by selector):
// FetchX509SVID ran at 0.43-0.69x SPIRE's rate. Now a call reads the
// entries filed under the caller's uid and groups.
//
// The positions are int32 and grouped in one slice (a key names its span
// of pos): one small map entry per owner, not a slice per owner.
type ownerIndex struct {
	by   map[selector.Selector]span // into pos
	pos  []int32                    // grouped by owner, each group ascending
	rest []int32
	// shared, when set, are the entries the positions are of (an agent's
	// Entries, shared by its snapshots); else they are of
	// Identities ++ Unminted.
	shared []Identity
}

type span struct{ lo, hi int32 }

// newOwnerIndex files the n entries at returns.
func newOwnerIndex(n int, at func(int) *Identity) *ownerIndex {
	type filed struct {
		key selector.Selector
		i   int32
	}
	fs := make([]filed, 0, n)
	idx := &ownerIndex{}
	for i := range n {
		key, ok := ownerKey(at(i).Selectors)
		if !ok {
			idx.rest = append(idx.rest, int32(i))
			continue
		}
		fs = append(fs, filed{key, int32(i)})
	}
	// Grouped by owner, each group in entry order.
	slices.SortStableFunc(fs, func(a, b filed) int {
		return cmp.Or(strings.Compare(a.key.Type, b.key.Type), strings.Compare(a.key.Value, b.key.Value))
	})
	idx.by = make(map[selector.Selector]span, len(fs))
	idx.pos = make([]int32, len(fs))
	for lo := 0; lo < len(fs); {
		hi := lo
		for ; hi < len(fs) && fs[hi].key == fs[lo].key; hi++ {
			idx.pos[hi] = fs[hi].i
		}
		idx.by[fs[lo].key] = span{int32(lo), int32(hi)}
		lo = hi
	}
	return idx
}

// positions are the positions filed under owner, and the rest, ascending.
func (idx *ownerIndex) positions(owner selector.Set) []int32 {
	var ps []int32
	for s := range owner {
		if sp, ok := idx.by[s]; ok {
			ps = append(ps, idx.pos[sp.lo:sp.hi]...)
		}
	}
	ps = append(ps, idx.rest...)
	slices.Sort(ps)
	return ps
}

// Index builds the snapshot's owner index over Identities ++ Unminted.
// A snapshot without one is read in full.
func (snap *Snapshot) Index() {
	snap.owners = newOwnerIndex(len(snap.Identities)+len(snap.Unminted), snap.at)
}

// Entries are the entries an agent may serve, parsed and filed by owner
// once (per sync), and shared by every snapshot built on them until the
// next: a snapshot that publishes a new SVID copies neither the entries
// nor the index (with 10,000 entries that copy was the agent's largest
// retained allocation after the entries themselves).
type Entries struct{ idx *ownerIndex }

// NewEntries files ids, which must be ordered by EntryID and carry no
// SVID (Chain and Key nil). ids is kept, not copied: the caller must not
// modify it afterwards.
func NewEntries(ids []Identity) *Entries {
	idx := newOwnerIndex(len(ids), func(i int) *Identity { return &ids[i] })
	idx.shared = ids
	return &Entries{idx: idx}
}

// IndexEntries makes es the snapshot's entries: those with an SVID are in
// Identities (ordered by EntryID, each one of es, with its Chain and Key),
// every other entry of es is served as unminted although Unminted stays
// empty.
func (snap *Snapshot) IndexEntries(es *Entries) { snap.owners = es.idx }

// at is the i-th entry of Identities ++ Unminted.
func (snap *Snapshot) at(i int) *Identity {
	if i < len(snap.Identities) {
		return &snap.Identities[i]
	}
	return &snap.Unminted[i-len(snap.Identities)]
}

// ownerKey is the selector an entry is filed under: its first unix:uid,
// else its first unix:gid.
func ownerKey(sels []selector.Selector) (selector.Selector, bool) {
	for _, t := range []string{selector.UnixUID, selector.UnixGID} {
		for _, s := range sels {
			if s.Type == t {
				return s, true
			}
		}
	}
	return selector.Selector{}, false
}

// candidates returns the entries a caller with the owner selectors
// (its unix:uid and unix:gid ones) may match, Identities first, each in
// its order; every entry without an index.
func (snap *Snapshot) candidates(owner selector.Set) []Identity {
	idx := snap.owners
	if idx == nil {
		return append(slices.Clip(snap.Identities), snap.Unminted...)
	}
	ps := idx.positions(owner)
	out := make([]Identity, 0, len(ps))
	if idx.shared == nil {
		for _, i := range ps {
			out = append(out, *snap.at(int(i)))
		}
		return out
	}
	// Shared entries: those with an SVID are taken from Identities (so
	// come first, in entry ID order as there), the others as they are.
	var unminted []Identity
	for _, i := range ps {
		e := &idx.shared[i]
		if j, ok := slices.BinarySearchFunc(snap.Identities, e.EntryID, func(id Identity, eid string) int {
			return strings.Compare(id.EntryID, eid)
		}); ok {
			out = append(out, snap.Identities[j])
			continue
		}
		unminted = append(unminted, *e)
	}
	return append(out, unminted...)
}
