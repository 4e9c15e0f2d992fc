package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
)

// syncBody is a sync answer with n entries as the server writes them.
func syncBody(t testing.TB, n int) []byte {
	t.Helper()
	resp := api.SyncResponse{Revision: 9, Revoked: []string{"ab"}}
	for i := range n {
		resp.Entries = append(resp.Entries, api.Entry{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), SpiffeID: fmt.Sprintf("spiffe://example.org/absent/%d", i),
			ParentID: "spiffe://example.org/rampart/agent/node", Selectors: []string{fmt.Sprintf("unix:uid:%d", 20000+i)}, CreatedAt: time.Now()})
	}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// testAgent is an attested agent with no entries, without its loops.
func testAgent(t testing.TB) *Agent {
	h := testHeld(t)
	return &Agent{cfg: Config{DataDir: t.TempDir()}, td: spiffeid.RequireTrustDomainFromString("example.org"), revoked: map[string]struct{}{},
		workloads: map[string]*held{}, wanted: map[string]time.Time{}, warned: map[string]bool{}, changed: make(chan struct{}),
		wake: make(chan struct{}, 1), save: make(chan struct{}, 1), svid: h, bundle: h.Chain, now: time.Now, log: slog.New(slog.DiscardHandler)}
}

// sync applies body as the sync loop does.
func (a *Agent) syncFrom(t testing.TB, body []byte) {
	t.Helper()
	var resp api.SyncResponse
	b := entryBuilder{unservable: a.warnUnservable, hint: a.entries.len()}
	if err := decodeStreamed(bytes.NewReader(body), &resp, &b); err != nil {
		t.Fatal(err)
	}
	resp.Bundle = [][]byte{a.bundle[0].Raw}
	if err := a.applySync(resp, b.done()); err != nil {
		t.Fatal(err)
	}
}

// With 10,000 entries the agent holds each entry once, parsed: a few
// hundred bytes per entry, whatever the number of syncs and snapshots
// (each entry as received, parsed, copied into every snapshot with its
// own index was above 1 KB per entry and put the agent's RssAnon above
// SPIRE's). Snapshots share the entries: none copies them.
func TestEntriesHeldOnce(t *testing.T) {
	const n = 10000
	body := syncBody(t, n)
	a := testAgent(t)
	before := heapInUse()
	for range 3 {
		a.syncFrom(t, body)
		a.publishLocked()
	}
	retained := (int64(heapInUse()) - int64(before)) / n
	if a.entries.len() != n || len(a.snap.Unminted) != 0 || len(a.snap.Identities) != 0 {
		t.Fatalf("%d entries, snapshot with %d unminted and %d identities; want %d, 0, 0", a.entries.len(), len(a.snap.Unminted), len(a.snap.Identities), n)
	}
	t.Logf("retained %d B per entry", retained)
	if retained > 450 {
		t.Fatalf("the agent retains %d B per entry, want at most 450 (each entry held once)", retained)
	}
	runtime.KeepAlive(a)
}

