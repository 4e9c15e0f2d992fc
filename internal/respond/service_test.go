package respond

import (
	"bufio"
	"context"
	"errors"
	"github.com/rampartsec/rampart/internal/detect"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/approval"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// fakeEffects records what a playbook asked for; failing names an action
// that fails, hang one that never returns (until its context ends).
type fakeEffects struct {
	mu      sync.Mutex
	did     []string
	failing string
	hang    string
}

func (f *fakeEffects) do(ctx context.Context, what, arg string) error {
	f.mu.Lock()
	f.did = append(f.did, what+" "+arg)
	f.mu.Unlock()
	if what == f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if what == f.failing {
		return errors.New(what + " failed on purpose")
	}
	return nil
}

func (f *fakeEffects) RevokeSVIDs(ctx context.Context, p, _ string) ([]string, error) {
	return []string{"1a"}, f.do(ctx, "revoke_svids", p)
}
func (f *fakeEffects) EvictAgent(ctx context.Context, n string) (int, error) {
	return 1, f.do(ctx, "evict_agent", n)
}
func (f *fakeEffects) RevokeUser(ctx context.Context, u, _ string) (int, error) {
	return 1, f.do(ctx, "revoke_user", u)
}
func (f *fakeEffects) DisableUser(ctx context.Context, u string) (int, error) {
	return 1, f.do(ctx, "disable_user", u)
}
func (f *fakeEffects) RevokeClient(ctx context.Context, c, _ string) (int, error) {
	return 1, f.do(ctx, "revoke_client", c)
}
func (f *fakeEffects) DisableClient(ctx context.Context, c string) (int, error) {
	return 1, f.do(ctx, "disable_client", c)
}
func (f *fakeEffects) RotateKey(ctx context.Context, k, n string) (string, error) {
	return "v2", f.do(ctx, "rotate_key", k+":"+n)
}

func (f *fakeEffects) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.did...)
}

type testEnv struct {
	svc     *Service
	fx      *fakeEffects
	mu      sync.Mutex
	entries []*audit.Entry
	changed int
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	st, _ := store.Respond(storetest.SQLite(t, t.TempDir()))
	e := &testEnv{fx: &fakeEffects{}}
	e.svc = New(Config{Store: st, Effects: e.fx, KnownRule: knownRules,
		Append: func(_ context.Context, es ...*audit.Entry) error {
			e.mu.Lock()
			e.entries = append(e.entries, es...)
			e.mu.Unlock()
			return nil
		},
		Changed: func(context.Context) { e.mu.Lock(); e.changed++; e.mu.Unlock() }})
	return e
}

func (e *testEnv) actions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, en := range e.entries {
		out = append(out, en.Action+":"+en.Outcome)
	}
	return out
}

func (e *testEnv) put(t *testing.T, src string) {
	t.Helper()
	if _, _, err := e.svc.PutPlaybook(context.Background(), []byte(src), audit.Actor{User: "alice"}); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) run(t *testing.T, name string, by audit.Actor, vars map[string]string) *Run {
	t.Helper()
	r, err := e.svc.Start(context.Background(), StartOptions{Playbook: name, By: by, Vars: vars})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	r, err = e.svc.GetRun(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func states(r *Run) string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, st.State)
	}
	return strings.Join(s, ",")
}

