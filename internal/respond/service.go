package respond

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rampartsec/rampart/internal/approval"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/store"
)

// Config is what a Service needs.
type Config struct {
	Store   store.RespondStore
	Effects Effects
	// Append writes audit entries (every step, approval, quarantine,
	// notice and incident change is one).
	Append func(ctx context.Context, es ...*audit.Entry) error
	// Changed wakes every proxy and SDK service waiting for news (after a
	// quarantine or a lift): the server's long-poll notification.
	Changed func(ctx context.Context)
	// Alert reads a stored alert (runs started for one by hand).
	Alert func(ctx context.Context, id string) (store.Alert, error)
	// KnownRule says whether a detection rule exists (playbook upload).
	KnownRule func(string) bool
	// Scoper answers breach-scope questions from the audit log (nil: scope
	// steps and reports are refused).
	Scoper *Scoper
	Client *http.Client // webhooks and Slack (nil: a client with a 10 s timeout)
	// AllowLocalWebhooks lets webhooks and Slack notices reach loopback
	// and link-local addresses (refused by default; tests, single-host
	// setups).
	AllowLocalWebhooks bool
	// SMTPTimeout bounds one SMTP exchange (0: 10 s).
	SMTPTimeout time.Duration
	// ApprovalTTL is how long a request for approval stands unless the
	// step says (0: DefaultApprovalTTL).
	ApprovalTTL time.Duration
	Now         func() time.Time
	Log         *slog.Logger
}

// Service runs playbooks, keeps incidents and quarantines.
type Service struct {
	cfg Config

	mu      sync.Mutex
	ctx     context.Context // runs live in it (Run's)
	running map[string]bool // run IDs advancing now
	wg      sync.WaitGroup
}

// Actor names the respond engine in the audit log when it acts for a run.
var Actor = audit.Actor{User: "rampart-respond"}

// DetectActor is who starts a run an alert triggered.
var DetectActor = audit.Actor{User: "rampart-detect"}

// New returns a service; Run gives it the context its runs live in.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Append == nil {
		cfg.Append = func(context.Context, ...*audit.Entry) error { return nil }
	}
	if cfg.Changed == nil {
		cfg.Changed = func(context.Context) {}
	}
	if cfg.SMTPTimeout == 0 {
		cfg.SMTPTimeout = 10 * time.Second
	}
	return &Service{cfg: cfg, ctx: context.Background(), running: map[string]bool{}}
}

// Run holds the service's runs in ctx until it is done, then waits for the
// steps under way (each bounded by its timeout).
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	s.interrupted(context.WithoutCancel(ctx))
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return nil
		case <-t.C:
			s.ExpireApprovals(ctx)
		}
	}
}

// interrupted ends the runs a stop caught in the middle of a step: the
// step may or may not have acted, so it is not run again; it is recorded
// as failed, and the run with it. Runs waiting for approval stay waiting.
func (s *Service) interrupted(ctx context.Context) {
	runs, err := s.Runs(ctx, "")
	if err != nil {
		s.cfg.Log.Error("respond: listing runs at start failed", "err", err)
		return
	}
	for _, r := range runs {
		if r.State != RunRunning {
			continue
		}
		s.mu.Lock()
		busy := s.running[r.ID]
		s.mu.Unlock()
		if busy {
			continue
		}
		for j := r.Next; j < len(r.Steps); j++ {
			r.Steps[j].State, r.Steps[j].Error = StepSkipped, "the server stopped during the run"
		}
		if r.Next < len(r.Steps) {
			r.Steps[r.Next].State = StepFailed
		}
		r.State, r.Failed, r.EndedAt = RunFailed, true, s.cfg.Now()
		s.finish(ctx, r)
		if err := s.saveRun(ctx, r); err != nil {
			s.cfg.Log.Error("respond: recording an interrupted run failed", "run", r.ID, "err", err)
		}
	}
}

// Wait waits for the runs advancing now (tests, drills).
func (s *Service) Wait() { s.wg.Wait() }

func (s *Service) client() *http.Client {
	if s.cfg.Client != nil {
		return s.cfg.Client
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !s.cfg.AllowLocalWebhooks {
		d.Control = refuseLocal
	}
	return &http.Client{Timeout: 10 * time.Second, CheckRedirect: noRedirects,
		Transport: &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: true}}
}

