package respond

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

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