// A failing step is recorded; the run stops or goes on as the step says.
func TestFailingStepStopsOrContinues(t *testing.T) {
	src := `name: p
vars: {svc: actor.spiffe_id}
steps:
  - action: revoke_svids
    with: {identity: "${svc}"}
    on_failure: %s
  - action: evict_agent
    with: {agent: node-1}
  - action: stop
    when: failed
    with: {reason: "something failed"}
`
	for _, tt := range []struct{ onFailure, state, steps string }{
		{"stop", RunFailed, "failed,skipped,skipped"},
		{"continue", RunStopped, "failed,succeeded,succeeded"},
	} {
		t.Run(tt.onFailure, func(t *testing.T) {
			e := newTestEnv(t)
			e.fx.failing = "revoke_svids"
			e.put(t, strings.Replace(src, "%s", tt.onFailure, 1))
			r := e.run(t, "p", audit.Actor{User: "alice"}, map[string]string{"svc": "spiffe://example.org/orders"})
			if r.State != tt.state || states(r) != tt.steps {
				t.Fatalf("run %s, steps %s; want %s, %s", r.State, states(r), tt.state, tt.steps)
			}
			if !strings.Contains(r.Steps[0].Error, "failed on purpose") {
				t.Errorf("the failure is not recorded: %+v", r.Steps[0])
			}
			want := "respond.step:failure"
			if !strings.Contains(strings.Join(e.actions(), " "), want) {
				t.Errorf("audit %v lacks %s", e.actions(), want)
			}
			if got := e.fx.list(); tt.onFailure == "stop" && len(got) != 1 {
				t.Errorf("after a failing step that stops, more ran: %v", got)
			}
		})
	}
}

// A step that does not end within its timeout fails (and the run goes on
// as the step says).
func TestStepTimeout(t *testing.T) {
	e := newTestEnv(t)
	e.fx.hang = "evict_agent"
	e.put(t, "name: p\nsteps:\n  - action: evict_agent\n    with: {agent: n}\n    timeout: 50ms\n    on_failure: continue\n  - action: disable_user\n    with: {user: mallory}\n")
	r := e.run(t, "p", audit.Actor{User: "alice"}, nil)
	if r.Steps[0].State != StepFailed || !strings.Contains(r.Steps[0].Error, "timed out after 50ms") || r.Steps[1].State != StepSucceeded {
		t.Fatalf("%+v", r.Steps)
	}
}

// A step with an approval waits; the one who started the run cannot
// approve it, nor can the shared admin token; a second person can.
func TestApprovalIsASecondPerson(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "name: p\nsteps:\n  - action: disable_user\n    with: {user: mallory}\n    approval: {role: approver}\n  - action: revoke_client\n    with: {client: shop}\n")
	alice := audit.Actor{User: "alice"}
	r := e.run(t, "p", alice, nil)
	if r.State != RunWaiting || r.Steps[0].State != StepWaiting || len(e.fx.list()) != 0 {
		t.Fatalf("did not wait for approval: %s %s %v", r.State, states(r), e.fx.list())
	}
	ctx := context.Background()
	for _, who := range []struct {
		a    audit.Actor
		want error
	}{
		{alice, approval.ErrSelfApproval},
		{audit.Actor{User: "alice", SpiffeID: "spiffe://example.org/console"}, approval.ErrSelfApproval},
		{audit.Actor{User: "admin"}, approval.ErrAnonymousApprover},
	} {
		if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{}, who.a); !errors.Is(err, who.want) {
			t.Errorf("approval by %+v: %v, want %v", who.a, err, who.want)
		}
	}
	if len(e.fx.list()) != 0 {
		t.Fatalf("a refused approval let the step run: %v", e.fx.list())
	}
	if !strings.Contains(strings.Join(e.actions(), " "), "respond.approve:denied") {
		t.Errorf("refused approvals are not audited: %v", e.actions())
	}
	if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{}, audit.Actor{User: "bob"}); err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	r, _ = e.svc.GetRun(ctx, r.ID)
	if r.State != RunSucceeded || r.Steps[0].Approval.GrantedBy.User != "bob" {
		t.Fatalf("%s %+v", r.State, r.Steps[0])
	}
	if got := strings.Join(e.fx.list(), ";"); got != "disable_user mallory;revoke_client shop" {
		t.Errorf("effects %q", got)
	}
	if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{}, audit.Actor{User: "carol"}); !errors.Is(err, ErrNothingToApprove) {
		t.Errorf("a second approval of a finished run: %v", err)
	}
}

