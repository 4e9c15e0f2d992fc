package authz

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/sdk/decision"
)

// Recorder takes audit entries; *spool.Spool implements it. Record must not
// wait on anything the caller of a decision controls.
type Recorder interface {
	Record(e *auditentry.Entry) error
}

// Aggregation bounds.
const (
	// DefaultAggregateInterval is how long identical decisions are counted
	// into one entry.
	DefaultAggregateInterval = 5 * time.Second
	// maxKeysPerCaller: distinct decisions one caller gets recorded
	// individually per interval; beyond it its decisions are counted per
	// target and outcome only (path pattern "*"), so a caller that varies
	// its paths cannot make the entries unbounded.
	maxKeysPerCaller = 64
	// maxKeys bounds the table; beyond it decisions are counted per target
	// and outcome, all callers together.
	maxKeys = 4096
)

// AuditSinkConfig configures NewAuditSink.
type AuditSinkConfig struct {
	Recorder Recorder // required
	Log      *slog.Logger
	// Interval over which identical decisions are aggregated (default
	// DefaultAggregateInterval).
	Interval time.Duration
	Now      func() time.Time // default time.Now
	Registry *prometheus.Registry
}

// AuditSink records every decision as an authz.decision audit entry, and
// keeps a flood bounded without losing a decision: the first decision of a
// kind (same caller, end user, actor, service, method, path, outcome,
// reason, rule, policy version, dry run) in an interval is recorded as it
// comes; the repeats are counted, and at the end of the interval one entry
// with details.count = N (and first, last) stands for them. An entry
// without a count stands for one decision. A caller with more than
// maxKeysPerCaller kinds in an interval has the rest counted per service
// and outcome (details.path = "*"); past maxKeys kinds in all, per service
// and outcome for every caller (actor "many-callers"). Nothing here waits
// on the request: it holds a mutex for a map update.
type AuditSink struct {
	cfg AuditSinkConfig

	mu        sync.Mutex
	start     time.Time // of the current interval
	keys      map[aggKey]*agg
	perCaller map[string]int
	closed    bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	aggregated, unrecorded prometheus.Counter
}

// aggKey is what makes two decisions "the same". Level 1 and 2 are the
// coarser kinds used past the bounds.
type aggKey struct {
	caller, user, act, target, method, path, outcome, reason, rule, version string
	dryRun                                                                  bool
	level                                                                   uint8
}

type agg struct {
	n           uint64 // decisions counted, not recorded individually
	first, last time.Time
	remote      string // of the first counted
}

// NewAuditSink returns a sink recording into cfg.Recorder. Close it to
// record what is still being counted.
func NewAuditSink(cfg AuditSinkConfig) *AuditSink {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultAggregateInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &AuditSink{cfg: cfg, keys: map[aggKey]*agg{}, perCaller: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
		aggregated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_authz_decisions_aggregated_total", Help: "Decisions recorded as part of an aggregate entry's count rather than individually.",
		}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_authz_decisions_unrecorded_total", Help: "Decision entries the spool refused (closed or full; a full spool counts its drops in the audit log too).",
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.aggregated, s.unrecorded)
	}
	go s.loop()
	return s
}

// loop ends intervals nobody's decision ended.
func (s *AuditSink) loop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			out := s.rollLocked(s.cfg.Now(), false)
			s.mu.Unlock()
			s.record(out)
		}
	}
}

// Decision implements decision.Sink. ctx is not used: what is recorded never
// depends on whether the caller is still there.
func (s *AuditSink) Decision(_ context.Context, ev decision.Event) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.record([]*auditentry.Entry{DecisionEntry(ev)})
		return
	}
	out := s.rollLocked(s.cfg.Now(), false)
	k := aggKey{caller: ev.Caller, user: ev.User, act: ev.Act, target: ev.Target, method: ev.Method,
		path: auditentry.Clip(ev.Path), outcome: outcomeOf(ev), reason: auditentry.Clip(ev.Reason), rule: ev.Rule, version: ev.Version, dryRun: ev.DryRun}
	if a, ok := s.keys[k]; ok {
		a.add(ev)
		s.aggregated.Inc()
	} else if len(s.keys) < maxKeys && s.perCaller[ev.Caller] < maxKeysPerCaller {
		s.keys[k] = &agg{}
		s.perCaller[ev.Caller]++
		s.mu.Unlock()
		s.record(append(out, DecisionEntry(ev))) // built outside the lock
		return
	} else {
		k = aggKey{caller: ev.Caller, user: ev.User, target: ev.Target, outcome: k.outcome, dryRun: ev.DryRun, level: 1}
		if _, ok := s.keys[k]; !ok && len(s.keys) >= maxKeys {
			k = aggKey{target: ev.Target, outcome: k.outcome, dryRun: ev.DryRun, level: 2}
		}
		a := s.keys[k]
		if a == nil {
			a = &agg{}
			s.keys[k] = a
		}
		a.add(ev)
		s.aggregated.Inc()
	}
	s.mu.Unlock()
	s.record(out)
}

func outcomeOf(ev decision.Event) string {
	if ev.Allowed {
		return auditentry.OutcomeSuccess
	}
	return auditentry.OutcomeDenied
}

func (a *agg) add(ev decision.Event) {
	if a.n == 0 {
		a.first, a.remote = ev.Time, ev.Remote
	}
	a.n++
	a.last = ev.Time
}

// rollLocked ends the interval if it is over (or if force), returning the
// aggregate entries of its counted decisions.
func (s *AuditSink) rollLocked(now time.Time, force bool) []*auditentry.Entry {
	if !force && now.Sub(s.start) < s.cfg.Interval {
		return nil
	}
	s.start = now
	var out []*auditentry.Entry
	for k, a := range s.keys {
		if a.n > 0 {
			out = append(out, aggregateEntry(k, a))
		}
	}
	if len(s.keys) > 0 {
		clear(s.keys)
		clear(s.perCaller)
	}
	return out
}

