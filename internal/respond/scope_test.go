package respond

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/respond/scopetest"
)

// The breach scope of a generated log matches the ground truth the
// generator kept: every service, method and path reached and refused
// (counts included), tokens, users, keys and SVIDs, and nothing of the
// identities whose names share its prefix; answered again after the log
// grew, from the index, without reading blocks that do not mention it.
func TestScopeMatchesGroundTruth(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "audit")
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	since, until := start.Add(3*24*time.Hour), start.Add(10*24*time.Hour) // a week of a 14-day log
	o := scopetest.Options{Entries: 60_000, Start: start, Span: 14 * 24 * time.Hour, Seed: 7, Since: since, Until: until}
	truth, err := scopetest.Generate(context.Background(), logDir, o)
	if err != nil {
		t.Fatal(err)
	}
	s := &Scoper{Dir: logDir, Index: filepath.Join(dir, "scope-index.json")}
	sc, err := s.Scope(scopetest.Victim, since, until)
	if err != nil {
		t.Fatal(err)
	}
	check(t, sc, truth)
	if sc.Scanned > o.Entries/2+2*4096 {
		t.Errorf("read %d of %d entries for a week of a 14-day log: the index skipped nothing", sc.Scanned, o.Entries)
	}

	// Another process (the CLI offline) answers the same from the saved index.
	sc2, err := (&Scoper{Dir: logDir, Index: filepath.Join(dir, "scope-index.json")}).Scope(scopetest.Victim, since, until)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sc, sc2) {
		t.Error("the saved index answers differently")
	}
	// An index that lies (written by someone with the data directory)
	// makes the answer incomplete only if it omits blocks: a forged
	// index claiming more blocks than exist is harmless; an empty one is
	// detected as not covering the log and rebuilt.
	if _, err := (&Scoper{Dir: logDir}).Scope(scopetest.Victim, since, until); err != nil {
		t.Fatal(err)
	}

	// The log grows: the index is extended, and the answer too.
	o2 := o
	o2.Start, o2.Entries, o2.Seed = start.Add(14*24*time.Hour), 5_000, 8
	o2.Since, o2.Until = since, until // none of the new entries is in the window
	if _, err := scopetest.Generate(context.Background(), logDir, o2); err != nil {
		t.Fatal(err)
	}
	sc3, err := s.Scope(scopetest.Victim, since, until)
	if err != nil {
		t.Fatal(err)
	}
	check(t, sc3, truth)
}

func check(t *testing.T, sc *Scope, truth *scopetest.Truth) {
	t.Helper()
	if sc.Entries != truth.Entries {
		t.Errorf("entries %d, truth %d", sc.Entries, truth.Entries)
	}
	acc := func(as []Access) map[scopetest.AccessKey]int64 {
		m := map[scopetest.AccessKey]int64{}
		for _, a := range as {
			m[scopetest.AccessKey{Service: a.Service, Method: a.Method, Path: a.Path, User: a.User}] += a.Count
		}
		return m
	}
	if got := acc(sc.Reached); !reflect.DeepEqual(got, truth.Reached) {
		t.Errorf("reached: %d keys, truth %d", len(got), len(truth.Reached))
	}
	if got := acc(sc.Refused); !reflect.DeepEqual(got, truth.Refused) {
		t.Errorf("refused: %d keys, truth %d", len(got), len(truth.Refused))
	}
	tok := map[scopetest.TokenKey]int64{}
	for _, x := range sc.Tokens {
		tok[scopetest.TokenKey{Action: x.Action, Client: x.Client, Audience: x.Audience, User: x.User}] = x.Count
	}
	if !reflect.DeepEqual(tok, truth.Tokens) {
		t.Errorf("tokens: %d, truth %d", len(tok), len(truth.Tokens))
	}
	keys := map[scopetest.KeyKey]scopetest.KeyCount{}
	for _, k := range sc.Keys {
		keys[scopetest.KeyKey{Key: k.Key, Op: k.Op}] = scopetest.KeyCount{Count: k.Count, Bytes: k.Bytes, Refused: k.Refused}
	}
	if !reflect.DeepEqual(keys, truth.Keys) {
		t.Errorf("keys: %v, truth %v", keys, truth.Keys)
	}
	if !slices.Equal(sc.Users, truth.Users) {
		t.Errorf("users %v, truth %v", sc.Users, truth.Users)
	}
	var serials []string
	for _, s := range sc.SVIDs {
		serials = append(serials, s.Serial)
		if s.Agent == "" || s.Remote == "" {
			t.Errorf("SVID %s: where it went is missing: %+v", s.Serial, s)
		}
	}
	slices.Sort(serials)
	if !slices.Equal(serials, truth.SVIDs) {
		t.Errorf("svids %d, truth %d", len(serials), len(truth.SVIDs))
	}
	if len(truth.Reached) == 0 || len(truth.SVIDs) == 0 || len(truth.Keys) == 0 || len(truth.Tokens) == 0 {
		t.Fatal("the generator kept an empty truth: the test proves nothing")
	}
}

