package rekey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/secretfile"
	"github.com/rampartsec/rampart/internal/store"
)

// Defaults and bounds of Options.
const (
	DefaultPropagation = 10 * time.Second
	MaxPropagation     = time.Hour
	DefaultDeadline    = time.Hour // the default X.509-SVID lifetime
	MinDeadline        = time.Second
	MaxDeadline        = 7 * 24 * time.Hour
	DefaultKMSGrace    = kms.DefaultGrace
)

// Step names, in the order they run.
const (
	StepPrepareRoot  = "ca.prepare-root"
	StepActivateRoot = "ca.activate-root"
	StepServerCert   = "server.certificate"
	StepOAuthKey     = "oauth.signing-key"
	StepKMSRotate    = "kms.rotate"
	StepReissue      = "svids.reissue"
	StepRevokeOld    = "svids.revoke-old"
	StepDropCA       = "ca.drop-old"
	StepDropOAuth    = "oauth.drop-old"
	StepRetireKMS    = "kms.retire-old"
)

// Steps lists the step names in order.
var Steps = []string{StepPrepareRoot, StepActivateRoot, StepServerCert, StepOAuthKey, StepKMSRotate,
	StepReissue, StepRevokeOld, StepDropCA, StepDropOAuth, StepRetireKMS}

// Phases of a burn-down.
const (
	PhaseRunning  = "running"
	PhaseFinished = "finished"
	PhaseDryRun   = "dry-run"
)

// Step statuses.
const (
	StatusPending = "pending"
	StatusWaiting = "waiting"
	StatusDone    = "done"
	StatusFailed  = "failed"
)

// Errors callers branch on.
var (
	// ErrNone: no burn-down was ever started.
	ErrNone = errors.New("rekey: no burn-down has been started")
	// ErrInvalid: the options are out of bounds.
	ErrInvalid = errors.New("rekey: invalid options")
	// ErrNotRunning: Finish was asked with no burn-down in progress.
	ErrNotRunning = errors.New("rekey: no burn-down in progress")
)

// CA is what a burn-down needs of the certificate authority.
type CA interface {
	RekeyPrepareRoot(ctx context.Context) (string, error)
	RekeyActivate(ctx context.Context, root string) (identity.Rekeyed, error)
	DropKeys(ctx context.Context, ids []string) ([]string, error)
	Status() []identity.KeyStatus
}

// TokenKeys is what a burn-down needs of the OAuth provider.
type TokenKeys interface {
	RekeySigningKey(ctx context.Context, dropOld bool) ([]string, string, error)
	DropSigningKeys(ctx context.Context, ids []string) ([]string, error)
	JWKS() jose.JSONWebKeySet
	// RevokeClient revokes every grant family of a client: its refresh
	// tokens, codes and the access tokens they carry.
	RevokeClient(ctx context.Context, clientID, reason string) (int, error)
}

// OAuthClients lists the OAuth clients (for RevokeTokens).
type OAuthClients interface {
	ListOAuthClients(ctx context.Context) ([]store.OAuthClient, error)
}

// KeyStore is what a burn-down needs of the key store.
type KeyStore interface {
	List(ctx context.Context) ([]kms.Info, error)
	Rotate(ctx context.Context, name string) (kms.Info, error)
	SetState(ctx context.Context, name string, n int, action string, grace time.Duration) (kms.Info, error)
}

// SVIDStore is what a burn-down needs of the issued SVIDs.
type SVIDStore interface {
	ListSVIDs(ctx context.Context, f store.SVIDFilter, now time.Time) ([]store.IssuedSVID, error)
	AddRevocations(ctx context.Context, rs []store.Revocation) error
	ListAgents(ctx context.Context) ([]store.Agent, error)
}

// Config configures a Rekeyer.
type Config struct {
	// Dir holds state.json and the reports (ID.json, ID.md); created 0700.
	Dir    string
	CA     CA
	Tokens TokenKeys // nil: no OAuth provider
	// Clients are the OAuth clients whose grants RevokeTokens revokes.
	Clients OAuthClients
	KMS     KeyStore
	SVIDs   SVIDStore
	// RenewServerCert re-issues the API's own certificate.
	RenewServerCert func() error
	// Changed is called after each step that changed the store, so that
	// agents and proxies learn of it at once.
	Changed func(ctx context.Context)
	// Record writes one audit entry per step (and per start and finish).
	Record func(ctx context.Context, action, outcome string, details map[string]string)
	Now    func() time.Time
	Log    *slog.Logger
	// BeforeStep, if set, is called before each step runs; an error
	// stops the burn-down there as a failed step would (tests simulate
	// a crash between steps with it).
	BeforeStep func(step string) error
}

