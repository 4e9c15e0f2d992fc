package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/workload"
)

// entrySet is the agent's registration entries, each held once, in the
// form the Workload API serves (a workload.Identity, shared with every
// snapshot through index) plus what only the agent reads (entryOpts,
// position for position). It is built whole, from a sync or the cache,
// and never modified afterwards: a sync builds a new one.
//
// With 10,000 entries the agent held each one three times (as received,
// parsed, and copied into every snapshot with its own owner index) and
// its anonymous memory was above SPIRE's agent (51.5 MB against 47.8).
type entrySet struct {
	served []workload.Identity // ordered by EntryID; Chain and Key nil
	opts   []entryOpts
	index  *workload.Entries
	// unservable are the entries whose SPIFFE ID or selectors do not
	// parse, as received (rare): never served, kept for the cache.
	unservable []api.Entry
}

// entryOpts is what the agent keeps of an entry besides its Identity:
// what changes its SVID (sameEntry) and the cache writes back.
type entryOpts struct {
	X509TTLSeconds int64
	DNSNames       []string
}

// entryBuilder collects entries one at a time, as they are decoded.
type entryBuilder struct {
	set entrySet
	// hint is how many entries to expect (the last sync's): the lists
	// are allocated once, not grown by doubling.
	hint int
	// unservable is called for an entry that will not be served (its
	// SPIFFE ID or selectors do not parse, or it names no owner).
	unservable func(e api.Entry, err error)
}

func (b *entryBuilder) add(e api.Entry) {
	if b.set.served == nil && b.hint > 0 {
		b.set.served, b.set.opts = make([]workload.Identity, 0, b.hint), make([]entryOpts, 0, b.hint)
	}
	sels, err := selector.ParseAll(e.Selectors)
	var id spiffeid.ID
	if err == nil {
		id, err = spiffeid.FromString(e.SpiffeID)
	}
	if err != nil {
		b.set.unservable = append(b.set.unservable, e)
		if b.unservable != nil {
			b.unservable(e, err)
		}
		return
	}
	// Served (matching logs why it never matches) but named now.
	if err := selector.CheckEntry(sels); err != nil && b.unservable != nil {
		b.unservable(e, err)
	}
	b.set.served = append(b.set.served, workload.Identity{EntryID: e.ID, SpiffeID: id, Selectors: sels, Hint: e.Hint, FederatesWith: e.FederatesWith})
	b.set.opts = append(b.set.opts, entryOpts{X509TTLSeconds: e.X509TTLSeconds, DNSNames: e.DNSNames})
}

// done orders the entries by ID and files them by owner.
func (b *entryBuilder) done() *entrySet {
	s := &b.set
	byID := func(x, y workload.Identity) int { return strings.Compare(x.EntryID, y.EntryID) }
	if !slices.IsSortedFunc(s.served, byID) { // the server sends them ordered
		perm := make([]int, len(s.served))
		for i := range perm {
			perm[i] = i
		}
		slices.SortStableFunc(perm, func(i, j int) int { return byID(s.served[i], s.served[j]) })
		served, opts := make([]workload.Identity, len(perm)), make([]entryOpts, len(perm))
		for k, i := range perm {
			served[k], opts[k] = s.served[i], s.opts[i]
		}
		s.served, s.opts = served, opts
	}
	s.served, s.opts = slices.Clip(s.served), slices.Clip(s.opts)
	s.index = workload.NewEntries(s.served)
	out := *s
	return &out
}

// find returns the position of entry id, or -1.
func (s *entrySet) find(id string) int {
	if s == nil {
		return -1
	}
	i, ok := slices.BinarySearchFunc(s.served, id, func(e workload.Identity, id string) int { return strings.Compare(e.EntryID, id) })
	if !ok {
		return -1
	}
	return i
}

// len is the number of entries, served or not.
func (s *entrySet) len() int {
	if s == nil {
		return 0
	}
	return len(s.served) + len(s.unservable)
}

// entry returns the i-th served entry in the API's form (for an SVID's
// record of the entry it was minted for, and the cache).
func (s *entrySet) entry(i int) api.Entry {
	id := &s.served[i]
	sels := make([]string, len(id.Selectors))
	for k, sel := range id.Selectors {
		sels[k] = sel.String()
	}
	return api.Entry{ID: id.EntryID, SpiffeID: id.SpiffeID.String(), Selectors: sels, Hint: id.Hint, FederatesWith: id.FederatesWith,
		X509TTLSeconds: s.opts[i].X509TTLSeconds, DNSNames: s.opts[i].DNSNames}
}

// cachedEntry is an entry in the cache: api.Entry's names, only the
// fields the agent reads (an older cache's full entries load the same).
type cachedEntry struct {
	ID             string   `json:"id"`
	SpiffeID       string   `json:"spiffe_id"`
	Selectors      []string `json:"selectors"`
	X509TTLSeconds int64    `json:"x509_ttl_seconds,omitempty"`
	DNSNames       []string `json:"dns_names,omitempty"`
	Hint           string   `json:"hint,omitempty"`
	FederatesWith  []string `json:"federates_with,omitempty"`
}

func toCachedEntry(e api.Entry) cachedEntry {
	return cachedEntry{ID: e.ID, SpiffeID: e.SpiffeID, Selectors: e.Selectors, X509TTLSeconds: e.X509TTLSeconds,
		DNSNames: e.DNSNames, Hint: e.Hint, FederatesWith: e.FederatesWith}
}

// writeEntries writes the set as a JSON array, one entry at a time.
func (s *entrySet) writeEntries(w *bufio.Writer) error {
	enc := json.NewEncoder(w)
	w.WriteByte('[')
	n := 0
	var ce cachedEntry // one, not one per entry
	emit := func(e api.Entry) error {
		if n > 0 {
			w.WriteByte(',')
		}
		n++
		ce = toCachedEntry(e)
		return enc.Encode(&ce)
	}
	if s != nil {
		for i := range s.served {
			if err := emit(s.entry(i)); err != nil {
				return err
			}
		}
		for _, e := range s.unservable {
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	_, err := w.WriteString("]")
	return err
}

// decodeEntries reads a JSON array of entries (or null) from dec, one
// entry at a time, into b.
func decodeEntries(dec *json.Decoder, b *entryBuilder) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		return nil
	}
	if t != json.Delim('[') {
		return fmt.Errorf("entries: want an array, got %v", t)
	}
	var e api.Entry
	for dec.More() {
		e = api.Entry{} // not reused: add keeps its strings and slices
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("entries: %w", err)
		}
		b.add(e)
	}
	_, err = dec.Token() // ]
	return err
}

// decodeStreamed decodes a JSON object from r into v (a pointer to a
// struct), except its "entries" member, which is read one entry at a
// time into b: neither the document nor the entries as received are
// ever held whole (with 10,000 entries, a sync is 2-3 MB of JSON).
func decodeStreamed(r io.Reader, v any, b *entryBuilder) error {
	dec := json.NewDecoder(r)
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('{') {
		return errors.New("want a JSON object")
	}
	rest := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if strings.EqualFold(key, "entries") { // as encoding/json matches names
			if err := decodeEntries(dec, b); err != nil {
				return err
			}
			continue
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		rest[key] = raw
	}
	if _, err := dec.Token(); err != nil { // }
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	// The other members are small: decoded by v's own rules.
	other, err := json.Marshal(rest)
	if err != nil {
		return err
	}
	return json.Unmarshal(other, v)
}