// A dry run touches nothing.
func TestDryRunTouchesNothing(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, goodPlaybook)
	r, err := e.svc.Start(context.Background(), StartOptions{Playbook: "compromised-service", By: audit.Actor{User: "alice"}, DryRun: true,
		Alert: AlertFacts{ID: "a1", Rule: "denied-burst", Severity: "high", Group: "actor.spiffe_id=spiffe://example.org/orders"}})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	if r.State != RunDryRun || len(e.fx.list()) != 0 || e.changed != 0 {
		t.Fatalf("dry run acted: %s %v changed=%d", r.State, e.fx.list(), e.changed)
	}
	if !strings.Contains(r.Steps[0].Effect, "quarantine spiffe://example.org/orders") || !strings.Contains(r.Steps[3].Effect, "after approval by a approver") {
		t.Errorf("effects: %q / %q", r.Steps[0].Effect, r.Steps[3].Effect)
	}
	if qs, _ := e.svc.Quarantined(context.Background()); len(qs) != 0 {
		t.Errorf("dry run quarantined %v", qs)
	}
}

// The whole playbook: an alert starts it; it quarantines, revokes, opens
// an incident, waits for a second person, then sends the notice to an
// SMTP server; the timeline and the post-mortem say so.
func TestAlertToNotice(t *testing.T) {
	e := newTestEnv(t)
	addr, mails := smtpServer(t)
	e.put(t, strings.Replace(goodPlaybook, "127.0.0.1:25", addr, 1))
	ctx := context.Background()
	e.svc.OnAlert(ctx, store.Alert{ID: "al-1", Rule: "denied-burst", Severity: "critical", Group: "actor.spiffe_id=spiffe://example.org/orders",
		Summary: "orders refused 50 times", FirstSeen: time.Now()})
	e.svc.Wait()
	qs, _ := e.svc.Quarantined(ctx)
	if len(qs) != 1 || qs[0] != "spiffe://example.org/orders" || e.changed == 0 {
		t.Fatalf("quarantined %v (changed %d)", qs, e.changed)
	}
	runs, _ := e.svc.Runs(ctx, "")
	if len(runs) != 1 || runs[0].State != RunWaiting || runs[0].Incident == "" || runs[0].StartedBy != DetectActor {
		t.Fatalf("%+v", runs)
	}
	if len(mails()) != 0 {
		t.Fatal("the notice went out before the approval")
	}
	if _, err := e.svc.Approve(ctx, runs[0].Incident, ApprovalRef{}, audit.Actor{User: "bob"}); err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	m := mails()
	if len(m) != 1 || !strings.Contains(m[0], "Subject: incident "+runs[0].Incident) || !strings.Contains(m[0], "spiffe://example.org/orders was quarantined.") {
		t.Fatalf("mails %q", m)
	}
	md, err := e.svc.Report(ctx, runs[0].Incident)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Post-mortem: compromised spiffe://example.org/orders", "alert `al-1`", "approved by bob", "**notice**", "quarantined spiffe://example.org/orders"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	got := strings.Join(e.actions(), " ")
	for _, want := range []string{"playbook.run:success", "respond.quarantine:success", "respond.step:success", "incident.open:success",
		"respond.approval_requested:success", "respond.approve:success", "respond.notice:success", "playbook.run_end:success"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit lacks %s: %s", want, got)
		}
	}
	// Only an operator lifts, with a reason.
	if _, err := e.svc.Lift(ctx, "spiffe://example.org/orders", "", audit.Actor{User: "bob"}); err == nil {
		t.Error("lifted without a reason")
	}
	if _, err := e.svc.Lift(ctx, "spiffe://example.org/orders", "key rotated, binary rebuilt", audit.Actor{User: "bob"}); err != nil {
		t.Fatal(err)
	}
	if qs, _ := e.svc.Quarantined(ctx); len(qs) != 0 {
		t.Errorf("still quarantined: %v", qs)
	}
}

// smtpServer speaks enough SMTP (RFC 5321) for net/smtp and keeps messages.
func smtpServer(t *testing.T) (string, func() []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var msgs []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				io.WriteString(c, "220 test ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.Fields(line + " x")[0]) {
					case "EHLO", "HELO":
						io.WriteString(c, "250 test\r\n")
					case "DATA":
						io.WriteString(c, "354 go on\r\n")
						var b strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil || l == ".\r\n" {
								break
							}
							b.WriteString(l)
						}
						mu.Lock()
						msgs = append(msgs, b.String())
						mu.Unlock()
						io.WriteString(c, "250 queued\r\n")
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), msgs...) }
}

