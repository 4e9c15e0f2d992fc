// Package storetest is the conformance suite every store.Store implementation
// must pass, so the backends cannot drift apart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
)

// Run runs the suite. open must return a new, empty store for each t it has
// not seen; called again with the same t after that store was closed, it must
// return a store over the same data, which is how the suite checks that data
// survives a restart. Subtests run in parallel, so open must be safe to call
// concurrently. Run closes the stores open returns; open registers any other
// cleanup (temporary files, schemas) with t.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	h := harness{rawOpen: open}
	tests := []struct {
		name string
		fn   func(*testing.T, harness)
	}{
		{"CAKeys", testCAKeys},
		{"JoinTokens", testJoinTokens},
		{"JoinTokenRace", testJoinTokenRace},
		{"Agents", testAgents},
		{"Entries", testEntries},
		{"EntryBatches", testEntryBatches},
		{"SVIDs", testSVIDs},
		{"Revocations", testRevocations},
		{"PruneExpired", testPruneExpired},
		{"Revision", testRevision},
		{"Reopen", testReopen},
		{"ConcurrentWrites", testConcurrentWrites},
		{"Policies", testPolicies},
		{"Alerts", testAlerts},
		{"OAuthClients", testOAuthClients},
		{"OAuthUsers", testOAuthUsers},
		{"OAuthGrants", testOAuthGrants},
		{"OAuthGrantRace", testOAuthGrantRace},
		{"OAuthFamilies", testOAuthFamilies},
		{"OAuthFamilyRace", testOAuthFamilyRace},
		{"TOTPStepRace", testTOTPStepRace},
		{"DPoPProofs", testDPoPProofs},
		{"AttestChallenges", testAttestChallenges},
		{"KMSKeys", testKMSKeys},
		{"KMSRotateRace", testKMSRotateRace},
		{"ACMEEABKeys", testACMEEABKeys},
		{"ACMEAccounts", testACMEAccounts},
		{"ACMEEABBindRace", testACMEEABBindRace},
		{"ACMEOrders", testACMEOrders},
		{"ACMEReplaces", testACMEReplaces},
		{"ACMECerts", testACMECerts},
		{"ACMENonces", testACMENonces},
		{"Operators", testOperators},
		{"DeviceCodes", testDeviceCodes},
		{"Respond", testRespond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, h)
		})
	}
}

type harness struct {
	rawOpen func(t *testing.T) store.Store
}

// open returns a store that is closed when t ends.
func (h harness) open(t *testing.T) store.Store {
	t.Helper()
	s := h.rawOpen(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// t0 is the suite's "now": a fixed instant with nanoseconds, so that any loss
// of precision in storage shows.
var t0 = time.Date(2030, 6, 15, 12, 30, 45, 123456789, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

func wantEqual[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	must(t, err)
	return rev
}

func testCAKeys(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	keys, err := s.ListCAKeys(ctx)
	must(t, err)
	wantEqual(t, "ListCAKeys on an empty store", len(keys), 0)

	root := store.CAKey{ID: "root-1", Kind: store.KindRoot, State: store.StateActive,
		CertDER: []byte{0x30, 0x82, 0x00, 0xff}, WrappedKey: []byte("sealed-root"),
		NotBefore: at(-time.Hour), NotAfter: at(10 * 365 * 24 * time.Hour), CreatedAt: at(0)}
	inter := store.CAKey{ID: "inter-1", Kind: store.KindIntermediate, State: store.StatePrepared,
		CertDER: []byte{0x30, 0x01}, WrappedKey: []byte("sealed-inter"),
		NotBefore: at(0), NotAfter: at(24 * time.Hour), CreatedAt: at(time.Second)}
	offline := store.CAKey{ID: "aaa-offline", Kind: store.KindJWT, State: store.StateRetired,
		CertDER: []byte{0x30, 0x02}, WrappedKey: nil,
		NotBefore: at(0), NotAfter: at(time.Hour), CreatedAt: at(2 * time.Second)}
	for _, k := range []store.CAKey{root, inter, offline} {
		must(t, s.PutCAKey(ctx, k))
	}
	keys, err = s.ListCAKeys(ctx)
	must(t, err)
	wantEqual(t, "ListCAKeys (oldest first, nil wrapped key kept nil)", keys, []store.CAKey{root, inter, offline})

	dup := root
	dup.WrappedKey = []byte("attacker")
	wantErrIs(t, "PutCAKey with an existing ID", s.PutCAKey(ctx, dup), store.ErrConflict)

	must(t, s.SetCAKeyState(ctx, inter.ID, store.StateActive))
	must(t, s.SetCAKeyState(ctx, root.ID, store.StateRetired))
	wantErrIs(t, "SetCAKeyState of a missing key", s.SetCAKeyState(ctx, "missing", store.StateActive), store.ErrNotFound)

	keys, err = s.ListCAKeys(ctx)
	must(t, err)
	root.State, inter.State = store.StateRetired, store.StateActive
	wantEqual(t, "ListCAKeys after state changes (and the conflicting put ignored)", keys, []store.CAKey{root, inter, offline})

	// Unix nanoseconds end in 2262; a later time must be refused, not
	// stored as garbage.
	far := store.CAKey{ID: "far", Kind: store.KindRoot, State: store.StateActive, CertDER: []byte{1},
		NotBefore: at(0), NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), CreatedAt: at(0)}
	if err := s.PutCAKey(ctx, far); err == nil {
		t.Fatal("PutCAKey with NotAfter in 9999 succeeded, want an out-of-range error")
	}
}

func testJoinTokens(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	valid := store.JoinToken{Hash: []byte("hash-valid-0123456789abcdef01234"), AgentID: "spiffe://example.org/agent/a",
		ExpiresAt: at(time.Hour), CreatedAt: at(-time.Minute)}
	expired := store.JoinToken{Hash: []byte("hash-expired"), AgentID: "spiffe://example.org/agent/b",
		ExpiresAt: at(-time.Second), CreatedAt: at(-time.Hour)}
	expiresNow := store.JoinToken{Hash: []byte("hash-expires-now"), AgentID: "spiffe://example.org/agent/c",
		ExpiresAt: at(0), CreatedAt: at(-time.Hour)}
	for _, tok := range []store.JoinToken{valid, expired, expiresNow} {
		must(t, s.CreateJoinToken(ctx, tok))
	}
	wantErrIs(t, "CreateJoinToken with an existing hash", s.CreateJoinToken(ctx, valid), store.ErrConflict)

	used := valid
	used.UsedAt = at(0)
	// Run in order: the second consume of "valid" relies on the first.
	tests := []struct {
		name    string
		hash    []byte
		want    store.JoinToken
		wantErr error
	}{
		{"valid", valid.Hash, used, nil},
		{"already used", valid.Hash, store.JoinToken{}, store.ErrTokenInvalid},
		{"expired", expired.Hash, store.JoinToken{}, store.ErrTokenInvalid},
		{"expires exactly now", expiresNow.Hash, store.JoinToken{}, store.ErrTokenInvalid},
		{"unknown", []byte("no such hash"), store.JoinToken{}, store.ErrTokenInvalid},
		{"empty hash", nil, store.JoinToken{}, store.ErrTokenInvalid},
	}
	for _, tt := range tests {
		got, err := s.ConsumeJoinToken(ctx, tt.hash, at(0))
		if tt.wantErr != nil {
			wantErrIs(t, "ConsumeJoinToken "+tt.name, err, tt.wantErr)
			continue
		}
		must(t, err)
		wantEqual(t, "ConsumeJoinToken "+tt.name, got, tt.want)
	}
	// A used token stays used whatever now is given.
	_, err := s.ConsumeJoinToken(ctx, valid.Hash, at(-time.Minute))
	wantErrIs(t, "ConsumeJoinToken of a used token, earlier now", err, store.ErrTokenInvalid)
}

func testJoinTokenRace(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	tok := store.JoinToken{Hash: []byte("race"), AgentID: "spiffe://example.org/agent/race",
		ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.CreateJoinToken(ctx, tok))

	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.ConsumeJoinToken(ctx, tok.Hash, at(0))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrTokenInvalid):
			t.Errorf("consumer %d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent consumers won, want exactly 1", wins, n)
	}
}