// Duration is a time.Duration written as "1h0m0s" in JSON.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// String is the time.Duration's.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Options say how a burn-down runs. Zero durations take the defaults.
type Options struct {
	DryRun bool `json:"dry_run,omitempty"`
	// RevokeTokens withdraws the old OAuth signing keys at once: every
	// access and ID token signed before is refused from then on, instead
	// of verifying until the finish; and every refresh token and
	// authorisation code issued before is revoked, so none can buy a
	// token signed by the new key.
	RevokeTokens bool `json:"revoke_tokens,omitempty"`
	// Propagation is the time between publishing the new root and
	// signing with it: agents (and through them every service) fetch
	// the bundle that trusts it first.
	Propagation Duration `json:"propagation,omitempty"`
	// Deadline, from activation, is when SVIDs not yet re-issued are
	// revoked anyway and the old roots dropped.
	Deadline Duration `json:"deadline,omitempty"`
	// KMSGrace is how long the old key store versions stay restorable
	// (refused meanwhile) before they are destroyed.
	KMSGrace Duration `json:"kms_grace,omitempty"`
}

func (o Options) withDefaults() (Options, error) {
	if o.Propagation == 0 {
		o.Propagation = Duration(DefaultPropagation)
	}
	if o.Deadline == 0 {
		o.Deadline = Duration(DefaultDeadline)
	}
	if o.KMSGrace == 0 {
		o.KMSGrace = Duration(DefaultKMSGrace)
	}
	switch {
	case o.Propagation < 0 || time.Duration(o.Propagation) > MaxPropagation:
		return o, fmt.Errorf("%w: propagation %v: want between 0 and %v", ErrInvalid, time.Duration(o.Propagation), MaxPropagation)
	case time.Duration(o.Deadline) < MinDeadline || time.Duration(o.Deadline) > MaxDeadline:
		return o, fmt.Errorf("%w: deadline %v: want between %v and %v", ErrInvalid, time.Duration(o.Deadline), MinDeadline, MaxDeadline)
	case time.Duration(o.KMSGrace) < kms.MinGrace:
		return o, fmt.Errorf("%w: kms grace %v: want at least %v", ErrInvalid, time.Duration(o.KMSGrace), kms.MinGrace)
	}
	return o, nil
}

