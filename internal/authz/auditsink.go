package authz

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
)

// Recorder takes audit entries; *spool.Spool implements it.
type Recorder interface {
	Record(ctx context.Context, e *audit.Entry) error
}

// AuditSink records every decision as an authz.decision audit entry.
type AuditSink struct {
	Recorder Recorder
	Log      *slog.Logger
}

// Decision implements Sink. It blocks only while the spool's queue is full
// (back-pressure), until the request's context ends.
func (s AuditSink) Decision(ctx context.Context, ev Event) {
	if err := s.Recorder.Record(ctx, DecisionEntry(ev)); err != nil && s.Log != nil {
		s.Log.Error("decision not audited", "caller", ev.Caller, "path", ev.Path, "err", err)
	}
}

// DecisionEntry is the audit entry for a decision: the caller is the actor,
// the protected service the target.
func DecisionEntry(ev Event) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: ev.Time, Action: "authz.decision", Target: ev.Target,
		Outcome: audit.OutcomeSuccess, Reason: ev.Reason, Details: map[string]string{"latency_ns": strconv.FormatInt(int64(ev.Latency), 10)}}
	e.Actor.SpiffeID = ev.Caller
	e.Actor.User = ev.User // the end user the caller acts for, if any
	if ev.Caller == "" && ev.User == "" {
		e.Actor.User = "unauthenticated"
	}
	if !ev.Allowed {
		e.Outcome = audit.OutcomeDenied
	}
	for _, kv := range [...][2]string{{"method", ev.Method}, {"path", ev.Path}, {"rule", ev.Rule}, {"policy_version", ev.Version}, {"remote", ev.Remote}, {"act", ev.Act}} {
		if kv[1] != "" {
			e.Details[kv[0]] = kv[1]
		}
	}
	if ev.DryRun {
		e.Details["dry_run_denied"] = "true"
	}
	if e.Outcome == audit.OutcomeDenied && e.Reason == "" {
		e.Reason = "no rule allows it"
		if ev.Version == "" {
			e.Reason = "no policy for this service"
		}
	}
	return e
}

// Sinks hands each decision to every sink in turn.
type Sinks []Sink

// Decision implements Sink.
func (ss Sinks) Decision(ctx context.Context, ev Event) {
	for _, s := range ss {
		s.Decision(ctx, ev)
	}
}

// ShipDecisions opens a spool in dir that delivers decisions to the server's
// audit log over mTLS, and returns a sink that records into it alongside
// next (the log sink, usually). Close the spool when done.
func ShipDecisions(dir, serverAddr string, td spiffeid.TrustDomain, svid x509svid.Source, bundles x509bundle.Source,
	next Sink, log *slog.Logger, reg *prometheus.Registry) (*spool.Spool, Sink, error) {
	sp, err := spool.Open(spool.Config{Dir: dir, Log: log, Registry: reg,
		Sender: spool.APISender{Client: ServerClient(serverAddr, td, svid, bundles)}})
	if err != nil {
		return nil, nil, err
	}
	return sp, Sinks{next, AuditSink{Recorder: sp, Log: log}}, nil
}