func testAgents(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	b := store.Agent{SpiffeID: "spiffe://example.org/agent/b", Serial: "0b", SVIDNotAfter: at(time.Hour),
		AttestedAt: at(0), LastSeen: at(0)}
	a := store.Agent{SpiffeID: "spiffe://example.org/agent/a", Serial: "0a", SVIDNotAfter: at(2 * time.Hour),
		AttestedAt: at(-time.Hour), LastSeen: at(-time.Minute)}
	must(t, s.UpsertAgent(ctx, b))
	must(t, s.UpsertAgent(ctx, a))

	got, err := s.GetAgent(ctx, b.SpiffeID)
	must(t, err)
	wantEqual(t, "GetAgent", got, b)
	_, err = s.GetAgent(ctx, "spiffe://example.org/agent/missing")
	wantErrIs(t, "GetAgent of a missing agent", err, store.ErrNotFound)

	// Upsert replaces every field.
	b.Serial, b.LastSeen, b.SVIDNotAfter = "1b", at(time.Minute), at(3*time.Hour)
	must(t, s.UpsertAgent(ctx, b))
	all, err := s.ListAgents(ctx)
	must(t, err)
	wantEqual(t, "ListAgents (by SPIFFE ID, after upsert)", all, []store.Agent{a, b})

	must(t, s.EvictAgent(ctx, a.SpiffeID, at(5*time.Minute)))
	wantErrIs(t, "EvictAgent of a missing agent", s.EvictAgent(ctx, "spiffe://example.org/agent/missing", at(0)), store.ErrNotFound)
	got, err = s.GetAgent(ctx, a.SpiffeID)
	must(t, err)
	a.Evicted, a.EvictedAt = true, at(5*time.Minute)
	wantEqual(t, "GetAgent after eviction", got, a)

	// An upsert (a renewal that raced the eviction, or a stale record
	// written back) records the new SVID but never clears the eviction.
	again := store.Agent{SpiffeID: a.SpiffeID, Serial: "2a", SVIDNotAfter: at(4 * time.Hour), AttestedAt: at(time.Hour), LastSeen: at(time.Hour)}
	must(t, s.UpsertAgent(ctx, again))
	got, err = s.GetAgent(ctx, a.SpiffeID)
	must(t, err)
	stillEvicted := again
	stillEvicted.Evicted, stillEvicted.EvictedAt = true, at(5*time.Minute)
	wantEqual(t, "GetAgent after an upsert of the evicted agent", got, stillEvicted)

	// TouchAgent moves last_seen only.
	must(t, s.TouchAgent(ctx, a.SpiffeID, at(2*time.Hour)))
	got, err = s.GetAgent(ctx, a.SpiffeID)
	must(t, err)
	stillEvicted.LastSeen = at(2 * time.Hour)
	wantEqual(t, "GetAgent after TouchAgent", got, stillEvicted)

	// Readmitting (a join token spent after the eviction) clears it, and
	// moves the revision; readmitting an agent not evicted changes nothing.
	rev, err := s.Revision(ctx)
	must(t, err)
	must(t, s.ReadmitAgent(ctx, a.SpiffeID))
	got, err = s.GetAgent(ctx, a.SpiffeID)
	must(t, err)
	stillEvicted.Evicted, stillEvicted.EvictedAt = false, time.Time{}
	wantEqual(t, "GetAgent after ReadmitAgent", got, stillEvicted)
	rev2, err := s.Revision(ctx)
	must(t, err)
	if rev2 == rev {
		t.Error("ReadmitAgent did not move the revision")
	}
	must(t, s.ReadmitAgent(ctx, a.SpiffeID))
	if rev3, _ := s.Revision(ctx); rev3 != rev2 {
		t.Error("readmitting an agent not evicted moved the revision")
	}
}