// A run the server stopped in the middle of is recorded as failed at the
// next start, its step not run twice; a run waiting for approval waits on.
func TestInterruptedRunsAreRecorded(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "name: p\nsteps:\n  - action: disable_user\n    with: {user: mallory}\n    approval: {role: approver}\n")
	waiting := e.run(t, "p", audit.Actor{User: "alice"}, nil)
	ctx := context.Background()
	// A run caught mid-step, as a crash leaves it.
	caught := &Run{ID: "run-caught", Playbook: "p", Version: 1, State: RunRunning, StartedBy: audit.Actor{User: "alice"}, StartedAt: time.Now(),
		Steps: []StepResult{{Name: "1-disable-user", Action: "disable_user", State: StepPending, OnFailure: "stop"}}}
	if err := e.svc.saveRun(ctx, caught); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	cancel()
	e.svc.Run(rctx)
	got, _ := e.svc.GetRun(ctx, "run-caught")
	if got.State != RunFailed || got.Steps[0].State != StepFailed || len(e.fx.list()) != 0 {
		t.Fatalf("%s %+v %v", got.State, got.Steps, e.fx.list())
	}
	if w, _ := e.svc.GetRun(ctx, waiting.ID); w.State != RunWaiting {
		t.Errorf("the waiting run became %s", w.State)
	}
}

// A step nobody approved never quarantines or revokes more than one
// workload: a pattern, the trust domain, or Rampart's own identities need
// a person (red team: a forged entry naming spiffe://TD/* took the trust
// domain down).
func TestBroadTargetsNeedApproval(t *testing.T) {
	for _, tc := range []struct {
		action, id string
		refused    bool
	}{
		{"quarantine", "spiffe://example.org/orders", false},
		{"revoke_svids", "spiffe://example.org/orders", false},
		{"quarantine", "spiffe://example.org/*", true},
		{"quarantine", "spiffe://example.org/team/*", true},
		{"revoke_svids", "spiffe://example.org", true},
		{"revoke_svids", "spiffe://example.org/rampart/agent/node-1", true},
		{"quarantine", "spiffe://example.org/rampart/server", true},
		{"quarantine", "not an id", true},
		{"incident", "spiffe://example.org/*", false}, // not an action on identities
	} {
		err := broadWithoutApproval(tc.action, tc.id)
		if (err != nil) != tc.refused {
			t.Errorf("%s %s: %v, refused want %v", tc.action, tc.id, err, tc.refused)
		}
	}
}

// A value in an alert's group cannot pose as another field (red team: a
// key named "x actor.spiffe_id=victim" made key-probing act on the
// victim).
func TestAlertLabelsCannotBeInjected(t *testing.T) {
	forged := "kms:x actor.spiffe_id=spiffe://example.org/payments"
	g := "actor.spiffe_id=spiffe://example.org/orders target=" + detect.EscapeGroupValue(forged)
	l := AlertFacts{Group: g}.Labels()
	if l["actor.spiffe_id"] != "spiffe://example.org/orders" || l["target"] != forged {
		t.Fatalf("labels %v", l)
	}
	// A repeated field: the first stands.
	if l := (AlertFacts{Group: "a=1 a=2"}).Labels(); l["a"] != "1" {
		t.Fatalf("labels %v", l)
	}
}

// A webhook receiver cannot bounce the run's JSON elsewhere: redirects are
// not followed (red team: a 307 re-posted it to a loopback admin path).
func TestWebhookRedirectNotFollowed(t *testing.T) {
	var hit atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Add(1) }))
	defer target.Close()
	bouncer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/v1/internal-admin", http.StatusTemporaryRedirect)
	}))
	defer bouncer.Close()
	c := (&Service{cfg: Config{AllowLocalWebhooks: true}}).client()
	resp, err := c.Post(bouncer.URL, "application/json", strings.NewReader("{}"))
	if err == nil {
		resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "not followed") || hit.Load() != 0 {
		t.Fatalf("redirect followed: err %v, target hit %d times", err, hit.Load())
	}
}