// A window with nothing in it reads nothing.
func TestScopeEmptyWindow(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	if _, err := scopetest.Generate(context.Background(), dir, scopetest.Options{Entries: 10_000, Start: start, Span: 24 * time.Hour, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	sc, err := (&Scoper{Dir: dir}).Scope(scopetest.Victim, start.Add(48*time.Hour), start.Add(72*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Entries != 0 || sc.Scanned != 0 {
		t.Errorf("entries %d, scanned %d outside the log's time", sc.Entries, sc.Scanned)
	}
	if _, err := (&Scoper{Dir: dir}).Scope("", start, time.Time{}); err == nil {
		t.Error("no identity accepted")
	}
}

func BenchmarkScopeWeek(b *testing.B) {
	dir := b.TempDir()
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	since, until := start.Add(7*24*time.Hour), start.Add(14*24*time.Hour)
	if _, err := scopetest.Generate(context.Background(), dir, scopetest.Options{Entries: 100_000, Start: start, Span: 30 * 24 * time.Hour, Seed: 3, Since: since, Until: until}); err != nil {
		b.Fatal(err)
	}
	s := &Scoper{Dir: dir}
	if _, err := s.Scope(scopetest.Victim, since, until); err != nil { // builds the index
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Scope(scopetest.Victim, since, until); err != nil {
			b.Fatal(err)
		}
	}
}

// appendEntries appends es to the audit log in dir.
func appendEntries(t *testing.T, dir string, es []*audit.Entry) {
	t.Helper()
	l, err := audit.OpenWith(dir, "example.org/audit", audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.AppendEntries(context.Background(), es...); err != nil {
		t.Fatal(err)
	}
}

func decision(at time.Time, actor, target, count, bytes string) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: at, Action: "authz.decision", Target: target, Outcome: audit.OutcomeSuccess,
		Source: target, Details: map[string]string{"method": "GET", "path": "/x"}}
	e.Actor.SpiffeID = actor
	if count != "" {
		e.Details["count"] = count
	}
	if bytes != "" {
		e.Details["bytes"] = bytes
	}
	return e
}

// A shipper inventing identities by the thousand cannot grow the index
// past its bound, and an identity beyond the bound is still answered in
// full (its blocks are read from the shared list).
func TestScopeIndexBounded(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "audit")
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	since, until := start, start.Add(48*time.Hour)
	truth, err := scopetest.Generate(context.Background(), logDir, scopetest.Options{Entries: 20_000, Start: start, Span: 24 * time.Hour, Seed: 3, Since: since, Until: until})
	if err != nil {
		t.Fatal(err)
	}
	var forged []*audit.Entry
	for i := range 2_000 {
		forged = append(forged, decision(start.Add(25*time.Hour), fmt.Sprintf("spiffe://example.org/forged/%05d", i), "spiffe://example.org/evil", "", ""))
	}
	long := "spiffe://example.org/" + strings.Repeat("l", 600)
	forged = append(forged, decision(start.Add(25*time.Hour), long, "spiffe://example.org/evil", "3", ""))
	appendEntries(t, logDir, forged)

	index := filepath.Join(dir, "scope-index.json")
	s := &Scoper{Dir: logDir, Index: index, MaxIdentities: 100}
	sc, err := s.Scope(scopetest.Victim, since, until)
	if err != nil {
		t.Fatal(err)
	}
	check(t, sc, truth)
	if n := len(s.idx.IDs); n > 100 {
		t.Errorf("the index names %d identities, bound 100", n)
	}
	if len(s.idx.Other) == 0 {
		t.Error("identities beyond the bound were not kept in the shared list")
	}
	for _, id := range []string{"spiffe://example.org/forged/01999", long} {
		got, err := s.Scope(id, since, until)
		if err != nil {
			t.Fatal(err)
		}
		want := int64(1)
		if id == long {
			want = 3
		}
		if len(got.Reached) != 1 || got.Reached[0].Count != want {
			t.Errorf("%.40s… beyond the bound: %+v, want one access ×%d", id, got.Reached, want)
		}
	}
	if _, err := (&Scoper{Dir: logDir, Index: index, MaxIdentities: 100}).Scope("spiffe://example.org/forged/01999", since, until); err != nil {
		t.Fatal(err)
	}
}

// Shipped figures are labelled with who reported them, and sums
// saturate: two counts at the int64 limit do not wrap negative (red team:
// an overflow showed a negative number of calls).
func TestScopeShippedFiguresLabelledAndSaturated(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	victim, target := "spiffe://example.org/victim", "spiffe://example.org/db"
	huge := strconv.FormatInt(math.MaxInt64, 10)
	appendEntries(t, dir, []*audit.Entry{
		decision(at, victim, target, huge, huge),
		decision(at.Add(time.Second), victim, target, huge, "-5"),
		decision(at.Add(2*time.Second), victim, target, "-7", "10"),
	})
	sc, err := (&Scoper{Dir: dir}).Scope(victim, at, at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Reached) != 1 {
		t.Fatalf("reached %+v", sc.Reached)
	}
	a := sc.Reached[0]
	if a.Count != math.MaxInt64 || a.Bytes != math.MaxInt64 || a.ReportedBy != target {
		t.Errorf("access %+v: want saturated figures reported by %s", a, target)
	}
	if md := sc.Markdown(); !strings.Contains(md, "Reported by") || !strings.Contains(md, target) || strings.Contains(md, "| -") {
		t.Errorf("markdown does not say who reported the figures, or shows a negative one:\n%s", md)
	}
}
