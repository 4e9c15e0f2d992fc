package rekey

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// env is a real CA, key store and SQLite store on a fake clock.
type env struct {
	t       *testing.T
	dir     string
	st      store.Store
	clk     *fakeclock.Clock
	ca      *identity.CA
	kms     *kms.Service
	records []string // "action outcome step"
	renewed int
	fail    func(step string) error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st := storetest.SQLite(t, dir)
	w, err := keywrap.LoadOrCreateFile(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	ca, err := identity.New(t.Context(), identity.Config{TrustDomain: td, Store: st, Wrapper: w, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := kms.New(t.Context(), kms.Config{Store: st, Wrapper: w, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, st: st, clk: clk, ca: ca, kms: ks}
}

func (e *env) rekeyer() *Rekeyer {
	e.t.Helper()
	r, err := New(Config{Dir: filepath.Join(e.dir, "rekey"), CA: e.ca, KMS: e.kms, SVIDs: e.st, Now: e.clk.Now,
		RenewServerCert: func() error { e.renewed++; return nil },
		Record: func(_ context.Context, action, outcome string, d map[string]string) {
			e.records = append(e.records, action+" "+outcome+" "+d["step"])
		},
		BeforeStep: func(step string) error {
			if e.fail != nil {
				return e.fail(step)
			}
			return nil
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// issue signs an SVID for id through agent and records it as the
// registrar does.
func (e *env) issue(id, agent string) store.IssuedSVID {
	e.t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := e.ca.SignX509SVID(spiffeid.RequireFromString(id), k.Public(), time.Hour, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	v := store.IssuedSVID{Serial: chain[0].SerialNumber.Text(16), SpiffeID: id, AgentID: agent, EntryID: "e-" + id,
		NotAfter: chain[0].NotAfter, IssuedAt: e.clk.Now()}
	if err := e.st.RecordSVIDs(e.t.Context(), []store.IssuedSVID{v}); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) revoked() []string {
	rs, err := e.st.ListRevocations(e.t.Context(), e.clk.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Serial)
	}
	return out
}

func bundleIDs(ca *identity.CA) []string {
	var out []string
	for _, k := range ca.Status() {
		if k.Kind == store.KindRoot {
			out = append(out, k.ID)
		}
	}
	return out
}

const agentA = "spiffe://example.org/rampart/agent/a"

// The whole burn-down on a fake clock: overlap, re-issue, revoke, drop,
// key store versions retired; the data encrypted before is readable after
// a rewrap and refused as it was, then destroyed after the grace period.
func TestBurnDown(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	if _, err := e.kms.Create(ctx, "orders-db", kms.TypeAES, 0); err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.kms.Encrypt(ctx, "orders-db", []byte("card 4111"), []byte("row 7"))
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := e.ca.ActiveRootID()
	old := e.issue("spiffe://example.org/orders", agentA)
	oldAgent := e.issue(agentA, agentA)
	r := e.rekeyer()

	st, err := r.Run(ctx, Options{Propagation: Duration(10 * time.Second), Deadline: Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Done(StepPrepareRoot) || st.Done(StepActivateRoot) || st.step(StepActivateRoot).Status != StatusWaiting {
		t.Fatalf("before the propagation time the new root must be published, not signing: %+v", st.Steps)
	}
	if ids := bundleIDs(e.ca); !slices.Contains(ids, st.NewRoot) || !slices.Contains(ids, oldRoot) {
		t.Fatalf("bundle during propagation: %v", ids)
	}
	if r.Reissuing() != "" {
		t.Fatal("agents are told to re-issue before the new root signs")
	}
	e.clk.Add(10 * time.Second)
	st, err = r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{StepActivateRoot, StepServerCert, StepKMSRotate} {
		if !st.Done(s) {
			t.Fatalf("step %s not done: %+v", s, st.Steps)
		}
	}
	if st.OAuth.Skipped == "" || e.renewed != 1 || r.Reissuing() != st.NewRoot || e.ca.ActiveRootID() != st.NewRoot {
		t.Fatalf("after activation: oauth %+v, server cert renewed %d, reissuing %q, active root %q", st.OAuth, e.renewed, r.Reissuing(), e.ca.ActiveRootID())
	}
	if s := st.step(StepReissue); s.Status != StatusWaiting || !strings.Contains(s.Detail, "0 of 2") {
		t.Fatalf("re-issue step: %+v", s)
	}
	if len(st.KMS) != 1 || st.KMS[0].NewVersion != 2 || !slices.Equal(st.KMS[0].OldVersions, []int{1}) {
		t.Fatalf("key store record: %+v", st.KMS)
	}
	// The data owner rewraps during the overlap; the old version still opens.
	rewrapped, v, err := e.kms.Rewrap(ctx, "orders-db", secret, []byte("row 7"))
	if err != nil || v != 2 {
		t.Fatalf("rewrap: version %d, %v", v, err)
	}
	// The agent re-issues both SVIDs under the new root.
	e.clk.Add(time.Second)
	fresh := e.issue("spiffe://example.org/orders", agentA)
	freshAgent := e.issue(agentA, agentA)
	st, _ = r.Step(ctx)
	if s := st.step(StepReissue); s.Status != StatusWaiting || !strings.Contains(s.Detail, "recycled") || len(st.SVIDs.Hosts) != 0 {
		t.Fatalf("all re-issued, waiting for connections to recycle: %+v %+v", s, st.SVIDs)
	}
	if slices.Contains(e.revoked(), old.Serial) {
		t.Fatal("an SVID from before was revoked while connections authenticated with it may be open")
	}
	e.clk.Add(45 * time.Minute) // three quarters of the old SVIDs' hour
	st, err = r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseFinished {
		t.Fatalf("not finished: %+v", st.Steps)
	}
	rev := e.revoked()
	if !slices.Contains(rev, old.Serial) || !slices.Contains(rev, oldAgent.Serial) || slices.Contains(rev, fresh.Serial) || slices.Contains(rev, freshAgent.Serial) {
		t.Fatalf("revoked %v: want the two from before (%s %s), not the new ones", rev, old.Serial, oldAgent.Serial)
	}
	if st.SVIDs.Before != 2 || st.SVIDs.Reissued != 2 || st.SVIDs.Revoked != 2 {
		t.Fatalf("counts: %+v", st.SVIDs)
	}
	if ids := bundleIDs(e.ca); !slices.Equal(ids, []string{st.NewRoot}) {
		t.Fatalf("bundle after the finish: %v, want only %s", ids, st.NewRoot)
	}
	if r.Reissuing() != "" {
		t.Fatal("agents still told to re-issue after the finish")
	}
	// Key store: the old version is refused now, destroyed after the grace.
	if _, _, err := e.kms.Decrypt(ctx, "orders-db", secret, []byte("row 7")); !errors.Is(err, kms.ErrDisabled) {
		t.Fatalf("ciphertext under the old version after the finish: %v", err)
	}
	if pt, _, err := e.kms.Decrypt(ctx, "orders-db", rewrapped, []byte("row 7")); err != nil || string(pt) != "card 4111" {
		t.Fatalf("rewrapped ciphertext: %q %v", pt, err)
	}
	e.clk.Add(DefaultKMSGrace)
	if _, err := e.kms.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	info, _ := e.kms.Get(ctx, "orders-db")
	if info.Versions[0].State != store.KMSDestroyed {
		t.Fatalf("old version after the grace period: %+v", info.Versions[0])
	}
	// The report, for people and tools, private.
	for _, ext := range []string{".json", ".md"} {
		fi, err := os.Stat(filepath.Join(e.dir, "rekey", st.ID+ext))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("report %s: %v %v", ext, fi, err)
		}
	}
	md := st.Markdown()
	for _, want := range []string{st.NewRoot, oldRoot, st.CA.NewIntermediate, "orders-db", "| svids.revoke-old | done |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// Every step audited.
	for _, s := range Steps {
		if !slices.Contains(e.records, "rekey.step success "+s) {
			t.Errorf("step %s not audited: %v", s, e.records)
		}
	}
	if !slices.Contains(e.records, "rekey.start success ") || !slices.Contains(e.records, "rekey.finish success ") {
		t.Errorf("start or finish not audited: %v", e.records)
	}
}

// A dry run says what would be replaced and changes nothing.
func TestDryRunChangesNothing(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	if _, err := e.kms.Create(ctx, "k", kms.TypeAES, 0); err != nil {
		t.Fatal(err)
	}
	e.issue("spiffe://example.org/orders", agentA)
	keysBefore, _ := e.st.ListCAKeys(ctx)
	revBefore, _ := e.st.Revision(ctx)
	r := e.rekeyer()
	st, err := r.Run(ctx, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseDryRun || len(st.CA.RetiredRoots) != 1 || len(st.KMS) != 1 || st.KMS[0].NewVersion != 2 || st.SVIDs.Before != 1 {
		t.Fatalf("plan: %+v", st)
	}
	keysAfter, _ := e.st.ListCAKeys(ctx)
	revAfter, _ := e.st.Revision(ctx)
	info, _ := e.kms.Get(ctx, "k")
	if len(keysAfter) != len(keysBefore) || revAfter != revBefore || info.Latest != 1 || len(e.revoked()) != 0 {
		t.Fatalf("a dry run changed something: CA keys %d→%d, revision %d→%d, kms latest %d", len(keysBefore), len(keysAfter), revBefore, revAfter, info.Latest)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "rekey", "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a dry run wrote state: %v", err)
	}
	if _, err := r.Current(); !errors.Is(err, ErrNone) {
		t.Fatalf("a dry run became current: %v", err)
	}
	if !strings.Contains(st.Markdown(), "dry run") {
		t.Fatal("the plan's report does not say it is a dry run")
	}
}

// A burn-down that fails between steps (a crash) says what is done, and
// resumes from there in a new process without repeating what was done.
func TestInterruptedResumes(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	for _, n := range []string{"a", "b"} {
		if _, err := e.kms.Create(ctx, n, kms.TypeAES, 0); err != nil {
			t.Fatal(err)
		}
	}
	e.fail = func(step string) error {
		if step == StepKMSRotate {
			return errors.New("simulated crash")
		}
		return nil
	}
	r := e.rekeyer()
	if _, err := r.Run(ctx, Options{Propagation: Duration(0)}); err != nil {
		t.Fatal(err)
	}
	// Propagation 0 takes the default; move past it.
	e.clk.Add(DefaultPropagation)
	st, err := r.Step(ctx)
	if err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("want the simulated failure, got %v", err)
	}
	for _, s := range []string{StepPrepareRoot, StepActivateRoot, StepServerCert, StepOAuthKey} {
		if !st.Done(s) {
			t.Fatalf("%s should be done: %+v", s, st.Steps)
		}
	}
	if s := st.step(StepKMSRotate); s.Status != StatusFailed || !strings.Contains(s.Error, "simulated crash") {
		t.Fatalf("failed step: %+v", s)
	}
	if !strings.Contains(st.Markdown(), "**error:** simulated crash") {
		t.Fatal("the report does not show the failure")
	}
	rootsBefore := bundleIDs(e.ca)
	// A new process (restart) picks the state up and finishes.
	e.fail = nil
	r2 := e.rekeyer()
	cur, err := r2.Current()
	if err != nil || cur.ID != st.ID || cur.Phase != PhaseRunning {
		t.Fatalf("after a restart: %+v %v", cur, err)
	}
	st2, err := r2.Run(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.ID != st.ID {
		t.Fatalf("Run started a new burn-down (%s) instead of resuming %s", st2.ID, st.ID)
	}
	keys, _ := e.st.ListCAKeys(ctx)
	roots := 0
	for _, k := range keys {
		if k.Kind == store.KindRoot {
			roots++
		}
	}
	if roots != len(rootsBefore) || !slices.Equal(bundleIDs(e.ca), []string{st.NewRoot}) {
		t.Fatalf("resuming made another root: %d roots stored (want %d), bundle %v (want %s)", roots, len(rootsBefore), bundleIDs(e.ca), st.NewRoot)
	}
	if len(st2.KMS) != 2 {
		t.Fatalf("kms: %+v", st2.KMS)
	}
	// No SVIDs at all: nothing to wait for.
	if st2.Phase != PhaseFinished {
		t.Fatalf("not finished after resuming: %+v", st2.Steps)
	}
	if !slices.Contains(e.records, "rekey.step failure "+StepKMSRotate) || !slices.Contains(e.records, "rekey.resume success ") {
		t.Fatalf("failure and resume not audited: %v", e.records)
	}
}

// A key rotated before the crash is not rotated again on resume.
func TestInterruptedInsideKMSRotateDoesNotRotateTwice(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	for _, n := range []string{"a", "b"} {
		if _, err := e.kms.Create(ctx, n, kms.TypeAES, 0); err != nil {
			t.Fatal(err)
		}
	}
	r := e.rekeyer()
	r.Run(ctx, Options{})
	e.clk.Add(DefaultPropagation)
	// Simulate: "a" was rotated and recorded, then the process died.
	r.mu.Lock()
	r.cur.KMS = append(r.cur.KMS, KMSRecord{Key: "a", Type: kms.TypeAES, OldVersions: []int{1}, NewVersion: 2})
	r.mu.Unlock()
	if _, err := e.kms.Rotate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	st, err := r.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.kms.Get(ctx, "a")
	b, _ := e.kms.Get(ctx, "b")
	if a.Latest != 2 || b.Latest != 2 || len(st.KMS) != 2 {
		t.Fatalf("a latest %d, b latest %d, records %+v", a.Latest, b.Latest, st.KMS)
	}
}

// At the deadline the burn-down finishes without the stragglers and names
// the hosts that still hold SVIDs from before; an evicted agent does not
// hold it up.
func TestDeadlineNamesHosts(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	const agentB = "spiffe://example.org/rampart/agent/b"
	const agentC = "spiffe://example.org/rampart/agent/c"
	stale := e.issue("spiffe://example.org/payments", agentB)
	e.issue("spiffe://example.org/x", agentC)
	e.st.UpsertAgent(ctx, store.Agent{SpiffeID: agentC, AttestedAt: e.clk.Now(), LastSeen: e.clk.Now()})
	if err := e.st.EvictAgent(ctx, agentC, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	r := e.rekeyer()
	r.Run(ctx, Options{Deadline: Duration(10 * time.Minute)})
	e.clk.Add(DefaultPropagation)
	st, _ := r.Step(ctx)
	if st.step(StepReissue).Status != StatusWaiting || !slices.Equal(st.SVIDs.Hosts, []string{agentB}) {
		t.Fatalf("waiting on agent b only: %+v %+v", st.step(StepReissue), st.SVIDs)
	}
	e.clk.Add(10 * time.Minute)
	st, err := r.Step(ctx)
	if err != nil || st.Phase != PhaseFinished {
		t.Fatalf("deadline: %v %+v", err, st.Steps)
	}
	if !slices.Equal(st.SVIDs.Hosts, []string{agentB}) || len(st.SVIDs.Stragglers) != 1 || st.SVIDs.Stragglers[0].Serial != stale.Serial {
		t.Fatalf("report: %+v", st.SVIDs)
	}
	if !slices.Contains(e.revoked(), stale.Serial) {
		t.Fatal("the straggler was not revoked at the deadline")
	}
	md := st.Markdown()
	if !strings.Contains(md, agentB) || !strings.Contains(md, "rampart agent evict") {
		t.Fatalf("the report does not name the host and what to do:\n%s", md)
	}
}

// Finish stops waiting at once.
func TestFinishNow(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	e.issue("spiffe://example.org/payments", agentA)
	r := e.rekeyer()
	if _, err := r.Finish(ctx); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("finish with nothing running: %v", err)
	}
	r.Run(ctx, Options{})
	e.clk.Add(DefaultPropagation)
	r.Step(ctx)
	st, err := r.Finish(ctx)
	if err != nil || st.Phase != PhaseFinished || !st.ForceFinish || len(st.SVIDs.Hosts) != 1 {
		t.Fatalf("finish now: %v %+v", err, st)
	}
	// A new Run after a finished one starts a new burn-down.
	st2, err := r.Run(ctx, Options{})
	if err != nil || st2.ID == st.ID {
		t.Fatalf("second burn-down: %v %s", err, st2.ID)
	}
}

func TestOptionsBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"negative propagation", Options{Propagation: Duration(-time.Second)}, "propagation"},
		{"propagation over an hour", Options{Propagation: Duration(2 * time.Hour)}, "propagation"},
		{"deadline too short", Options{Deadline: Duration(time.Millisecond)}, "deadline"},
		{"deadline over a week", Options{Deadline: Duration(8 * 24 * time.Hour)}, "deadline"},
		{"kms grace too short", Options{KMSGrace: Duration(time.Minute)}, "kms grace"},
		{"defaults", Options{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.o.withDefaults()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrInvalid naming %q", err, tc.want)
			}
		})
	}
}

// The state is the server's alone: one others may change is refused at
// start, before it could make a burn-down skip a step.
func TestStateFileMustBePrivate(t *testing.T) {
	e := newEnv(t)
	r := e.rekeyer()
	if _, err := r.Run(t.Context(), Options{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "rekey", "state.json")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	if err := os.Chmod(path, 0o620); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Dir: filepath.Join(e.dir, "rekey"), CA: e.ca, KMS: e.kms, SVIDs: e.st, Now: e.clk.Now})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a state file others may write was accepted: %v", err)
	}
}

// fakeTokens records what the burn-down asks of the OAuth provider.
type fakeTokens struct {
	keys     []string
	dropped  []string
	revoked  []string
	dropOld  bool
	newKeyID string
}

func (f *fakeTokens) RekeySigningKey(_ context.Context, dropOld bool) ([]string, string, error) {
	f.dropOld, f.newKeyID = dropOld, "new"
	old := f.keys
	f.keys = append(f.keys, "new")
	return old, "new", nil
}
func (f *fakeTokens) DropSigningKeys(_ context.Context, ids []string) ([]string, error) {
	f.dropped = append(f.dropped, ids...)
	return ids, nil
}
func (f *fakeTokens) JWKS() jose.JSONWebKeySet { return jose.JSONWebKeySet{} }
func (f *fakeTokens) RevokeClient(_ context.Context, id, reason string) (int, error) {
	f.revoked = append(f.revoked, id+" "+reason)
	return 2, nil
}

// With RevokeTokens the old signing keys go at once and every client's
// refresh tokens and codes are revoked, so none can buy a token signed
// by the new key; without it, the old keys verify until the finish and
// no grant is revoked.
func TestRevokeTokensRevokesGrants(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		t.Run(fmt.Sprint("revoke=", revoke), func(t *testing.T) {
			ctx := t.Context()
			e := newEnv(t)
			for _, id := range []string{"web", "reports"} {
				if err := e.st.CreateOAuthClient(ctx, store.OAuthClient{ID: id, AuthMethod: "none", CreatedAt: e.clk.Now()}); err != nil {
					t.Fatal(err)
				}
			}
			tk := &fakeTokens{keys: []string{"old"}}
			r, err := New(Config{Dir: filepath.Join(e.dir, "rekey"), CA: e.ca, KMS: e.kms, SVIDs: e.st, Tokens: tk, Clients: e.st, Now: e.clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			r.Run(ctx, Options{RevokeTokens: revoke})
			e.clk.Add(DefaultPropagation)
			st, err := r.Step(ctx)
			if err != nil || st.Phase != PhaseFinished {
				t.Fatalf("%v %+v", err, st.Steps)
			}
			if tk.dropOld != revoke || !slices.Equal(st.OAuth.OldKeys, []string{"old"}) || !slices.Equal(tk.dropped, []string{"old"}) {
				t.Fatalf("keys: dropOld %v, old %v, dropped at the finish %v", tk.dropOld, st.OAuth.OldKeys, tk.dropped)
			}
			if !revoke {
				if len(tk.revoked) != 0 {
					t.Fatalf("grants revoked without revoke-tokens: %v", tk.revoked)
				}
				return
			}
			slices.Sort(tk.revoked)
			want := []string{"reports rekey " + st.ID, "web rekey " + st.ID}
			if !slices.Equal(tk.revoked, want) || st.OAuth.RevokedFamilies != 4 {
				t.Fatalf("revoked %v (%d families), want %v", tk.revoked, st.OAuth.RevokedFamilies, want)
			}
		})
	}
}