func testEntries(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	const agentA, agentB = "spiffe://example.org/agent/a", "spiffe://example.org/agent/b"
	entries := []store.Entry{
		{ID: "e3", SpiffeID: "spiffe://example.org/db", ParentID: agentB,
			Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "0"}},
			CreatedAt: at(0)},
		{ID: "e1", SpiffeID: "spiffe://example.org/orders", ParentID: agentA,
			Selectors: []selector.Selector{{Type: selector.UnixPath, Value: "/usr/bin/orders"}, {Type: selector.UnixUID, Value: "1000"}},
			X509TTL:   90*time.Minute + 7*time.Nanosecond, JWTTTL: 5 * time.Minute,
			DNSNames: []string{"orders.internal", "orders"}, CreatedAt: at(time.Second)},
		{ID: "e2", SpiffeID: "spiffe://example.org/web", ParentID: agentA,
			Selectors: []selector.Selector{}, DNSNames: []string{}, CreatedAt: at(2 * time.Second)},
	}
	for _, e := range entries {
		must(t, s.CreateEntry(ctx, e))
	}
	e3, e1, e2 := entries[0], entries[1], entries[2]

	for _, e := range entries {
		got, err := s.GetEntry(ctx, e.ID)
		must(t, err)
		wantEqual(t, "GetEntry "+e.ID+" (exact round trip)", got, e)
	}

	dup := e1
	dup.SpiffeID = "spiffe://example.org/hijack"
	wantErrIs(t, "CreateEntry with an existing ID", s.CreateEntry(ctx, dup), store.ErrConflict)
	got, err := s.GetEntry(ctx, e1.ID)
	must(t, err)
	wantEqual(t, "entry after a conflicting create", got, e1)

	tests := []struct {
		parent string
		want   []store.Entry
	}{
		{"", []store.Entry{e1, e2, e3}},
		{agentA, []store.Entry{e1, e2}},
		{agentB, []store.Entry{e3}},
		{"spiffe://example.org/agent/none", nil},
	}
	for _, tt := range tests {
		got, err := s.ListEntries(ctx, tt.parent)
		must(t, err)
		wantEqual(t, fmt.Sprintf("ListEntries(%q)", tt.parent), got, tt.want)
	}

	must(t, s.DeleteEntry(ctx, e1.ID))
	_, err = s.GetEntry(ctx, e1.ID)
	wantErrIs(t, "GetEntry after delete", err, store.ErrNotFound)
	wantErrIs(t, "DeleteEntry twice", s.DeleteEntry(ctx, e1.ID), store.ErrNotFound)
	_, err = s.GetEntry(ctx, "never")
	wantErrIs(t, "GetEntry of a missing entry", err, store.ErrNotFound)
	all, err := s.ListEntries(ctx, "")
	must(t, err)
	wantEqual(t, "ListEntries after delete", all, []store.Entry{e2, e3})
}