// Step is one step's record.
type Step struct {
	Name   string    `json:"name"`
	Status string    `json:"status"`
	At     time.Time `json:"at,omitzero"`
	Detail string    `json:"detail,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// OAuthRecord says what happened to the OAuth signing keys.
type OAuthRecord struct {
	OldKeys []string `json:"old_keys,omitempty"`
	NewKey  string   `json:"new_key,omitempty"`
	Dropped []string `json:"dropped,omitempty"`
	// RevokedFamilies counts the grant families (refresh tokens, codes
	// and their access tokens) revoked with RevokeTokens.
	RevokedFamilies int    `json:"revoked_families,omitempty"`
	Skipped         string `json:"skipped,omitempty"` // why nothing was done
}

// KMSRecord says what happened to one key store key.
type KMSRecord struct {
	Key         string    `json:"key"`
	Type        string    `json:"type"`
	OldVersions []int     `json:"old_versions,omitempty"`
	NewVersion  int       `json:"new_version"`
	Retired     []int     `json:"retired,omitempty"` // scheduled for destruction
	DestroyAt   time.Time `json:"destroy_at,omitzero"`
}

// Straggler is an SVID from before the burn-down without a successor.
type Straggler struct {
	AgentID  string    `json:"agent_id"`
	SpiffeID string    `json:"spiffe_id"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// SVIDRecord counts the X.509-SVIDs.
type SVIDRecord struct {
	Before     int         `json:"before"`   // unexpired SVIDs issued before activation, at the census
	Reissued   int         `json:"reissued"` // of those, how many have a successor
	Revoked    int         `json:"revoked"`
	Stragglers []Straggler `json:"stragglers,omitempty"`
	// Hosts are the agents still holding SVIDs from before: evict them
	// and re-join them with a new join token.
	Hosts []string `json:"hosts,omitempty"`
}

// State is a burn-down: its options, its steps, and what each did. A
// finished State is the report.
type State struct {
	ID          string           `json:"id"`
	Phase       string           `json:"phase"`
	Options     Options          `json:"options"`
	StartedAt   time.Time        `json:"started_at"`
	ActivatedAt time.Time        `json:"activated_at,omitzero"`
	Deadline    time.Time        `json:"deadline,omitzero"`
	FinishedAt  time.Time        `json:"finished_at,omitzero"`
	ForceFinish bool             `json:"force_finish,omitempty"`
	Steps       []Step           `json:"steps"`
	NewRoot     string           `json:"new_root,omitempty"`
	CA          identity.Rekeyed `json:"ca"`
	DroppedCA   []string         `json:"dropped_ca,omitempty"`
	ServerCert  bool             `json:"server_cert_reissued,omitempty"`
	OAuth       OAuthRecord      `json:"oauth"`
	KMS         []KMSRecord      `json:"kms,omitempty"`
	SVIDs       SVIDRecord       `json:"svids"`
}

func (st *State) step(name string) *Step {
	for i := range st.Steps {
		if st.Steps[i].Name == name {
			return &st.Steps[i]
		}
	}
	return nil
}

// Done says whether step name has completed.
func (st *State) Done(name string) bool {
	s := st.step(name)
	return s != nil && s.Status == StatusDone
}

// Rekeyer runs burn-downs, one at a time.
type Rekeyer struct {
	cfg Config

	mu  sync.Mutex
	cur *State // nil: none started (or only finished ones on disk)
	// reissue is Reissuing's answer, kept apart from mu so that agent
	// syncs never wait for a step.
	reissue atomic.Value // string
}

// New opens the state directory and loads a burn-down in progress.
func New(cfg Config) (*Rekeyer, error) {
	if cfg.Dir == "" || cfg.CA == nil || cfg.KMS == nil || cfg.SVIDs == nil {
		return nil, errors.New("rekey: a directory, the CA, the key store and the SVID store are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Changed == nil {
		cfg.Changed = func(context.Context) {}
	}
	if cfg.Record == nil {
		cfg.Record = func(context.Context, string, string, map[string]string) {}
	}
	if cfg.RenewServerCert == nil {
		cfg.RenewServerCert = func() error { return nil }
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	r := &Rekeyer{cfg: cfg}
	st, err := r.load()
	if err != nil && !errors.Is(err, ErrNone) {
		return nil, err
	}
	r.cur = st
	r.publish(st)
	return r, nil
}

func (r *Rekeyer) statePath() string { return filepath.Join(r.cfg.Dir, "state.json") }

func (r *Rekeyer) load() (*State, error) {
	// Whoever could edit the state could make a burn-down skip a step
	// while reporting it done: it is the server's alone.
	if err := secretfile.CheckPrivate(r.statePath(), "the burn-down's state"); err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	b, err := os.ReadFile(r.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("rekey: %s: %w", r.statePath(), err)
	}
	return &st, nil
}

func (r *Rekeyer) save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	if err := atomicfile.Write(r.statePath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("rekey: save state: %w", err)
	}
	r.publish(st)
	return nil
}

// publish sets what Reissuing answers from st.
func (r *Rekeyer) publish(st *State) {
	root := ""
	if st != nil && st.Phase == PhaseRunning && st.Done(StepActivateRoot) {
		root = st.CA.NewRoot
	}
	r.reissue.Store(root)
}

// Current returns the burn-down in progress or the last one (ErrNone if
// there never was one).
func (r *Rekeyer) Current() (State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return State{}, ErrNone
	}
	return clone(r.cur), nil
}

// Reissuing returns, while agents are re-issuing SVIDs, the ID of the
// root every SVID must descend from (agents re-issue those that do not);
// empty otherwise.
func (r *Rekeyer) Reissuing() string {
	s, _ := r.reissue.Load().(string)
	return s
}

func clone(st *State) State {
	b, _ := json.Marshal(st)
	var out State
	json.Unmarshal(b, &out)
	return out
}

// Run starts a burn-down with opts and runs it as far as it can go now
// (Step); one in progress is resumed instead, with its own options. With
// opts.DryRun it changes nothing and returns the plan.
func (r *Rekeyer) Run(ctx context.Context, opts Options) (State, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return State{}, err
	}
	if opts.DryRun {
		st, err := r.plan(ctx, opts)
		if err != nil {
			return State{}, err
		}
		r.cfg.Record(ctx, "rekey.dry_run", "success", map[string]string{"roots": fmt.Sprint(len(st.CA.RetiredRoots)),
			"kms_keys": fmt.Sprint(len(st.KMS)), "svids": fmt.Sprint(st.SVIDs.Before)})
		return st, nil
	}
	r.mu.Lock()
	if r.cur == nil || r.cur.Phase == PhaseFinished {
		now := r.cfg.Now()
		st := &State{ID: newID(now), Phase: PhaseRunning, Options: opts, StartedAt: now}
		for _, n := range Steps {
			st.Steps = append(st.Steps, Step{Name: n, Status: StatusPending})
		}
		if err := r.save(st); err != nil {
			r.mu.Unlock()
			return State{}, err
		}
		r.cur = st
		r.cfg.Log.Warn("burn-down started: every root, intermediate, signing key and key store key is being replaced", "id", st.ID)
		r.cfg.Record(ctx, "rekey.start", "success", map[string]string{"rekey_id": st.ID, "revoke_tokens": fmt.Sprint(opts.RevokeTokens),
			"propagation": opts.Propagation.String(), "deadline": opts.Deadline.String(), "kms_grace": opts.KMSGrace.String()})
	} else {
		r.cfg.Record(ctx, "rekey.resume", "success", map[string]string{"rekey_id": r.cur.ID})
	}
	r.mu.Unlock()
	return r.Step(ctx)
}