func TestSlackEscape(t *testing.T) {
	if got := slackEscape("key <!channel> <https://evil|ok> & co"); got != "key &lt;!channel&gt; &lt;https://evil|ok&gt; &amp; co" {
		t.Fatalf("%q", got)
	}
}

// An approval lands only on the step and request the approver saw: not on
// another step, not on an earlier request of the run (red team: an
// approval was bound to nothing and could approve whatever came next).
func TestApprovalBoundToStepAndRequest(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "name: p\nsteps:\n  - name: one\n    action: disable_user\n    with: {user: mallory}\n    approval: {role: approver}\n"+
		"  - name: two\n    action: revoke_client\n    with: {client: shop}\n    approval: {role: approver}\n")
	r := e.run(t, "p", audit.Actor{User: "alice"}, nil)
	ctx, bob := context.Background(), audit.Actor{User: "bob"}
	first := r.Steps[0].Approval
	if first == nil || !strings.HasPrefix(first.ID, "apr-") || first.ExpiresAt.Sub(first.RequestedAt) != DefaultApprovalTTL {
		t.Fatalf("request for approval %+v", first)
	}
	for _, want := range []ApprovalRef{{Step: "two"}, {Approval: "apr-0000"}, {Step: "one", Approval: "apr-0000"}} {
		if _, err := e.svc.Approve(ctx, r.ID, want, bob); !errors.Is(err, ErrApprovalMismatch) {
			t.Errorf("approval %+v while the run waits at one: %v, want ErrApprovalMismatch", want, err)
		}
	}
	if len(e.fx.list()) != 0 {
		t.Fatalf("a mismatched approval let a step run: %v", e.fx.list())
	}
	if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{Step: "one", Approval: first.ID}, bob); err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	r, _ = e.svc.GetRun(ctx, r.ID)
	if r.Next != 1 || r.State != RunWaiting || r.Steps[1].Approval == nil || r.Steps[1].Approval.ID == first.ID {
		t.Fatalf("after approving one: next %d %s %+v", r.Next, r.State, r.Steps[1].Approval)
	}
	// The first request's approval, sent again, does not approve two.
	if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{Step: "one", Approval: first.ID}, bob); !errors.Is(err, ErrApprovalMismatch) {
		t.Errorf("replayed approval of step one: %v", err)
	}
	if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{Step: "two", Approval: first.ID}, bob); !errors.Is(err, ErrApprovalMismatch) {
		t.Errorf("step two approved with step one's request: %v", err)
	}
	if got := strings.Join(e.fx.list(), ";"); got != "disable_user mallory" {
		t.Errorf("effects %q", got)
	}
}

// A request for approval expires: after it, nobody can approve it, and
// the step fails as its on_failure says, whether an approver or the sweep
// notices first.
func TestApprovalExpires(t *testing.T) {
	for _, by := range []string{"approver", "sweep"} {
		t.Run(by, func(t *testing.T) {
			e := newTestEnv(t)
			now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
			var mu sync.Mutex
			e.svc.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			e.put(t, "name: p\nsteps:\n  - name: one\n    action: disable_user\n    with: {user: mallory}\n    approval: {role: approver, expires: 1h}\n    on_failure: continue\n"+
				"  - action: revoke_client\n    with: {client: shop}\n")
			r := e.run(t, "p", audit.Actor{User: "alice"}, nil)
			ctx := context.Background()
			if got := r.Steps[0].Approval.ExpiresAt; !got.Equal(now.Add(time.Hour)) {
				t.Fatalf("expires at %v", got)
			}
			if n := e.svc.ExpireApprovals(ctx); n != 0 {
				t.Fatalf("the sweep moved %d runs before anything expired", n)
			}
			mu.Lock()
			now = now.Add(time.Hour)
			mu.Unlock()
			if by == "approver" {
				if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{}, audit.Actor{User: "bob"}); !errors.Is(err, ErrApprovalExpired) {
					t.Fatalf("approval after expiry: %v", err)
				}
			} else if n := e.svc.ExpireApprovals(ctx); n != 1 {
				t.Fatalf("the sweep moved %d runs, want 1", n)
			}
			e.svc.Wait()
			r, _ = e.svc.GetRun(ctx, r.ID)
			if r.Steps[0].State != StepFailed || !strings.Contains(r.Steps[0].Error, "approval expired") || r.State != RunFailed {
				t.Fatalf("%s %+v", r.State, r.Steps[0])
			}
			if got := strings.Join(e.fx.list(), ";"); got != "revoke_client shop" {
				t.Errorf("effects %q: the expired step must not run, the next one (on_failure: continue) must", got)
			}
			if !strings.Contains(strings.Join(e.actions(), " "), "respond.approval_expired:failure") {
				t.Errorf("expiry not audited: %v", e.actions())
			}
		})
	}
}