func testSVIDs(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	const agentA, agentB = "spiffe://example.org/agent/a", "spiffe://example.org/agent/b"
	const orders, web = "spiffe://example.org/orders", "spiffe://example.org/web"
	agentSVID := store.IssuedSVID{Serial: "01", SpiffeID: agentA, AgentID: agentA, NotAfter: at(time.Hour), IssuedAt: at(-time.Hour)}
	ordersA := store.IssuedSVID{Serial: "02", SpiffeID: orders, AgentID: agentA, EntryID: "e1", NotAfter: at(time.Hour), IssuedAt: at(0)}
	ordersB := store.IssuedSVID{Serial: "03", SpiffeID: orders, AgentID: agentB, EntryID: "e1", NotAfter: at(2 * time.Hour), IssuedAt: at(0)}
	webA := store.IssuedSVID{Serial: "04", SpiffeID: web, AgentID: agentA, EntryID: "e2", NotAfter: at(time.Minute), IssuedAt: at(0)}
	expiredA := store.IssuedSVID{Serial: "05", SpiffeID: orders, AgentID: agentA, EntryID: "e1", NotAfter: at(0), IssuedAt: at(-time.Hour)}
	must(t, s.RecordSVIDs(ctx, []store.IssuedSVID{ordersB, agentSVID, webA}))
	must(t, s.RecordSVIDs(ctx, []store.IssuedSVID{expiredA, ordersA}))
	must(t, s.RecordSVIDs(ctx, nil))

	// A batch with a serial already recorded is refused as a whole.
	fresh := store.IssuedSVID{Serial: "06", SpiffeID: web, AgentID: agentB, NotAfter: at(time.Hour), IssuedAt: at(0)}
	wantErrIs(t, "RecordSVIDs with a recorded serial", s.RecordSVIDs(ctx, []store.IssuedSVID{fresh, ordersA}), store.ErrConflict)

	tests := []struct {
		name   string
		filter store.SVIDFilter
		now    time.Time
		want   []store.IssuedSVID
	}{
		{"all unexpired", store.SVIDFilter{}, at(0), []store.IssuedSVID{agentSVID, ordersA, ordersB, webA}},
		{"by SPIFFE ID", store.SVIDFilter{SpiffeID: orders}, at(0), []store.IssuedSVID{ordersA, ordersB}},
		{"by agent", store.SVIDFilter{AgentID: agentA}, at(0), []store.IssuedSVID{agentSVID, ordersA, webA}},
		{"by both", store.SVIDFilter{SpiffeID: orders, AgentID: agentB}, at(0), []store.IssuedSVID{ordersB}},
		{"no match", store.SVIDFilter{SpiffeID: "spiffe://example.org/none"}, at(0), nil},
		{"expired one included before its NotAfter", store.SVIDFilter{SpiffeID: orders, AgentID: agentA}, at(-time.Nanosecond), []store.IssuedSVID{ordersA, expiredA}},
		{"later: short-lived ones expired", store.SVIDFilter{}, at(time.Hour), []store.IssuedSVID{ordersB}},
	}
	for _, tt := range tests {
		got, err := s.ListSVIDs(ctx, tt.filter, tt.now)
		must(t, err)
		wantEqual(t, "ListSVIDs "+tt.name, got, tt.want)
	}
}

func testRevocations(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	r1 := store.Revocation{Serial: "0a", SpiffeID: "spiffe://example.org/orders", Reason: "agent evicted", RevokedAt: at(0), NotAfter: at(time.Hour)}
	r2 := store.Revocation{Serial: "0b", SpiffeID: "spiffe://example.org/web", Reason: "key compromise", RevokedAt: at(0), NotAfter: at(time.Minute)}
	must(t, s.AddRevocations(ctx, []store.Revocation{r2, r1}))
	must(t, s.AddRevocations(ctx, nil))

	// Revoking again is ignored: the first reason and time stand.
	again := r1
	again.Reason, again.RevokedAt = "operator", at(time.Second)
	r3 := store.Revocation{Serial: "0c", SpiffeID: "spiffe://example.org/db", Reason: "operator", RevokedAt: at(time.Second), NotAfter: at(2 * time.Hour)}
	must(t, s.AddRevocations(ctx, []store.Revocation{again, r3}))

	tests := []struct {
		now  time.Time
		want []store.Revocation
	}{
		{at(0), []store.Revocation{r1, r2, r3}},
		{at(time.Minute), []store.Revocation{r1, r3}},
		{at(2 * time.Hour), nil},
	}
	for _, tt := range tests {
		got, err := s.ListRevocations(ctx, tt.now)
		must(t, err)
		wantEqual(t, fmt.Sprintf("ListRevocations at %s", tt.now.Sub(t0)), got, tt.want)
	}
}

func testPruneExpired(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	// Expiring before now: pruned. At or after now: kept.
	svids := []store.IssuedSVID{
		{Serial: "01", SpiffeID: "spiffe://example.org/a", AgentID: "spiffe://example.org/agent", NotAfter: at(-time.Nanosecond), IssuedAt: at(-time.Hour)},
		{Serial: "02", SpiffeID: "spiffe://example.org/a", AgentID: "spiffe://example.org/agent", NotAfter: at(0), IssuedAt: at(-time.Hour)},
		{Serial: "03", SpiffeID: "spiffe://example.org/a", AgentID: "spiffe://example.org/agent", NotAfter: at(time.Hour), IssuedAt: at(-time.Hour)},
	}
	revs := []store.Revocation{
		{Serial: "01", SpiffeID: "spiffe://example.org/a", Reason: "r", RevokedAt: at(-time.Hour), NotAfter: at(-time.Nanosecond)},
		{Serial: "02", SpiffeID: "spiffe://example.org/a", Reason: "r", RevokedAt: at(-time.Hour), NotAfter: at(0)},
		{Serial: "03", SpiffeID: "spiffe://example.org/a", Reason: "r", RevokedAt: at(-time.Hour), NotAfter: at(time.Hour)},
	}
	tokens := []store.JoinToken{
		{Hash: []byte("expired"), AgentID: "spiffe://example.org/agent/x", ExpiresAt: at(-time.Nanosecond), CreatedAt: at(-time.Hour)},
		{Hash: []byte("expires-now"), AgentID: "spiffe://example.org/agent/y", ExpiresAt: at(0), CreatedAt: at(-time.Hour)},
		{Hash: []byte("live"), AgentID: "spiffe://example.org/agent/z", ExpiresAt: at(time.Hour), CreatedAt: at(-time.Hour)},
	}
	must(t, s.RecordSVIDs(ctx, svids))
	must(t, s.AddRevocations(ctx, revs))
	for _, tok := range tokens {
		must(t, s.CreateJoinToken(ctx, tok))
	}
	// A used token is pruned by expiry like any other; it stays until then.
	_, err := s.ConsumeJoinToken(ctx, []byte("live"), at(-time.Minute))
	must(t, err)

	must(t, s.PruneExpired(ctx, at(0)))

	// List as of long ago, so only pruning can have removed anything.
	past := at(-24 * time.Hour)
	gotSVIDs, err := s.ListSVIDs(ctx, store.SVIDFilter{}, past)
	must(t, err)
	wantEqual(t, "SVIDs after prune", gotSVIDs, svids[1:])
	gotRevs, err := s.ListRevocations(ctx, past)
	must(t, err)
	wantEqual(t, "revocations after prune", gotRevs, revs[1:])
	// The store cannot list tokens; whether a hash is still taken shows it.
	must(t, s.CreateJoinToken(ctx, tokens[0]))
	for _, tok := range tokens[1:] {
		wantErrIs(t, fmt.Sprintf("token %q after prune (want kept)", tok.Hash), s.CreateJoinToken(ctx, tok), store.ErrConflict)
	}
}