// aggregateEntry is the entry standing for a.n decisions of kind k.
func aggregateEntry(k aggKey, a *agg) *auditentry.Entry {
	ev := decision.Event{Time: a.first, Caller: k.caller, User: k.user, Act: k.act, Target: k.target, Method: k.method, Path: k.path,
		Rule: k.rule, Version: k.version, Allowed: k.outcome == auditentry.OutcomeSuccess, DryRun: k.dryRun, Reason: k.reason, Remote: a.remote}
	e := DecisionEntry(ev)
	delete(e.Details, "latency_ns")
	e.Details["count"] = strconv.FormatUint(a.n, 10)
	e.Details["first"] = a.first.UTC().Format(time.RFC3339Nano)
	e.Details["last"] = a.last.UTC().Format(time.RFC3339Nano)
	switch k.level {
	case 1:
		e.Details["path"] = "*"
		e.Details["aggregated"] = "per caller: more distinct requests than " + strconv.Itoa(maxKeysPerCaller) + " in the interval"
	case 2:
		e.Details["path"] = "*"
		e.Actor = auditentry.Actor{User: "many-callers"}
		e.Details["aggregated"] = "per service: more distinct requests than " + strconv.Itoa(maxKeys) + " in the interval"
	}
	if k.level > 0 && e.Outcome == auditentry.OutcomeDenied {
		e.Reason = "denied (reasons not kept past the aggregation bounds)"
	}
	return e
}

func (s *AuditSink) record(es []*auditentry.Entry) {
	for _, e := range es {
		if err := s.cfg.Recorder.Record(e); err != nil {
			s.unrecorded.Inc()
			if !errors.Is(err, spool.ErrDropped) {
				s.cfg.Log.Error("decision not audited", "caller", e.Actor.SpiffeID, "path", e.Details["path"], "err", err)
			}
		}
	}
}

// Flush records every decision being counted now (an aggregate entry per
// kind) and starts a new interval.
func (s *AuditSink) Flush() {
	s.mu.Lock()
	out := s.rollLocked(s.cfg.Now(), true)
	s.mu.Unlock()
	s.record(out)
}

// Close records what is being counted; later decisions are recorded one
// entry each. Safe to call more than once, and on nil.
func (s *AuditSink) Close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		out := s.rollLocked(s.cfg.Now(), true)
		s.closed = true
		s.mu.Unlock()
		s.record(out)
	})
}

// DecisionEntry is the audit entry for a decision: the caller is the actor,
// the protected service the target.
func DecisionEntry(ev decision.Event) *auditentry.Entry {
	e := &auditentry.Entry{V: auditentry.SchemaVersion, Time: ev.Time, Action: "authz.decision", Target: ev.Target,
		Outcome: auditentry.OutcomeSuccess, Reason: ev.Reason, Details: map[string]string{"latency_ns": strconv.FormatInt(int64(ev.Latency), 10)}}
	e.Actor.SpiffeID = ev.Caller
	e.Actor.User = ev.User // the end user the caller acts for, if any
	if ev.Caller == "" && ev.User == "" {
		e.Actor.User = "unauthenticated"
	}
	if !ev.Allowed {
		e.Outcome = auditentry.OutcomeDenied
	}
	for _, kv := range [...][2]string{{"method", ev.Method}, {"path", ev.Path}, {"rule", ev.Rule}, {"policy_version", ev.Version}, {"remote", ev.Remote}, {"act", ev.Act}} {
		if kv[1] != "" {
			e.Details[kv[0]] = kv[1]
		}
	}
	if ev.DryRun {
		e.Details["dry_run_denied"] = "true"
	}
	if e.Outcome == auditentry.OutcomeDenied && e.Reason == "" {
		e.Reason = "no rule allows it"
		if ev.Version == "" {
			e.Reason = "no policy for this service"
		}
	}
	auditentry.ClipFields(e) // the path and reason are the caller's
	return e
}

// Sinks hands each decision to every sink in turn.
type Sinks []decision.Sink

// Decision implements decision.Sink.
func (ss Sinks) Decision(ctx context.Context, ev decision.Event) {
	for _, s := range ss {
		s.Decision(ctx, ev)
	}
}

// ShipWriteLinger is how long a decision may wait in memory for others to
// share its fsync (see spool.Config.WriteLinger).
const ShipWriteLinger = 50 * time.Millisecond

// ShipLinger is how long a decision may wait in the spool for others to
// share its request to the server (see spool.Config.Linger).
const ShipLinger = 250 * time.Millisecond

// ShipDecisions opens a spool in dir that delivers decisions to the server's
// audit log over mTLS, and returns a sink that records into it alongside
// next (the log sink, usually). Close the spool when done.
func ShipDecisions(dir, serverAddr string, td spiffeid.TrustDomain, svid x509svid.Source, bundles x509bundle.Source,
	next decision.Sink, log *slog.Logger, reg *prometheus.Registry) (*spool.Spool, decision.Sink, error) {
	var sink *AuditSink
	sp, err := spool.Open(spool.Config{Dir: dir, Log: log, Registry: reg,
		Sender: spool.APISender{Client: ServerClient(serverAddr, td, svid, bundles)},
		Linger: ShipLinger, WriteLinger: ShipWriteLinger,
		// Closing the spool first hands over the decisions being counted.
		BeforeClose: func() { sink.Close() }})
	if err != nil {
		return nil, nil, err
	}
	sink = NewAuditSink(AuditSinkConfig{Recorder: sp, Log: log, Registry: reg})
	return sp, Sinks{next, sink}, nil
}
