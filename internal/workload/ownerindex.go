package workload

import (
	"slices"

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
type ownerIndex struct {
	by   map[selector.Selector][]int // into Identities ++ Unminted
	rest []int
}

// Index builds the snapshot's owner index. The agent calls it once per
// published snapshot; a snapshot without one is read in full.
func (snap *Snapshot) Index() {
	idx := &ownerIndex{by: map[selector.Selector][]int{}}
	for i := range len(snap.Identities) + len(snap.Unminted) {
		key, ok := ownerKey(snap.at(i).Selectors)
		if !ok {
			idx.rest = append(idx.rest, i)
			continue
		}
		idx.by[key] = append(idx.by[key], i)
	}
	snap.owners = idx
}

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
	if snap.owners == nil {
		return append(slices.Clip(snap.Identities), snap.Unminted...)
	}
	var is []int
	for s := range owner {
		is = append(is, snap.owners.by[s]...)
	}
	is = append(is, snap.owners.rest...)
	slices.Sort(is)
	out := make([]Identity, len(is))
	for k, i := range is {
		out[k] = *snap.at(i)
	}
	return out
}