func testRevision(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	const agent = "spiffe://example.org/agent/a"
	must(t, s.UpsertAgent(ctx, store.Agent{SpiffeID: agent, Serial: "01", SVIDNotAfter: at(time.Hour), AttestedAt: at(0), LastSeen: at(0)}))
	entry := store.Entry{ID: "e1", SpiffeID: "spiffe://example.org/w", ParentID: agent,
		Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "1"}}, CreatedAt: at(0)}
	key := store.CAKey{ID: "k1", Kind: store.KindRoot, State: store.StatePrepared, CertDER: []byte{1}, NotBefore: at(0), NotAfter: at(time.Hour), CreatedAt: at(0)}
	rev := store.Revocation{Serial: "01", SpiffeID: agent, Reason: "r", RevokedAt: at(0), NotAfter: at(time.Hour)}

	// A change that fails must not bump the revision either.
	steps := []struct {
		name    string
		bump    bool
		wantErr bool
		do      func() error
	}{
		{name: "PutCAKey", bump: true, do: func() error { return s.PutCAKey(ctx, key) }},
		{name: "SetCAKeyState", bump: true, do: func() error { return s.SetCAKeyState(ctx, key.ID, store.StateActive) }},
		{name: "CreateEntry", bump: true, do: func() error { return s.CreateEntry(ctx, entry) }},
		{name: "AddRevocations", bump: true, do: func() error { return s.AddRevocations(ctx, []store.Revocation{rev}) }},
		{name: "EvictAgent", bump: true, do: func() error { return s.EvictAgent(ctx, agent, at(time.Minute)) }},

		{name: "PutCAKey of an existing ID", wantErr: true, do: func() error { return s.PutCAKey(ctx, key) }},
		{name: "SetCAKeyState of a missing key", wantErr: true, do: func() error { return s.SetCAKeyState(ctx, "missing", store.StateRetired) }},
		{name: "CreateEntry of an existing ID", wantErr: true, do: func() error { return s.CreateEntry(ctx, entry) }},
		{name: "EvictAgent of a missing agent", wantErr: true, do: func() error { return s.EvictAgent(ctx, agent+"/missing", at(0)) }},

		{name: "DeleteEntry", bump: true, do: func() error { return s.DeleteEntry(ctx, entry.ID) }},
		{name: "DeleteEntry of a missing entry", wantErr: true, do: func() error { return s.DeleteEntry(ctx, entry.ID) }},

		{name: "UpsertAgent", do: func() error {
			return s.UpsertAgent(ctx, store.Agent{SpiffeID: agent, Serial: "02", AttestedAt: at(0), LastSeen: at(time.Hour)})
		}},
		{name: "AddRevocations of revoked serials", do: func() error { return s.AddRevocations(ctx, []store.Revocation{rev}) }},
		{name: "CreateJoinToken", do: func() error {
			return s.CreateJoinToken(ctx, store.JoinToken{Hash: []byte("t"), AgentID: agent, ExpiresAt: at(time.Hour), CreatedAt: at(0)})
		}},
		{name: "ConsumeJoinToken", do: func() error { _, err := s.ConsumeJoinToken(ctx, []byte("t"), at(0)); return err }},
		{name: "RecordSVIDs", do: func() error {
			return s.RecordSVIDs(ctx, []store.IssuedSVID{{Serial: "09", SpiffeID: agent, AgentID: agent, NotAfter: at(time.Hour), IssuedAt: at(0)}})
		}},
		{name: "PruneExpired", do: func() error { return s.PruneExpired(ctx, at(2*time.Hour)) }},
		{name: "reads", do: func() error {
			_, err1 := s.ListCAKeys(ctx)
			_, err2 := s.GetAgent(ctx, agent)
			_, err3 := s.ListAgents(ctx)
			_, err4 := s.ListEntries(ctx, "")
			_, err5 := s.ListSVIDs(ctx, store.SVIDFilter{}, at(0))
			_, err6 := s.ListRevocations(ctx, at(0))
			_, err7 := s.Revision(ctx)
			return errors.Join(err1, err2, err3, err4, err5, err6, err7)
		}},
	}
	for _, st := range steps {
		before := revision(t, s)
		err := st.do()
		switch {
		case st.wantErr && err == nil:
			t.Fatalf("%s succeeded, want an error", st.name)
		case !st.wantErr && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		}
		after := revision(t, s)
		switch {
		case st.bump && after <= before:
			t.Errorf("%s: revision %d -> %d, want it to increase", st.name, before, after)
		case !st.bump && after != before:
			t.Errorf("%s: revision %d -> %d, want it unchanged", st.name, before, after)
		}
	}
}