// Finish asks the burn-down in progress to stop waiting for SVIDs to be
// re-issued: what is left from before is revoked and the old keys dropped
// now. It then runs Step.
func (r *Rekeyer) Finish(ctx context.Context) (State, error) {
	r.mu.Lock()
	if r.cur == nil || r.cur.Phase != PhaseRunning {
		r.mu.Unlock()
		return State{}, ErrNotRunning
	}
	r.cur.ForceFinish = true
	if err := r.save(r.cur); err != nil {
		r.mu.Unlock()
		return State{}, err
	}
	r.cfg.Record(ctx, "rekey.finish_now", "success", map[string]string{"rekey_id": r.cur.ID})
	r.mu.Unlock()
	return r.Step(ctx)
}

// errWait: the step cannot complete yet (its time has not come).
var errWait = errors.New("rekey: waiting")

// Step runs every step that can run now, in order, and saves the state
// after each. It stops at the first step that must wait (nil error) or
// fails (the error, also recorded in the step). The server calls it
// periodically while a burn-down is in progress.
func (r *Rekeyer) Step(ctx context.Context) (State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.cur
	if st == nil || st.Phase != PhaseRunning {
		if st == nil {
			return State{}, ErrNone
		}
		return clone(st), nil
	}
	for i := range st.Steps {
		s := &st.Steps[i]
		if s.Status == StatusDone {
			continue
		}
		var err error
		if r.cfg.BeforeStep != nil {
			err = r.cfg.BeforeStep(s.Name)
		}
		detail := ""
		if err == nil {
			detail, err = r.run(ctx, st, s.Name)
		}
		now := r.cfg.Now()
		if errors.Is(err, errWait) {
			changed := s.Status != StatusWaiting || s.Detail != detail
			s.Status, s.Detail, s.Error = StatusWaiting, detail, ""
			if changed {
				if err := r.save(st); err != nil {
					return clone(st), err
				}
			}
			return clone(st), nil
		}
		if err != nil {
			repeat := s.Status == StatusFailed && s.Error == err.Error()
			s.Status, s.At, s.Error = StatusFailed, now, err.Error()
			if serr := r.save(st); serr != nil {
				err = errors.Join(err, serr)
			}
			if !repeat {
				r.cfg.Log.Error("burn-down step failed; it is retried (rampart rekey resumes it)", "step", s.Name, "err", err)
				r.cfg.Record(ctx, "rekey.step", "failure", map[string]string{"rekey_id": st.ID, "step": s.Name, "error": err.Error()})
			}
			return clone(st), fmt.Errorf("rekey: step %s: %w", s.Name, err)
		}
		s.Status, s.At, s.Detail, s.Error = StatusDone, now, detail, ""
		if err := r.save(st); err != nil {
			return clone(st), err
		}
		r.cfg.Record(ctx, "rekey.step", "success", map[string]string{"rekey_id": st.ID, "step": s.Name, "detail": detail})
		r.cfg.Changed(ctx)
	}
	st.Phase, st.FinishedAt = PhaseFinished, r.cfg.Now()
	if err := r.save(st); err != nil {
		return clone(st), err
	}
	if err := r.writeReport(st); err != nil {
		return clone(st), err
	}
	r.cfg.Log.Warn("burn-down finished", "id", st.ID, "hosts_with_old_svids", len(st.SVIDs.Hosts))
	r.cfg.Record(ctx, "rekey.finish", "success", map[string]string{"rekey_id": st.ID, "revoked": fmt.Sprint(st.SVIDs.Revoked),
		"hosts_with_old_svids": strings.Join(st.SVIDs.Hosts, " ")})
	return clone(st), nil
}