// Two approvers at once: one approval is granted, the other refused, the
// step runs once (run-state writes are compare and swap).
func TestConcurrentApprovalsOneWins(t *testing.T) {
	e := newTestEnv(t)
	e.put(t, "name: p\nsteps:\n  - action: disable_user\n    with: {user: mallory}\n    approval: {role: approver}\n")
	r := e.run(t, "p", audit.Actor{User: "alice"}, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	var ok atomic.Int32
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.svc.Approve(ctx, r.ID, ApprovalRef{}, audit.Actor{User: "approver" + string(rune('a'+i))}); err == nil {
				ok.Add(1)
			} else {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	e.svc.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d approvals granted, want exactly 1", ok.Load())
	}
	for err := range errs {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, ErrNothingToApprove) && !errors.Is(err, ErrBusy) {
			t.Errorf("a losing approval: %v", err)
		}
	}
	if got := e.fx.list(); len(got) != 1 {
		t.Errorf("the step ran %d times: %v", len(got), got)
	}
}

// A playbook's webhook cannot reach the server's own host or link: loopback
// (the admin API), link-local (cloud metadata), unspecified, by address or
// by a name that resolves there (red team, stop 31). A private address
// passes the check (dialled, nothing listens in the test).
func TestWebhookLocalAddressesRefused(t *testing.T) {
	var hit atomic.Int32
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Add(1) }))
	defer local.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(local.URL, "http://"))
	c := (&Service{}).client()
	for _, u := range []string{local.URL, "http://localhost:" + port, "http://[::1]:" + port, "http://0.0.0.0:" + port,
		"http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:" + port} {
		resp, err := c.Post(u, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "refused: a loopback, link-local or unspecified address") {
			t.Errorf("webhook to %s: %v, want refused", u, err)
		}
	}
	if hit.Load() != 0 {
		t.Fatalf("a local receiver got %d webhooks", hit.Load())
	}
	if err := refuseLocal("tcp", "10.1.2.3:443", nil); err != nil {
		t.Errorf("a private address refused: %v", err)
	}
	// The host's own interface addresses, metadata endpoints outside
	// link-local space, and NAT64 addresses embedding loopback.
	ifAddrs, _ := net.InterfaceAddrs()
	var own []string
	for _, a := range ifAddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own = append(own, net.JoinHostPort(p.Addr().Unmap().String(), "80"))
		}
	}
	for _, addr := range append(own, "[fd00:ec2::254]:80", "100.100.100.200:80", "[64:ff9b::7f00:1]:80", "[64:ff9b::a9fe:a9fe]:80") {
		if err := refuseLocal("tcp", addr, nil); err == nil {
			t.Errorf("webhook to %s allowed", addr)
		}
	}
	allowed := (&Service{cfg: Config{AllowLocalWebhooks: true}}).client()
	resp, err := allowed.Post(local.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hit.Load() != 1 {
		t.Errorf("with AllowLocalWebhooks the local receiver got %d webhooks, want 1", hit.Load())
	}
}