func testReopen(t *testing.T, h harness) {
	ctx := t.Context()
	s := h.rawOpen(t)
	key := store.CAKey{ID: "k", Kind: store.KindRoot, State: store.StateActive, CertDER: []byte{1, 2, 3}, WrappedKey: []byte("w"),
		NotBefore: at(0), NotAfter: at(time.Hour), CreatedAt: at(0)}
	agent := store.Agent{SpiffeID: "spiffe://example.org/agent/a", Serial: "01", SVIDNotAfter: at(time.Hour), AttestedAt: at(0), LastSeen: at(0)}
	entry := store.Entry{ID: "e", SpiffeID: "spiffe://example.org/w", ParentID: agent.SpiffeID,
		Selectors: []selector.Selector{{Type: selector.UnixGID, Value: "7"}}, X509TTL: time.Hour, CreatedAt: at(0)}
	svid := store.IssuedSVID{Serial: "01", SpiffeID: agent.SpiffeID, AgentID: agent.SpiffeID, NotAfter: at(time.Hour), IssuedAt: at(0)}
	rev := store.Revocation{Serial: "02", SpiffeID: entry.SpiffeID, Reason: "r", RevokedAt: at(0), NotAfter: at(time.Hour)}
	tok := store.JoinToken{Hash: []byte("tok"), AgentID: agent.SpiffeID, ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.PutCAKey(ctx, key))
	must(t, s.UpsertAgent(ctx, agent))
	must(t, s.CreateEntry(ctx, entry))
	must(t, s.RecordSVIDs(ctx, []store.IssuedSVID{svid}))
	must(t, s.AddRevocations(ctx, []store.Revocation{rev}))
	must(t, s.CreateJoinToken(ctx, tok))
	wantRev := revision(t, s)
	must(t, s.Close())

	s = h.open(t)
	keys, err := s.ListCAKeys(ctx)
	must(t, err)
	wantEqual(t, "CA keys after reopen", keys, []store.CAKey{key})
	gotAgent, err := s.GetAgent(ctx, agent.SpiffeID)
	must(t, err)
	wantEqual(t, "agent after reopen", gotAgent, agent)
	gotEntry, err := s.GetEntry(ctx, entry.ID)
	must(t, err)
	wantEqual(t, "entry after reopen", gotEntry, entry)
	svids, err := s.ListSVIDs(ctx, store.SVIDFilter{}, at(0))
	must(t, err)
	wantEqual(t, "SVIDs after reopen", svids, []store.IssuedSVID{svid})
	revs, err := s.ListRevocations(ctx, at(0))
	must(t, err)
	wantEqual(t, "revocations after reopen", revs, []store.Revocation{rev})
	wantEqual(t, "revision after reopen", revision(t, s), wantRev)
	got, err := s.ConsumeJoinToken(ctx, tok.Hash, at(0))
	must(t, err)
	wantEqual(t, "join token agent after reopen", got.AgentID, tok.AgentID)
}

// testConcurrentWrites checks that the store is safe for concurrent use and
// that concurrent changes each bump the revision exactly once.
func testConcurrentWrites(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	start := revision(t, s)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%02d", w, i)
				agent := "spiffe://example.org/agent/" + id
				errs <- s.UpsertAgent(ctx, store.Agent{SpiffeID: agent, Serial: id, AttestedAt: at(0), LastSeen: at(0)})
				errs <- s.CreateEntry(ctx, store.Entry{ID: id, SpiffeID: "spiffe://example.org/" + id, ParentID: agent, CreatedAt: at(0)})
				errs <- s.AddRevocations(ctx, []store.Revocation{{Serial: id, SpiffeID: agent, Reason: "r", RevokedAt: at(0), NotAfter: at(time.Hour)}})
				if _, err := s.ListEntries(ctx, agent); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	agents, err := s.ListAgents(ctx)
	must(t, err)
	entries, err := s.ListEntries(ctx, "")
	must(t, err)
	revs, err := s.ListRevocations(ctx, at(0))
	must(t, err)
	wantEqual(t, "agents, entries, revocations stored", []int{len(agents), len(entries), len(revs)}, []int{workers * each, workers * each, workers * each})
	// Two bumps per iteration: the entry and the revocation.
	wantEqual(t, "revision after concurrent changes", revision(t, s)-start, int64(2*workers*each))
}