// writeReport writes ID.json and ID.md beside the state.
func (r *Rekeyer) writeReport(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	base := filepath.Join(r.cfg.Dir, st.ID)
	if err := atomicfile.Write(base+".json", append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("rekey: report: %w", err)
	}
	if err := atomicfile.Write(base+".md", []byte(st.Markdown()), 0o600); err != nil {
		return fmt.Errorf("rekey: report: %w", err)
	}
	return nil
}

// run does one step. It returns errWait when the step's time has not come.
func (r *Rekeyer) run(ctx context.Context, st *State, name string) (string, error) {
	now := r.cfg.Now()
	switch name {
	case StepPrepareRoot:
		id, err := r.cfg.CA.RekeyPrepareRoot(ctx)
		if err != nil {
			return "", err
		}
		st.NewRoot = id
		return "new root " + id + " published in the bundle", nil

	case StepActivateRoot:
		if at := r.prepared(st).Add(time.Duration(st.Options.Propagation)); now.Before(at) {
			return fmt.Sprintf("the new root signs from %s (agents fetch the bundle first)", at.UTC().Format(time.RFC3339)), errWait
		}
		// Every SVID issued before this instant is from before.
		if st.ActivatedAt.IsZero() {
			st.ActivatedAt = now
			st.Deadline = now.Add(time.Duration(st.Options.Deadline))
			if err := r.save(st); err != nil {
				return "", err
			}
		}
		res, err := r.cfg.CA.RekeyActivate(ctx, st.NewRoot)
		if err != nil {
			return "", err
		}
		// A resumed activation reports only what it saw this time; keep
		// what the first attempt retired.
		res.RetiredRoots = union(st.CA.RetiredRoots, res.RetiredRoots)
		res.OldJWTKeys = union(st.CA.OldJWTKeys, res.OldJWTKeys)
		if st.CA.OldIntermediate != "" {
			res.OldIntermediate = st.CA.OldIntermediate
		}
		st.CA = res
		return fmt.Sprintf("root %s signs intermediate %s; JWT-SVID key %s; %d old root(s) published until the finish",
			res.NewRoot, res.NewIntermediate, res.NewJWTKey, len(res.RetiredRoots)), nil

	case StepServerCert:
		if err := r.cfg.RenewServerCert(); err != nil {
			return "", err
		}
		st.ServerCert = true
		return "the API's certificate re-issued under the new root", nil

	case StepOAuthKey:
		if r.cfg.Tokens == nil {
			st.OAuth.Skipped = "no OAuth provider on this server"
			return st.OAuth.Skipped, nil
		}
		old, kid, err := r.cfg.Tokens.RekeySigningKey(ctx, st.Options.RevokeTokens)
		if err != nil {
			return "", err
		}
		st.OAuth.OldKeys, st.OAuth.NewKey = union(st.OAuth.OldKeys, without(old, kid)), kid
		if st.Options.RevokeTokens {
			st.OAuth.Dropped = union(st.OAuth.Dropped, st.OAuth.OldKeys)
			n, err := r.revokeGrants(ctx, st)
			if err != nil {
				return "", err
			}
			st.OAuth.RevokedFamilies = n
			return fmt.Sprintf("new signing key %s; %d old key(s) withdrawn: their tokens are refused; %d grant famil(ies) revoked (refresh tokens, codes)",
				kid, len(st.OAuth.OldKeys), n), nil
		}
		return fmt.Sprintf("new signing key %s; %d old key(s) verify until the finish", kid, len(st.OAuth.OldKeys)), nil

	case StepKMSRotate:
		infos, err := r.cfg.KMS.List(ctx)
		if err != nil {
			return "", err
		}
		for _, in := range infos {
			if slices.ContainsFunc(st.KMS, func(k KMSRecord) bool { return k.Key == in.Name }) {
				continue // rotated before an interruption
			}
			rec := KMSRecord{Key: in.Name, Type: in.Type}
			for _, v := range in.Versions {
				if v.State == store.KMSEnabled || v.State == store.KMSDisabled {
					rec.OldVersions = append(rec.OldVersions, v.Version)
				}
			}
			out, err := r.cfg.KMS.Rotate(ctx, in.Name)
			if err != nil {
				return "", err
			}
			rec.NewVersion = out.Latest
			st.KMS = append(st.KMS, rec)
			if err := r.save(st); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("%d key(s) rotated; rewrap stored ciphertexts and data keys before the finish", len(st.KMS)), nil

	case StepReissue:
		c, err := r.census(ctx, st.ActivatedAt, now)
		if err != nil {
			return "", err
		}
		st.SVIDs.Before, st.SVIDs.Reissued, st.SVIDs.Stragglers, st.SVIDs.Hosts = c.before, c.reissued, c.stragglers, c.hosts
		msg := fmt.Sprintf("%d of %d SVIDs from before re-issued", c.reissued, c.before)
		switch {
		case len(c.stragglers) == 0 && !now.Before(c.recycleAt):
			return msg, nil
		case st.ForceFinish:
			return msg + fmt.Sprintf("; finished on request with %d left on %d host(s)", len(c.stragglers), len(c.hosts)), nil
		case !now.Before(st.Deadline):
			return msg + fmt.Sprintf("; deadline reached with %d left on %d host(s)", len(c.stragglers), len(c.hosts)), nil
		}
		if len(c.stragglers) == 0 {
			return msg + fmt.Sprintf("; connections opened with them are recycled by %s", c.recycleAt.UTC().Format(time.RFC3339)), errWait
		}
		return msg + fmt.Sprintf("; waiting for %d on %d host(s) until %s", len(c.stragglers), len(c.hosts), st.Deadline.UTC().Format(time.RFC3339)), errWait

	case StepRevokeOld:
		n, err := r.revokeBefore(ctx, st, now)
		if err != nil {
			return "", err
		}
		st.SVIDs.Revoked += n
		return fmt.Sprintf("%d X.509-SVID(s) issued before %s revoked", n, st.ActivatedAt.UTC().Format(time.RFC3339)), nil

	case StepDropCA:
		ids := union(st.CA.RetiredRoots, st.CA.OldJWTKeys)
		if st.CA.OldIntermediate != "" {
			ids = union(ids, []string{st.CA.OldIntermediate})
		}
		// Whatever else the CA publishes from before activation goes
		// too, should the record have missed one: the bundle keeps only
		// what the burn-down made.
		keep := []string{st.NewRoot, st.CA.NewIntermediate, st.CA.NewJWTKey}
		for _, k := range r.cfg.CA.Status() {
			if !slices.Contains(keep, k.ID) && k.NotBefore.Before(st.ActivatedAt) {
				ids = union(ids, []string{k.ID})
			}
		}
		dropped, err := r.cfg.CA.DropKeys(ctx, ids)
		st.DroppedCA = union(st.DroppedCA, dropped)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d old root(s), intermediate(s) and JWT-SVID key(s) dropped from every bundle", len(st.DroppedCA)), nil

	case StepDropOAuth:
		if r.cfg.Tokens == nil || len(st.OAuth.OldKeys) == 0 {
			return "nothing to drop", nil
		}
		dropped, err := r.cfg.Tokens.DropSigningKeys(ctx, st.OAuth.OldKeys)
		st.OAuth.Dropped = union(st.OAuth.Dropped, dropped)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d old signing key(s) withdrawn from the JWKS", len(st.OAuth.Dropped)), nil

	case StepRetireKMS:
		return r.retireKMS(ctx, st)
	}
	return "", fmt.Errorf("rekey: unknown step %q", name)
}

// revokeGrants revokes every OAuth client's grant families (revoking
// twice is harmless, so a resumed step repeats it).
func (r *Rekeyer) revokeGrants(ctx context.Context, st *State) (int, error) {
	if r.cfg.Clients == nil {
		return 0, errors.New("rekey: revoke tokens: no OAuth client list configured")
	}
	clients, err := r.cfg.Clients.ListOAuthClients(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, c := range clients {
		n, err := r.cfg.Tokens.RevokeClient(ctx, c.ID, "rekey "+st.ID)
		if err != nil {
			return total, fmt.Errorf("revoke the grants of client %s: %w", c.ID, err)
		}
		total += n
	}
	return total, nil
}

// prepared is when the new root was published.
func (r *Rekeyer) prepared(st *State) time.Time {
	if s := st.step(StepPrepareRoot); s != nil && !s.At.IsZero() {
		return s.At
	}
	return st.StartedAt
}

type census struct {
	before, reissued int
	// recycleAt is when the last connection authenticated with an SVID
	// from before has been asked to reconnect (mtls.RecycleAt: three
	// quarters into the certificate's life, the data plane answers
	// "Connection: close"); revoking earlier would fail requests on
	// connections still open with an old certificate.
	recycleAt  time.Time
	stragglers []Straggler
	hosts      []string
}

// census counts the identities (SPIFFE ID, agent, entry) holding an
// unexpired SVID issued before activation, and which of them have a
// successor (same SPIFFE ID, agent and entry, issued
// after). Evicted agents are left out: eviction revoked their SVIDs.
func (r *Rekeyer) census(ctx context.Context, activated, now time.Time) (census, error) {
	svids, err := r.cfg.SVIDs.ListSVIDs(ctx, store.SVIDFilter{}, now)
	if err != nil {
		return census{}, err
	}
	agents, err := r.cfg.SVIDs.ListAgents(ctx)
	if err != nil {
		return census{}, err
	}
	evicted := map[string]bool{}
	for _, a := range agents {
		if a.Evicted {
			evicted[a.SpiffeID] = true
		}
	}
	type group struct {
		old   *store.IssuedSVID
		fresh bool
	}
	groups := map[string]*group{}
	var c census
	for i := range svids {
		v := &svids[i]
		if evicted[v.AgentID] {
			continue
		}
		k := v.SpiffeID + "\x00" + v.AgentID + "\x00" + v.EntryID
		g := groups[k]
		if g == nil {
			g = &group{}
			groups[k] = g
		}
		if v.IssuedAt.Before(activated) {
			life := v.NotAfter.Sub(v.IssuedAt)
			if at := v.IssuedAt.Add(life - life/4); at.After(c.recycleAt) {
				c.recycleAt = at
			}
			if g.old == nil || v.IssuedAt.After(g.old.IssuedAt) {
				g.old = v
			}
		} else {
			g.fresh = true
		}
	}
	hosts := map[string]bool{}
	for _, g := range groups {
		if g.old == nil {
			continue
		}
		c.before++
		if g.fresh {
			c.reissued++
			continue
		}
		c.stragglers = append(c.stragglers, Straggler{AgentID: g.old.AgentID, SpiffeID: g.old.SpiffeID, Serial: g.old.Serial, NotAfter: g.old.NotAfter})
		hosts[g.old.AgentID] = true
	}
	slices.SortFunc(c.stragglers, func(a, b Straggler) int { return strings.Compare(a.AgentID+a.SpiffeID, b.AgentID+b.SpiffeID) })
	for h := range hosts {
		c.hosts = append(c.hosts, h)
	}
	slices.Sort(c.hosts)
	return c, nil
}

// revokeBefore revokes every unexpired X.509-SVID issued before
// activation.
func (r *Rekeyer) revokeBefore(ctx context.Context, st *State, now time.Time) (int, error) {
	svids, err := r.cfg.SVIDs.ListSVIDs(ctx, store.SVIDFilter{}, now)
	if err != nil {
		return 0, err
	}
	var rs []store.Revocation
	for _, v := range svids {
		if v.IssuedAt.Before(st.ActivatedAt) {
			rs = append(rs, store.Revocation{Serial: v.Serial, SpiffeID: v.SpiffeID, Reason: "rekey " + st.ID, RevokedAt: now, NotAfter: v.NotAfter})
		}
	}
	if len(rs) == 0 {
		return 0, nil
	}
	if err := r.cfg.SVIDs.AddRevocations(ctx, rs); err != nil {
		return 0, err
	}
	return len(rs), nil
}

// retireKMS schedules every old version's destruction.
func (r *Rekeyer) retireKMS(ctx context.Context, st *State) (string, error) {
	grace := time.Duration(st.Options.KMSGrace)
	infos, err := r.cfg.KMS.List(ctx)
	if err != nil {
		return "", err
	}
	states := map[string]map[int]string{}
	for _, in := range infos {
		states[in.Name] = map[int]string{}
		for _, v := range in.Versions {
			states[in.Name][v.Version] = v.State
		}
	}
	n := 0
	for i := range st.KMS {
		rec := &st.KMS[i]
		for _, v := range rec.OldVersions {
			s, ok := states[rec.Key][v]
			if !ok || (s != store.KMSEnabled && s != store.KMSDisabled) || slices.Contains(rec.Retired, v) {
				continue // gone, already scheduled or destroyed
			}
			info, err := r.cfg.KMS.SetState(ctx, rec.Key, v, kms.ActionDestroy, grace)
			if err != nil {
				return "", err
			}
			rec.Retired = append(rec.Retired, v)
			for _, vi := range info.Versions {
				if vi.Version == v {
					rec.DestroyAt = vi.DestroyAt
				}
			}
			n++
			if err := r.save(st); err != nil {
				return "", err
			}
		}
	}
	return fmt.Sprintf("%d old version(s) refused from now and destroyed after %v unless restored", n, grace), nil
}

// plan is a dry run: what a burn-down would replace, changing nothing.
func (r *Rekeyer) plan(ctx context.Context, opts Options) (State, error) {
	now := r.cfg.Now()
	st := State{ID: "dry-run", Phase: PhaseDryRun, Options: opts, StartedAt: now}
	for _, n := range Steps {
		st.Steps = append(st.Steps, Step{Name: n, Status: StatusPending})
	}
	for _, k := range r.cfg.CA.Status() {
		switch k.Kind {
		case store.KindRoot:
			st.CA.RetiredRoots = append(st.CA.RetiredRoots, k.ID)
		case store.KindIntermediate:
			st.CA.OldIntermediate = k.ID
		case store.KindJWT:
			st.CA.OldJWTKeys = append(st.CA.OldJWTKeys, k.ID)
		}
	}
	if r.cfg.Tokens != nil {
		for _, k := range r.cfg.Tokens.JWKS().Keys {
			st.OAuth.OldKeys = append(st.OAuth.OldKeys, k.KeyID)
		}
	} else {
		st.OAuth.Skipped = "no OAuth provider on this server"
	}
	infos, err := r.cfg.KMS.List(ctx)
	if err != nil {
		return State{}, err
	}
	for _, in := range infos {
		rec := KMSRecord{Key: in.Name, Type: in.Type, NewVersion: in.Latest + 1}
		for _, v := range in.Versions {
			if v.State == store.KMSEnabled || v.State == store.KMSDisabled {
				rec.OldVersions = append(rec.OldVersions, v.Version)
			}
		}
		st.KMS = append(st.KMS, rec)
	}
	// Every unexpired SVID is from before: all would be re-issued.
	c, err := r.census(ctx, now.Add(time.Nanosecond), now)
	if err != nil {
		return State{}, err
	}
	st.SVIDs.Before, st.SVIDs.Stragglers, st.SVIDs.Hosts = c.before, c.stragglers, c.hosts
	return st, nil
}

func newID(now time.Time) string {
	b := make([]byte, 4)
	rand.Read(b)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// union is a followed by the elements of b not in a.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func without(a []string, s string) []string {
	return slices.DeleteFunc(slices.Clone(a), func(x string) bool { return x == s })
}