// The sync is decoded one entry at a time into what the agent keeps:
// every other field of the answer as json.Unmarshal decodes it, every
// field of an entry the agent reads, and an entry that cannot be served
// named (once) and kept for the cache, not served.
func TestDecodeStreamed(t *testing.T) {
	want := api.SyncResponse{Revision: 12, Bundle: [][]byte{{1, 2}}, JWTBundle: json.RawMessage(`{"keys":[]}`), Revoked: []string{"aa", "bb"},
		ReissueUnlessRoot: "cafe", FederatedBundles: map[string]json.RawMessage{"other.org": json.RawMessage(`{"keys":[]}`)},
		Entries: []api.Entry{
			{ID: "e2", SpiffeID: "spiffe://example.org/b", Selectors: []string{"unix:uid:2", "unix:gid:5"}, Hint: "b", FederatesWith: []string{"other.org"},
				X509TTLSeconds: 60, DNSNames: []string{"b.example"}, ParentID: "spiffe://example.org/rampart/agent/n", Admin: true},
			{ID: "e1", SpiffeID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}},
			{ID: "e3", SpiffeID: "not a spiffe id", Selectors: []string{"unix:uid:1"}},
		}}
	body, _ := json.Marshal(want)
	var got api.SyncResponse
	var named []string
	b := entryBuilder{unservable: func(e api.Entry, err error) { named = append(named, e.ID) }}
	if err := decodeStreamed(bytes.NewReader(body), &got, &b); err != nil {
		t.Fatal(err)
	}
	es := b.done()
	entries := want.Entries
	want.Entries = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	if len(es.served) != 2 || es.served[0].EntryID != "e1" || es.find("e2") != 1 || es.find("e3") != -1 ||
		len(es.unservable) != 1 || !slices.Equal(named, []string{"e3"}) {
		t.Fatalf("entries: served %v, unservable %v, named %v", es.served, es.unservable, named)
	}
	e2 := es.entry(es.find("e2"))
	if !sameEntry(e2, entries[0]) || e2.Hint != "b" || !slices.Equal(e2.FederatesWith, []string{"other.org"}) {
		t.Fatalf("entry e2 kept as %+v, received %+v", e2, entries[0])
	}
	for _, bad := range []string{``, `[]`, `{"entries":{}}`, `{"entries":[{"id":1}]}`, `{"revision":1`, `{"revision":1}{}`} {
		if err := decodeStreamed(strings.NewReader(bad), &got, &entryBuilder{}); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

// A cache written before entries were held once (every field of each
// entry) loads; the cache written now loads, and an agent of the previous
// format reads its entries too.
func TestCacheFormats(t *testing.T) {
	h := testHeld(t)
	key, _ := x509.MarshalPKCS8PrivateKey(h.Key)
	sv := map[string]any{"spiffe_id": h.ID.String(), "chain": [][]byte{h.Chain[0].Raw}, "key": key, "renew_at": h.RenewAt, "received": h.Received,
		"entry": h.Entry}
	old := map[string]any{"version": 1, "trust_domain": "example.org", "agent": sv, "bundle": [][]byte{h.Chain[0].Raw}, "revision": 4,
		"revoked": []string{"ab"}, "workloads": map[string]any{"e1": sv},
		"entries": []api.Entry{{ID: "e1", SpiffeID: h.ID.String(), ParentID: "spiffe://example.org/rampart/agent/n", Selectors: []string{"unix:uid:1"},
			CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Admin: true, JWTTTLSeconds: 30}}}
	b, _ := json.Marshal(old)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cache.json"), b, 0o600)
	a := &Agent{cfg: Config{DataDir: dir}, warned: map[string]bool{}}
	if err := a.loadCache(); err != nil {
		t.Fatalf("the previous format did not load: %v", err)
	}
	if a.entries.len() != 1 || a.entries.find("e1") != 0 || a.workloads["e1"] == nil || a.revision != 4 {
		t.Fatalf("loaded %+v", a)
	}
	if err := a.saveCache(); err != nil {
		t.Fatal(err)
	}
	c := &Agent{cfg: Config{DataDir: dir}, warned: map[string]bool{}}
	if err := c.loadCache(); err != nil || c.entries.len() != 1 || !sameEntry(c.entries.entry(0), a.entries.entry(0)) {
		t.Fatalf("the new format did not round-trip: %v", err)
	}
	var prev struct {
		Entries []api.Entry `json:"entries"`
	}
	b, _ = os.ReadFile(filepath.Join(dir, "cache.json"))
	if err := json.Unmarshal(b, &prev); err != nil || len(prev.Entries) != 1 || prev.Entries[0].SpiffeID != h.ID.String() ||
		!slices.Equal(prev.Entries[0].Selectors, []string{"unix:uid:1"}) {
		t.Fatalf("the previous format's reader got %+v (%v)", prev.Entries, err)
	}
}

func BenchmarkSync10k(b *testing.B) {
	body := syncBody(b, 10000)
	a := testAgent(b)
	h := a.svid
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		var r api.SyncResponse
		eb := entryBuilder{hint: a.entries.len()}
		if err := decodeStreamed(bytes.NewReader(body), &r, &eb); err != nil {
			b.Fatal(err)
		}
		r.Bundle = [][]byte{h.Chain[0].Raw}
		if err := a.applySync(r, eb.done()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds()), "to-publish-us")
		a.mu.Lock()
		st, _ := a.cacheStateLocked()
		a.mu.Unlock()
		if err := a.writeCache(st); err != nil {
			b.Fatal(err)
		}
	}
}