func testPolicies(t *testing.T, h harness) {
	ctx := t.Context()
	s := h.open(t)
	const svc = "spiffe://example.org/payments"
	_, err := s.GetPolicy(ctx, svc)
	wantErrIs(t, "get before put", err, store.ErrNotFound)
	wantErrIs(t, "delete before put", s.DeletePolicy(ctx, svc, at(0)), store.ErrNotFound)

	r0 := revision(t, s)
	p1, err := s.PutPolicy(ctx, store.Policy{Service: svc, Version: "v1hash", Source: []byte("rules: [1]"), CreatedAt: at(time.Second)})
	must(t, err)
	wantEqual(t, "first seq", p1.Seq, int64(1))
	if revision(t, s) <= r0 {
		t.Fatal("PutPolicy did not bump the revision")
	}
	p2, err := s.PutPolicy(ctx, store.Policy{Service: svc, Version: "v2hash", Source: []byte("rules: [2]"), CreatedAt: at(2 * time.Second)})
	must(t, err)
	wantEqual(t, "second seq", p2.Seq, int64(2))
	_, err = s.PutPolicy(ctx, store.Policy{Service: "spiffe://example.org/orders", Version: "o1", Source: []byte("o"), CreatedAt: at(3 * time.Second)})
	must(t, err)

	got, err := s.GetPolicy(ctx, svc)
	must(t, err)
	wantEqual(t, "policy in force", got, p2)
	list, err := s.ListPolicies(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Service != "spiffe://example.org/orders" || list[1].Version != "v2hash" {
		t.Fatalf("ListPolicies = %+v", list)
	}

	r1 := revision(t, s)
	must(t, s.DeletePolicy(ctx, svc, at(4*time.Second)))
	if revision(t, s) <= r1 {
		t.Fatal("DeletePolicy did not bump the revision")
	}
	_, err = s.GetPolicy(ctx, svc)
	wantErrIs(t, "get after delete", err, store.ErrNotFound)
	wantErrIs(t, "delete twice", s.DeletePolicy(ctx, svc, at(5*time.Second)), store.ErrNotFound)
	list, _ = s.ListPolicies(ctx)
	wantEqual(t, "policies after delete", len(list), 1)
	hist, err := s.PolicyHistory(ctx, svc)
	must(t, err)
	if len(hist) != 3 || !hist[2].Deleted || hist[0].Version != "v1hash" || string(hist[1].Source) != "rules: [2]" {
		t.Fatalf("history = %+v", hist)
	}
	// A new upload after deletion is in force again, numbered after the tombstone.
	p4, err := s.PutPolicy(ctx, store.Policy{Service: svc, Version: "v4", Source: []byte("x"), CreatedAt: at(6 * time.Second)})
	must(t, err)
	wantEqual(t, "seq after tombstone", p4.Seq, int64(4))
	got, err = s.GetPolicy(ctx, svc)
	must(t, err)
	wantEqual(t, "re-uploaded policy", got.Version, "v4")
}

func testAlerts(t *testing.T, h harness) {
	s := h.open(t)
	ctx := context.Background()
	a := store.Alert{ID: "a1", Rule: "denied-burst", Severity: "high", Group: "actor.spiffe_id=spiffe://example.org/rogue",
		Summary: "20 denied", FirstSeen: at(0), LastSeen: at(0), Count: 1, FirstIndex: 10, LastIndex: 10, CreatedAt: at(time.Second)}
	created, err := s.UpsertAlert(ctx, a)
	must(t, err)
	wantEqual(t, "created", created, true)
	// Fired again: the counters move, it is not a new alert.
	b := a
	b.LastSeen, b.Count, b.LastIndex = at(time.Minute), 2, 30
	created, err = s.UpsertAlert(ctx, b)
	must(t, err)
	wantEqual(t, "created again", created, false)
	must(t, s.SetAlertStatus(ctx, "a1", store.AlertAcknowledged, at(2*time.Minute)))
	// A replay of the first firing moves nothing back and keeps the status.
	created, err = s.UpsertAlert(ctx, a)
	must(t, err)
	wantEqual(t, "created on replay", created, false)
	got, err := s.GetAlert(ctx, "a1")
	must(t, err)
	wantEqual(t, "count", got.Count, int64(2))
	wantEqual(t, "last index", got.LastIndex, int64(30))
	wantEqual(t, "status", got.Status, store.AlertAcknowledged)
	wantEqual(t, "last seen", got.LastSeen.Equal(at(time.Minute)), true)

	_, err = s.UpsertAlert(ctx, store.Alert{ID: "a2", Rule: "new-edge", Severity: "medium", Group: "x", FirstSeen: at(time.Hour), LastSeen: at(time.Hour), Count: 1, CreatedAt: at(time.Hour)})
	must(t, err)
	all, err := s.ListAlerts(ctx, store.AlertFilter{})
	must(t, err)
	wantEqual(t, "alerts", len(all), 2)
	wantEqual(t, "oldest first", all[0].ID, "a1")
	some, err := s.ListAlerts(ctx, store.AlertFilter{Since: at(time.Minute)})
	must(t, err)
	wantEqual(t, "since", len(some), 1)
	some, err = s.ListAlerts(ctx, store.AlertFilter{Status: store.AlertOpen})
	must(t, err)
	wantEqual(t, "open", len(some), 1)
	some, err = s.ListAlerts(ctx, store.AlertFilter{Rule: "denied-burst", Limit: 1})
	must(t, err)
	wantEqual(t, "by rule", len(some), 1)
	wantErrIs(t, "unknown alert", s.SetAlertStatus(ctx, "nope", store.AlertResolved, at(0)), store.ErrNotFound)
	if err := s.SetAlertStatus(ctx, "a1", "closed", at(0)); err == nil {
		t.Fatal("an unknown status was accepted")
	}
	_, err = s.GetAlert(ctx, "nope")
	wantErrIs(t, "get unknown", err, store.ErrNotFound)
}

// SQLite opens the store in dir/rampart.db (created if new; pass
// t.TempDir() for a fresh one), closed when t ends: the fixture of every
// package whose tests need a real store.
func SQLite(t testing.TB, dir string) store.Store {
	t.Helper()
	s, err := store.OpenSQLite(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Batches change every entry or none, with one revision bump; the new
// fields round-trip; filters select.
func testEntryBatches(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	const agentA, agentB = "spiffe://example.org/agent/a", "spiffe://example.org/agent/b"
	uid := func(v string) selector.Selector { return selector.Selector{Type: selector.UnixUID, Value: v} }
	path := selector.Selector{Type: selector.UnixPath, Value: "/usr/bin/orders"}
	batch := []store.Entry{
		{ID: "b1", SpiffeID: "spiffe://example.org/orders", ParentID: agentA, Selectors: []selector.Selector{path, uid("1000")},
			DNSNames: []string{"orders.internal"}, CreatedAt: at(0), Admin: true, Hint: "internal", ExpiresAt: at(time.Hour)},
		{ID: "b2", SpiffeID: "spiffe://example.org/orders", ParentID: agentB, Selectors: []selector.Selector{uid("1000")},
			DNSNames: []string{}, CreatedAt: at(0), Downstream: true, Hint: "external"},
		{ID: "b3", SpiffeID: "spiffe://example.org/web", ParentID: agentA, Selectors: []selector.Selector{uid("1001")},
			DNSNames: []string{}, CreatedAt: at(0)},
	}
	before := revision(t, s)
	must(t, s.CreateEntries(ctx, batch))
	if after := revision(t, s); after != before+1 {
		t.Errorf("CreateEntries of 3 bumped the revision by %d, want 1", after-before)
	}
	for _, e := range batch {
		got, err := s.GetEntry(ctx, e.ID)
		must(t, err)
		wantEqual(t, "GetEntry "+e.ID+" (new fields round trip)", got, e)
	}
	// One taken ID: nothing of the batch is written.
	clash := []store.Entry{{ID: "b4", SpiffeID: "spiffe://example.org/x", ParentID: agentA, Selectors: []selector.Selector{uid("1")}, DNSNames: []string{}, CreatedAt: at(0)}, batch[0]}
	wantErrIs(t, "CreateEntries with a taken ID", s.CreateEntries(ctx, clash), store.ErrConflict)
	_, err := s.GetEntry(ctx, "b4")
	wantErrIs(t, "the batch's first entry after it failed", err, store.ErrNotFound)

	filters := []struct {
		name string
		f    store.EntryFilter
		want []store.Entry
	}{
		{"all", store.EntryFilter{}, batch},
		{"parent", store.EntryFilter{ParentID: agentA}, []store.Entry{batch[0], batch[2]}},
		{"spiffe id", store.EntryFilter{SpiffeID: "spiffe://example.org/orders"}, batch[:2]},
		{"hint", store.EntryFilter{Hint: "external"}, batch[1:2]},
		{"selector", store.EntryFilter{Selectors: []selector.Selector{uid("1000")}}, batch[:2]},
		{"two selectors", store.EntryFilter{Selectors: []selector.Selector{uid("1000"), path}}, batch[:1]},
		{"parent and spiffe id", store.EntryFilter{ParentID: agentB, SpiffeID: "spiffe://example.org/orders"}, batch[1:2]},
		{"nothing", store.EntryFilter{SpiffeID: "spiffe://example.org/none"}, nil},
	}
	for _, tt := range filters {
		got, err := s.FindEntries(ctx, tt.f)
		must(t, err)
		wantEqual(t, "FindEntries "+tt.name, got, tt.want)
	}

	upd := batch[0]
	upd.Selectors, upd.Admin, upd.Hint, upd.ExpiresAt = []selector.Selector{uid("2000")}, false, "", time.Time{}
	missing := store.Entry{ID: "nope", SpiffeID: "spiffe://example.org/x", ParentID: agentA, Selectors: []selector.Selector{uid("1")}, DNSNames: []string{}}
	wantErrIs(t, "UpdateEntries with a missing ID", s.UpdateEntries(ctx, []store.Entry{upd, missing}), store.ErrNotFound)
	got, err := s.GetEntry(ctx, "b1")
	must(t, err)
	wantEqual(t, "entry after a failed batch update", got, batch[0])
	before = revision(t, s)
	must(t, s.UpdateEntries(ctx, []store.Entry{upd}))
	if after := revision(t, s); after != before+1 {
		t.Errorf("UpdateEntries bumped the revision by %d, want 1", after-before)
	}
	got, err = s.GetEntry(ctx, "b1")
	must(t, err)
	wantEqual(t, "entry after update", got, upd)

	wantErrIs(t, "DeleteEntries with a missing ID", s.DeleteEntries(ctx, []string{"b2", "nope"}), store.ErrNotFound)
	if _, err := s.GetEntry(ctx, "b2"); err != nil {
		t.Errorf("a failed batch delete deleted b2: %v", err)
	}
	must(t, s.DeleteEntries(ctx, []string{"b2", "b3"}))
	all, err := s.ListEntries(ctx, "")
	must(t, err)
	wantEqual(t, "entries after the batch delete", all, []store.Entry{upd})
}