// refuseLocal stops a webhook from reaching this host or its link: a
// playbook author (playbook.write) could otherwise make the server post
// to its own admin API on loopback, to another local service, or to a
// cloud metadata endpoint (169.254.169.254). It checks the address
// dialled, after name resolution, so a name that resolves to loopback
// (DNS rebinding) is refused too. Private (RFC 1918) addresses are
// allowed: chat servers on the internal network are the usual receivers.
func refuseLocal(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("respond: webhook address %s: %w", address, err)
	}
	ip = ip.Unmap()
	if local(ip) {
		return fmt.Errorf("respond: webhook to %s refused: a loopback, link-local or unspecified address (the server's own host or link; rampart server --playbook-webhooks-local allows it)", address)
	}
	return nil
}

// metadataAddrs are cloud metadata endpoints outside link-local space
// (AWS's IPv6 IMDS, Alibaba Cloud's, Oracle's).
var metadataAddrs = []netip.Addr{netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200"), netip.MustParseAddr("192.0.0.192")}

// nat64 is the well-known NAT64 prefix: an address in it reaches the IPv4
// address it embeds.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// local says whether ip is this host or its link: loopback, link-local,
// unspecified, multicast, an address of one of this host's interfaces
// (red team: the host's own 192.0.2.2 reached a service bound to all
// addresses), a cloud metadata endpoint, or a NAT64 address embedding
// any of those.
func local(ip netip.Addr) bool {
	if nat64.Contains(ip) {
		b := ip.As16()
		if local(netip.AddrFrom4([4]byte(b[12:]))) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() ||
		slices.Contains(metadataAddrs, ip) {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: refuse
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// noRedirects keeps webhooks where the playbook sent them: a receiver (or
// whoever took it over) must not redirect the run's JSON to another
// address, the server's own API on loopback say (red team).
func noRedirects(req *http.Request, via []*http.Request) error {
	return fmt.Errorf("respond: webhook %s redirected to %s: not followed", via[0].URL.Redacted(), req.URL.Redacted())
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// record appends an audit entry for what the service did.
func (s *Service) record(ctx context.Context, actor audit.Actor, action, target, outcome, reason string, details map[string]string) {
	e := &audit.Entry{V: audit.SchemaVersion, Time: s.cfg.Now(), Actor: actor, Action: action, Target: target, Outcome: outcome,
		Reason: reason, Source: "server", Details: details}
	if err := s.cfg.Append(context.WithoutCancel(ctx), e); err != nil {
		s.cfg.Log.Error("respond: recording in the audit log failed", "action", action, "err", err)
	}
}

// --- Playbooks -------------------------------------------------------------

// PutPlaybook validates src and stores it as the playbook's next version.
func (s *Service) PutPlaybook(ctx context.Context, src []byte, by audit.Actor) (store.Playbook, *Playbook, error) {
	p, err := Parse(src, s.cfg.KnownRule)
	if err != nil {
		return store.Playbook{}, nil, err
	}
	sp, err := s.cfg.Store.PutPlaybook(ctx, store.Playbook{Name: p.Name, Source: string(src), CreatedAt: s.cfg.Now(), CreatedBy: actorString(by)})
	if err != nil {
		return sp, nil, err
	}
	s.record(ctx, by, "playbook.put", p.Name, audit.OutcomeSuccess, "", map[string]string{"version": fmt.Sprint(sp.Version), "steps": fmt.Sprint(len(p.Steps))})
	return sp, p, nil
}

// Playbook returns a stored version (0: latest) parsed.
func (s *Service) Playbook(ctx context.Context, name string, version int) (store.Playbook, *Playbook, error) {
	sp, err := s.cfg.Store.GetPlaybook(ctx, name, version)
	if err != nil {
		return sp, nil, err
	}
	// Parsed without the rule check: a rule removed since the upload
	// must not make a stored playbook unreadable.
	p, err := Parse([]byte(sp.Source), nil)
	return sp, p, err
}

func actorString(a audit.Actor) string {
	switch {
	case a.User != "" && a.SpiffeID != "":
		return a.User + " via " + a.SpiffeID
	case a.User != "":
		return a.User
	}
	return a.SpiffeID
}

// --- Runs ------------------------------------------------------------------

// AlertFacts is what a run knows of the alert that started it.
type AlertFacts struct {
	ID        string    `json:"id,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Severity  string    `json:"severity,omitempty"`
	Group     string    `json:"group,omitempty"`
	Summary   string    `json:"summary,omitempty"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
}

// FactsOf returns the facts of a stored alert.
func FactsOf(a store.Alert) AlertFacts {
	return AlertFacts{ID: a.ID, Rule: a.Rule, Severity: a.Severity, Group: a.Group, Summary: a.Summary, FirstSeen: a.FirstSeen}
}

// Labels parses the alert's group ("field=value field=value").
func (a AlertFacts) Labels() map[string]string {
	out := map[string]string{}
	// Values are escaped (detect.EscapeGroupValue): a field's value
	// cannot pose as another field, and the first of a name stands.
	for _, kv := range strings.Fields(a.Group) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, seen := out[k]; seen {
			continue
		}
		if u, err := url.PathUnescape(v); err == nil {
			out[k] = u
		}
	}
	return out
}

// Run states.
const (
	RunRunning   = "running"
	RunWaiting   = "waiting_approval"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"  // a step failed and said stop
	RunStopped   = "stopped" // a stop step ended it
	RunDryRun    = "dry_run"
)

// Step states.
const (
	StepPending   = "pending"
	StepWaiting   = "waiting_approval"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepWould     = "would" // dry run
)

// Run is one run of a playbook.
type Run struct {
	ID        string            `json:"id"`
	Playbook  string            `json:"playbook"`
	Version   int               `json:"version"`
	Incident  string            `json:"incident,omitempty"`
	State     string            `json:"state"`
	DryRun    bool              `json:"dry_run,omitempty"`
	Drill     bool              `json:"drill,omitempty"`
	StartedBy audit.Actor       `json:"started_by"`
	StartedAt time.Time         `json:"started_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	EndedAt   time.Time         `json:"ended_at,omitzero"`
	Alert     AlertFacts        `json:"alert"`
	Vars      map[string]string `json:"vars"`
	Steps     []StepResult      `json:"steps"`
	Next      int               `json:"next"`
	Failed    bool              `json:"failed,omitempty"`
	// ContainedAt is when the first quarantine step took effect (drills
	// measure alert → containment).
	ContainedAt time.Time `json:"contained_at,omitzero"`

	rev int64 // the stored revision it was read at (saveRun: compare and swap)
}

// StepResult is what became of a step.
type StepResult struct {
	Name      string            `json:"name"`
	Action    string            `json:"action"`
	State     string            `json:"state"`
	Effect    string            `json:"effect,omitempty"` // what it does (dry run) or did
	Args      map[string]string `json:"args,omitempty"`   // its arguments, variables substituted
	Result    string            `json:"result,omitempty"`
	Error     string            `json:"error,omitempty"`
	OnFailure string            `json:"on_failure"`
	Started   time.Time         `json:"started,omitzero"`
	Ended     time.Time         `json:"ended,omitzero"`
	Approval  *ApprovalRecord   `json:"approval,omitempty"`
}

// ApprovalRecord is a step's approval: asked for, then granted.
type ApprovalRecord struct {
	// ID names this request for approval, and only it: an approval that
	// names it cannot land on another step or on a later request.
	ID          string      `json:"id,omitempty"`
	Role        string      `json:"role"`
	RequestedAt time.Time   `json:"requested_at"`
	ExpiresAt   time.Time   `json:"expires_at,omitzero"`
	GrantedBy   audit.Actor `json:"granted_by,omitzero"`
	GrantedAt   time.Time   `json:"granted_at,omitzero"`
}

// saveRun writes r over the revision it was read at: a run another
// writer changed since (a second approval, a sweep of expired approvals)
// is not overwritten; the write fails with store.ErrConflict.
func (s *Service) saveRun(ctx context.Context, r *Run) error {
	r.UpdatedAt = s.cfg.Now()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rev, err := s.cfg.Store.PutRun(context.WithoutCancel(ctx), store.PlaybookRun{ID: r.ID, Playbook: r.Playbook, Version: r.Version, Incident: r.Incident,
		State: r.State, StartedAt: r.StartedAt, UpdatedAt: r.UpdatedAt, Data: b, Revision: r.rev})
	if err != nil {
		return err
	}
	r.rev = rev
	return nil
}

// GetRun returns a run.
func (s *Service) GetRun(ctx context.Context, id string) (*Run, error) {
	sr, err := s.cfg.Store.GetRun(ctx, id)
	if err != nil {
		return nil, err
	}
	return decodeRun(sr)
}

func decodeRun(sr store.PlaybookRun) (*Run, error) {
	var r Run
	if err := json.Unmarshal(sr.Data, &r); err != nil {
		return nil, fmt.Errorf("respond: run %s: %w", sr.ID, err)
	}
	r.rev = sr.Revision
	return &r, nil
}

// Runs lists the runs of an incident ("": all).
func (s *Service) Runs(ctx context.Context, incident string) ([]*Run, error) {
	srs, err := s.cfg.Store.ListRuns(ctx, incident)
	if err != nil {
		return nil, err
	}
	out := make([]*Run, 0, len(srs))
	for _, sr := range srs {
		r, err := decodeRun(sr)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// StartOptions says how to start a run.
type StartOptions struct {
	Playbook string
	Version  int // 0: latest
	Alert    AlertFacts
	// Vars given by hand (a run without an alert, a drill); they
	// override the ones bound from the alert.
	Vars   map[string]string
	By     audit.Actor
	DryRun bool
	Drill  bool
}

// ErrBusy: the run is advancing now (an approval arrived twice).
var ErrBusy = errors.New("respond: the run is advancing now")

// Start starts a run. A dry run only says what each step would do, and
// touches nothing; a real run advances in the background (Wait).
func (s *Service) Start(ctx context.Context, o StartOptions) (*Run, error) {
	sp, p, err := s.Playbook(ctx, o.Playbook, o.Version)
	if err != nil {
		return nil, err
	}
	r, err := s.newRun(p, sp.Version, o)
	if err != nil {
		return nil, err
	}
	if o.DryRun {
		s.dryRun(p, r)
		s.record(ctx, o.By, "playbook.dry_run", p.Name, audit.OutcomeSuccess, "", map[string]string{"run": r.ID, "alert_id": o.Alert.ID})
		return r, s.saveRun(ctx, r)
	}
	if err := s.saveRun(ctx, r); err != nil {
		return nil, err
	}
	s.record(ctx, o.By, "playbook.run", p.Name, audit.OutcomeSuccess, "", map[string]string{"run": r.ID, "version": fmt.Sprint(sp.Version), "alert_id": o.Alert.ID})
	s.spawn(r.ID)
	return r, nil
}

func (s *Service) newRun(p *Playbook, version int, o StartOptions) (*Run, error) {
	now := s.cfg.Now()
	r := &Run{ID: newID("run-"), Playbook: p.Name, Version: version, State: RunRunning, DryRun: o.DryRun, Drill: o.Drill,
		StartedBy: o.By, StartedAt: now, Alert: o.Alert, Vars: map[string]string{}}
	labels := o.Alert.Labels()
	for k, field := range p.Vars {
		switch field {
		case "rule":
			r.Vars[k] = o.Alert.Rule
		case "severity":
			r.Vars[k] = o.Alert.Severity
		case "summary":
			r.Vars[k] = o.Alert.Summary
		case "id":
			r.Vars[k] = o.Alert.ID
		default:
			r.Vars[k] = labels[field]
		}
	}
	for k, v := range o.Vars {
		if _, ok := p.Vars[k]; !ok {
			return nil, fmt.Errorf("respond: variable %q is not declared by playbook %s (it has %s)", k, p.Name, strings.Join(mapKeys(p.Vars), ", "))
		}
		r.Vars[k] = v
	}
	for _, st := range p.Steps {
		r.Steps = append(r.Steps, StepResult{Name: st.Name, Action: st.Action, State: StepPending, OnFailure: st.OnFailure})
	}
	return r, nil
}

// dryRun says what each step would do, touching nothing.
func (s *Service) dryRun(p *Playbook, r *Run) {
	for i, st := range p.Steps {
		args, err := s.args(r, st)
		r.Steps[i].State, r.Steps[i].Args = StepWould, args
		if err != nil {
			r.Steps[i].Error = err.Error()
			continue
		}
		r.Steps[i].Effect = actions[st.Action].Effect(step{svc: s, run: r, args: args})
		if st.Approval != nil {
			r.Steps[i].Effect += " (after approval by a " + string(st.Approval.Role) + " other than " + actorString(r.StartedBy) + ")"
		}
		if st.When == "failed" {
			r.Steps[i].Effect += " (only if an earlier step failed)"
		}
		if st.OnFailure == "continue" {
			r.Steps[i].Effect += " (on failure: continue)"
		}
	}
	r.State, r.EndedAt = RunDryRun, s.cfg.Now()
}

// simulate dry-runs an unstored playbook against an alert.
func (s *Service) simulate(p *Playbook, a AlertFacts, vars map[string]string, by audit.Actor) (*Run, error) {
	r, err := s.newRun(p, 0, StartOptions{Alert: a, Vars: vars, By: by, DryRun: true})
	if err != nil {
		return nil, err
	}
	s.dryRun(p, r)
	return r, nil
}

// alerts returns the facts of a stored alert.
func (s *Service) alerts(ctx context.Context, id string) (AlertFacts, error) {
	if s.cfg.Alert == nil {
		return AlertFacts{}, errors.New("respond: alerts are not available here")
	}
	a, err := s.cfg.Alert(ctx, id)
	if err != nil {
		return AlertFacts{}, err
	}
	return FactsOf(a), nil
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// spawn advances run id in the background unless it is advancing already.
func (s *Service) spawn(id string) bool {
	s.mu.Lock()
	if s.running[id] {
		s.mu.Unlock()
		return false
	}
	s.running[id] = true
	ctx := s.ctx
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, id)
			s.mu.Unlock()
		}()
		if err := s.advance(ctx, id); err != nil {
			s.cfg.Log.Error("respond: run failed to advance", "run", id, "err", err)
		}
	}()
	return true
}

// args substitutes the run's variables into a step's arguments; a
// variable without a value is an error (a step must never act on "").
func (s *Service) args(r *Run, st Step) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range st.With {
		var missing string
		out[k] = varRE.ReplaceAllStringFunc(v, func(m string) string {
			name := m[2 : len(m)-1]
			val := s.varValue(r, name)
			if val == "" {
				missing = name
			}
			return val
		})
		if missing != "" {
			return nil, fmt.Errorf("with.%s: variable ${%s} has no value in this run", k, missing)
		}
	}
	return out, nil
}

func (s *Service) varValue(r *Run, name string) string {
	switch name {
	case "alert.id":
		return r.Alert.ID
	case "alert.rule":
		return r.Alert.Rule
	case "alert.severity":
		return r.Alert.Severity
	case "alert.summary":
		return r.Alert.Summary
	case "alert.group":
		return r.Alert.Group
	case "incident.id":
		return r.Incident
	case "run.id":
		return r.ID
	case "playbook":
		return r.Playbook
	}
	return r.Vars[name]
}

// advance runs the steps of run id from where it stands until it ends or
// waits for an approval.
func (s *Service) advance(ctx context.Context, id string) error {
	r, err := s.GetRun(ctx, id)
	if err != nil {
		return err
	}
	_, p, err := s.Playbook(ctx, r.Playbook, r.Version)
	if err != nil {
		return err
	}
	r.State = RunRunning
	for r.Next < len(p.Steps) {
		i := r.Next
		st := p.Steps[i]
		res := &r.Steps[i]
		if st.When == "failed" && !r.Failed {
			res.State, res.Result = StepSkipped, "no earlier step failed"
			r.Next++
			continue
		}
		var stopped bool
		switch {
		case st.Approval != nil && res.Approval != nil && res.Approval.GrantedAt.IsZero() && s.expired(res.Approval):
			// Nobody approved in time: the step fails (its on_failure
			// says what follows); it never runs on a stale request.
			now := s.cfg.Now()
			res.Started, res.Ended = now, now
			res.State, res.Error = StepFailed, fmt.Sprintf("approval expired: requested %s, nobody approved by %s",
				res.Approval.RequestedAt.UTC().Format(time.RFC3339), res.Approval.ExpiresAt.UTC().Format(time.RFC3339))
			s.record(ctx, Actor, "respond.approval_expired", r.Playbook, audit.OutcomeFailure, res.Error,
				map[string]string{"run": r.ID, "step": st.Name, "approval": res.Approval.ID, "incident": r.Incident, "on_failure": st.OnFailure})
		case st.Approval != nil && (res.Approval == nil || res.Approval.GrantedAt.IsZero()):
			if res.Approval == nil {
				now := s.cfg.Now()
				res.Approval = &ApprovalRecord{ID: newID("apr-"), Role: string(st.Approval.Role), RequestedAt: now, ExpiresAt: now.Add(s.approvalTTL(st))}
				s.record(ctx, Actor, "respond.approval_requested", r.Playbook, audit.OutcomeSuccess, "",
					map[string]string{"run": r.ID, "step": st.Name, "approval": res.Approval.ID, "role": string(st.Approval.Role),
						"expires_at": res.Approval.ExpiresAt.UTC().Format(time.RFC3339), "incident": r.Incident, "started_by": actorString(r.StartedBy)})
			}
			res.State, r.State = StepWaiting, RunWaiting
			return s.saveRun(ctx, r)
		default:
			stopped = s.runStep(ctx, r, st, res)
		}
		if err := s.saveRun(ctx, r); err != nil {
			return err
		}
		switch {
		case stopped:
			r.State, r.EndedAt = RunStopped, s.cfg.Now()
			for j := i + 1; j < len(r.Steps); j++ {
				r.Steps[j].State, r.Steps[j].Result = StepSkipped, "the playbook stopped at "+st.Name
			}
			r.Next = len(p.Steps)
			s.finish(ctx, r)
			return s.saveRun(ctx, r)
		case res.State == StepFailed:
			r.Failed = true
			if st.OnFailure == "stop" {
				r.State, r.EndedAt = RunFailed, s.cfg.Now()
				for j := i + 1; j < len(r.Steps); j++ {
					r.Steps[j].State = StepSkipped
					r.Steps[j].Result = "the run stopped at " + st.Name
				}
				r.Next = len(p.Steps)
				s.finish(ctx, r)
				return s.saveRun(ctx, r)
			}
		}
		r.Next++
	}
	r.State, r.EndedAt = RunSucceeded, s.cfg.Now()
	if r.Failed {
		r.State = RunFailed
	}
	s.finish(ctx, r)
	return s.saveRun(ctx, r)
}

func (s *Service) finish(ctx context.Context, r *Run) {
	outcome := audit.OutcomeSuccess
	if r.State == RunFailed {
		outcome = audit.OutcomeFailure
	}
	s.record(ctx, Actor, "playbook.run_end", r.Playbook, outcome, r.State, map[string]string{"run": r.ID, "incident": r.Incident, "state": r.State})
}

// broadWithoutApproval refuses, for a step no person approved, to
// quarantine or revoke more than one workload: a pattern, the trust
// domain itself, or Rampart's own agents and server (red team: one forged
// entry naming "spiffe://TD/*" quarantined and revoked the whole trust
// domain). Such a step must have an approval.
func broadWithoutApproval(action, identity string) error {
	if action != "quarantine" && action != "revoke_svids" {
		return nil
	}
	id, err := spiffeid.FromString(identity)
	switch {
	case strings.Contains(identity, "*") || err != nil:
		return fmt.Errorf("%s %q: a pattern (or not one SPIFFE ID) is acted on only with a person's approval (add approval: to the step)", action, identity)
	case id.Path() == "" || id.Path() == "/rampart" || strings.HasPrefix(id.Path(), "/rampart/"):
		return fmt.Errorf("%s %s: the trust domain itself, or Rampart's own agents and server, are acted on only with a person's approval", action, identity)
	}
	return nil
}

// runStep runs one step with its timeout and records its result; true:
// it was a stop step.
func (s *Service) runStep(ctx context.Context, r *Run, st Step, res *StepResult) (stopped bool) {
	res.Started = s.cfg.Now()
	args, err := s.args(r, st)
	res.Args = args
	if err == nil && st.Approval == nil {
		err = broadWithoutApproval(st.Action, args["identity"])
	}
	var out string
	if err == nil {
		type result struct {
			out      string
			err      error
			incident string
		}
		sctx, cancel := context.WithTimeout(ctx, st.Timeout)
		ch := make(chan result, 1)
		rc := *r // the action's copy: a late action never writes the run
		go func() {
			o, e := actions[st.Action].Do(sctx, step{svc: s, run: &rc, args: args})
			ch <- result{o, e, rc.Incident}
		}()
		select {
		case got := <-ch:
			out, err = got.out, got.err
			r.Incident = got.incident
		case <-sctx.Done():
			// The action did not return in time: the run goes on without
			// it (its own effects, if any, are recorded by themselves).
			err = fmt.Errorf("timed out after %v", st.Timeout)
		}
		cancel()
	}
	res.Ended = s.cfg.Now()
	details := map[string]string{"run": r.ID, "step": st.Name, "action": st.Action, "incident": r.Incident}
	switch {
	case errors.Is(err, errStop):
		res.State, res.Result = StepSucceeded, "stopped: "+orDefault(args["reason"], "the playbook says so")
		s.record(ctx, Actor, "respond.step", r.Playbook, audit.OutcomeSuccess, res.Result, details)
		return true
	case err != nil:
		res.State, res.Error = StepFailed, err.Error()
		details["on_failure"] = st.OnFailure
		s.record(ctx, Actor, "respond.step", r.Playbook, audit.OutcomeFailure, err.Error(), details)
	default:
		res.State, res.Result = StepSucceeded, out
		if st.Action == "quarantine" && r.ContainedAt.IsZero() {
			r.ContainedAt = res.Ended
		}
		s.record(ctx, Actor, "respond.step", r.Playbook, audit.OutcomeSuccess, out, details)
	}
	return false
}

// Approve grants the approval a run waits for (run: a run ID, or an
// incident whose run waits). The approver must be a named party other
// than whoever started the run (package approval): the two-person rule.
//
// want binds the approval to what the approver saw: the step's name and
// the approval request's ID (either may be empty; the CLI sends both). An
// approval for another step, or for an earlier request, is refused with
// ErrApprovalMismatch; one after the request expired with
// ErrApprovalExpired (and the step fails as its on_failure says). Two
// approvals of one request: the first wins, the second gets
// store.ErrConflict.
func (s *Service) Approve(ctx context.Context, ref string, want ApprovalRef, approver audit.Actor) (*Run, error) {
	r, err := s.waitingRun(ctx, ref)
	if err != nil {
		return nil, err
	}
	res := &r.Steps[r.Next]
	details := map[string]string{"run": r.ID, "step": res.Name, "incident": r.Incident, "started_by": actorString(r.StartedBy)}
	if res.Approval != nil {
		details["approval"] = res.Approval.ID
	}
	if err := approval.Check(r.StartedBy, approver); err != nil {
		s.record(ctx, approver, "respond.approve", r.Playbook, audit.OutcomeDenied, err.Error(), details)
		return nil, err
	}
	if res.Approval == nil || !res.Approval.GrantedAt.IsZero() {
		return nil, fmt.Errorf("%w: run %s step %s", ErrNothingToApprove, r.ID, res.Name)
	}
	if err := want.matches(res); err != nil {
		s.record(ctx, approver, "respond.approve", r.Playbook, audit.OutcomeDenied, err.Error(), details)
		return nil, err
	}
	if s.expired(res.Approval) {
		err := fmt.Errorf("%w: step %s of run %s was to be approved by %s", ErrApprovalExpired, res.Name, r.ID, res.Approval.ExpiresAt.UTC().Format(time.RFC3339))
		s.record(ctx, approver, "respond.approve", r.Playbook, audit.OutcomeDenied, err.Error(), details)
		s.spawn(r.ID) // the step fails; the run goes on as on_failure says
		return nil, err
	}
	res.Approval.GrantedBy, res.Approval.GrantedAt = approver, s.cfg.Now()
	res.State = StepPending
	if err := s.saveRun(ctx, r); err != nil {
		return nil, err
	}
	details["role"] = res.Approval.Role
	s.record(ctx, approver, "respond.approve", r.Playbook, audit.OutcomeSuccess, "", details)
	if !s.spawn(r.ID) {
		return nil, ErrBusy
	}
	return r, nil
}

// ErrNothingToApprove: no run waits for an approval there.
var ErrNothingToApprove = errors.New("respond: nothing waits for an approval")

// ErrApprovalMismatch: the approval names another step or request than
// the one the run waits for (it moved on, or the approver looked at
// another run).
var ErrApprovalMismatch = errors.New("respond: the approval is not for the step the run waits for")

// ErrApprovalExpired: the request for approval expired unanswered.
var ErrApprovalExpired = errors.New("respond: the request for approval expired")

// DefaultApprovalTTL is how long a request for approval stands when
// neither the step (approval.expires) nor the server says.
const DefaultApprovalTTL = 24 * time.Hour

// ApprovalRef is what an approver approves: a step's name and the ID of
// its request for approval (either may be empty: then it is not checked).
type ApprovalRef struct {
	Step     string `json:"step,omitempty"`
	Approval string `json:"approval,omitempty"`
}

func (a ApprovalRef) matches(res *StepResult) error {
	if a.Step != "" && a.Step != res.Name {
		return fmt.Errorf("%w: you approved step %q; the run waits at step %q", ErrApprovalMismatch, a.Step, res.Name)
	}
	if a.Approval != "" && a.Approval != res.Approval.ID {
		return fmt.Errorf("%w: you approved request %q; step %q waits on request %q", ErrApprovalMismatch, a.Approval, res.Name, res.Approval.ID)
	}
	return nil
}

func (s *Service) approvalTTL(st Step) time.Duration {
	switch {
	case st.Approval.Expires > 0:
		return st.Approval.Expires
	case s.cfg.ApprovalTTL > 0:
		return s.cfg.ApprovalTTL
	}
	return DefaultApprovalTTL
}

// expired says whether a request for approval is past its expiry. A
// request recorded before expiries existed expires DefaultApprovalTTL
// after it was made.
func (s *Service) expired(a *ApprovalRecord) bool {
	exp := a.ExpiresAt
	if exp.IsZero() {
		exp = a.RequestedAt.Add(DefaultApprovalTTL)
	}
	return !s.cfg.Now().Before(exp)
}

// ExpireApprovals fails the steps whose requests for approval expired
// unanswered (each run then goes on as the step's on_failure says). Run
// calls it every minute; it returns how many runs it moved on.
func (s *Service) ExpireApprovals(ctx context.Context) int {
	runs, err := s.Runs(ctx, "")
	if err != nil {
		s.cfg.Log.Error("respond: listing runs for expired approvals failed", "err", err)
		return 0
	}
	n := 0
	for _, r := range runs {
		if r.State != RunWaiting || r.Next >= len(r.Steps) {
			continue
		}
		if a := r.Steps[r.Next].Approval; a != nil && a.GrantedAt.IsZero() && s.expired(a) && s.spawn(r.ID) {
			n++
		}
	}
	return n
}

func (s *Service) waitingRun(ctx context.Context, ref string) (*Run, error) {
	if strings.HasPrefix(ref, "run-") {
		r, err := s.GetRun(ctx, ref)
		if err != nil {
			return nil, err
		}
		if r.State != RunWaiting {
			return nil, fmt.Errorf("%w: run %s is %s", ErrNothingToApprove, ref, r.State)
		}
		return r, nil
	}
	runs, err := s.Runs(ctx, ref)
	if err != nil {
		return nil, err
	}
	var waiting []*Run
	for _, r := range runs {
		if r.State == RunWaiting {
			waiting = append(waiting, r)
		}
	}
	switch len(waiting) {
	case 0:
		return nil, fmt.Errorf("%w: in incident %s", ErrNothingToApprove, ref)
	case 1:
		return waiting[0], nil
	}
	return nil, fmt.Errorf("respond: %d runs of incident %s wait for approval: name the run", len(waiting), ref)
}

// OnAlert starts every playbook whose trigger matches a. It is what the
// detector calls for each new alert.
func (s *Service) OnAlert(ctx context.Context, a store.Alert) {
	pbs, err := s.cfg.Store.ListPlaybooks(ctx)
	if err != nil {
		s.cfg.Log.Error("respond: listing playbooks for an alert failed", "alert", a.ID, "err", err)
		return
	}
	facts := FactsOf(a)
	for _, sp := range pbs {
		p, err := Parse([]byte(sp.Source), nil)
		if err != nil || !p.Matches(facts) {
			continue
		}
		if _, err := s.Start(ctx, StartOptions{Playbook: p.Name, Version: sp.Version, Alert: facts, By: DetectActor}); err != nil {
			s.cfg.Log.Error("respond: starting a playbook for an alert failed", "playbook", p.Name, "alert", a.ID, "err", err)
		}
	}
}

// --- Quarantine ------------------------------------------------------------

// Quarantine holds pattern away from every service: every proxy and SDK
// service refuses it in both directions and ends its open connections as
// soon as its sync wakes (a long poll: well within 2 s).
func (s *Service) Quarantine(ctx context.Context, pattern, reason, incident string, by audit.Actor) (store.Quarantine, error) {
	if err := mtls.CheckQuarantinePattern(pattern); err != nil {
		return store.Quarantine{}, fmt.Errorf("respond: quarantine: %w", err)
	}
	if strings.TrimSpace(reason) == "" {
		return store.Quarantine{}, errors.New("respond: quarantine: a reason is required")
	}
	q := store.Quarantine{ID: newID("q-"), Pattern: pattern, Reason: reason, Incident: incident, CreatedAt: s.cfg.Now(), CreatedBy: actorString(by)}
	if err := s.cfg.Store.AddQuarantine(ctx, q); err != nil {
		return q, err
	}
	s.cfg.Changed(ctx)
	s.record(ctx, by, "respond.quarantine", pattern, audit.OutcomeSuccess, reason, map[string]string{"quarantine": q.ID, "incident": incident})
	if incident != "" {
		s.event(ctx, incident, "quarantine", by, "quarantined "+pattern+": "+reason)
	}
	return q, nil
}

// Lift ends the quarantine of pattern. Only an operator lifts (the route
// says who may), and the reason is recorded.
func (s *Service) Lift(ctx context.Context, pattern, reason string, by audit.Actor) ([]store.Quarantine, error) {
	if len(strings.TrimSpace(reason)) < 8 {
		return nil, errors.New("respond: lift: say why (a reason of at least 8 characters): it is recorded")
	}
	qs, err := s.cfg.Store.LiftQuarantine(ctx, pattern, actorString(by), reason, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	s.cfg.Changed(ctx)
	for _, q := range qs {
		s.record(ctx, by, "respond.lift", pattern, audit.OutcomeSuccess, reason, map[string]string{"quarantine": q.ID, "incident": q.Incident})
		if q.Incident != "" {
			s.event(ctx, q.Incident, "lift", by, "lifted the quarantine of "+pattern+": "+reason)
		}
	}
	return qs, nil
}

// Quarantined returns the patterns in force (what the workload sync sends).
func (s *Service) Quarantined(ctx context.Context) ([]string, error) {
	qs, err := s.cfg.Store.ListQuarantines(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, q := range qs {
		if !slices.Contains(out, q.Pattern) {
			out = append(out, q.Pattern)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *Service) actor(r *Run) audit.Actor { return Actor }
