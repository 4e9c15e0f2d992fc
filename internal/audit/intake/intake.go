package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits on one batch and on what shippers may claim.
const (
	MaxBatchBytes   = 16 << 20
	MaxBatchEntries = 10000
	// MaxSkew: an entry's time may be ahead of the server's by this much;
	// later times are clamped to the time of receipt (the claimed time
	// kept in details.time_claimed).
	MaxSkew = time.Minute
	// MaxStreamsPerIdentity bounds the streams one identity may open (a
	// spool directory each: a proxy or agent restarted with a fresh data
	// directory opens another). Streams idle for StreamIdle no longer count.
	MaxStreamsPerIdentity = 64
	StreamIdle            = 7 * 24 * time.Hour
)

// Why a batch is refused; a *RefusedError wraps one of them.
var (
	ErrMalformed   = errors.New("intake: malformed batch")
	ErrMediaType   = errors.New("intake: unsupported content type")
	ErrNotShipper  = errors.New("intake: not a shipper")
	ErrStreamLimit = errors.New("intake: too many streams")
	ErrNotOwner    = errors.New("intake: stream of another identity")
	// ErrUnavailable: the policy store or the log failed; retry later.
	ErrUnavailable = errors.New("intake: unavailable")
)

// RefusedError says why a batch was refused: Detail for the shipper, and
// Reason with Details for the audit log ("" when the refusal is not worth
// recording: a malformed batch is the shipper's bug, not an attempt).
type RefusedError struct {
	Kind    error
	Detail  string
	Reason  string
	Details []any // key, value, ... for the refusal's audit entry
}

func (e *RefusedError) Error() string { return e.Kind.Error() + ": " + e.Detail }
func (e *RefusedError) Unwrap() error { return e.Kind }

// PolicyStore says which services a policy protects or protected.
type PolicyStore interface {
	PolicyHistory(ctx context.Context, service string) ([]store.Policy, error)
}

// Config is what an Intake needs.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// StatePath is the stream table's snapshot (DATA/audit-streams.json).
	StatePath string
	Policies  PolicyStore
	// Revision is the store's current revision: what is known about a
	// workload that is not an enforcement point holds until it moves.
	Revision func() int64
	// Append appends entries durably.
	Append   func(ctx context.Context, es ...*audit.Entry) error
	Now      func() time.Time
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Intake takes shipped batches into the log.
type Intake struct {
	cfg Config

	mu      sync.Mutex
	streams map[string]*streamState
	// Identities known to be enforcement points (a policy protects them),
	// and those known not to be as of a revision (+1).
	enforcers      map[string]bool
	notEnforcerRev map[string]int64

	ingested, duplicates, refused, entriesRefused prometheus.Counter
}

type streamState struct {
	mu    sync.Mutex // held while a batch of the stream is appended
	Owner string     `json:"owner"` // the SPIFFE ID that ships it
	Last  uint64     `json:"last"`
	Seen  time.Time  `json:"seen,omitzero"` // last batch received
}

type snapshot struct {
	Size    int64                   `json:"size"`
	Streams map[string]*streamState `json:"streams"`
}

// Load rebuilds the stream table from the snapshot and the entries of l
// appended after it.
func Load(cfg Config, l *audit.Log) (*Intake, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	in := &Intake{cfg: cfg, streams: map[string]*streamState{}, enforcers: map[string]bool{}, notEnforcerRev: map[string]int64{}}
	var from int64
	b, err := os.ReadFile(cfg.StatePath)
	switch {
	case err == nil:
		var snap snapshot
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, fmt.Errorf("intake: %s: %w", cfg.StatePath, err)
		}
		if snap.Size <= l.Size() {
			from = snap.Size
			for id, st := range snap.Streams {
				in.streams[id] = &streamState{Owner: st.Owner, Last: st.Last, Seen: st.Seen}
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("intake: %w", err)
	}
	for i, n := from, l.Size(); i < n; i++ {
		data, err := l.Entry(i)
		if err != nil {
			return nil, fmt.Errorf("intake: audit entry %d: %w", i, err)
		}
		e, err := audit.ParseEntry(data)
		if err != nil {
			continue // audit verify reports it; ingestion keeps going
		}
		if e.Stream == "" {
			continue
		}
		st := in.streams[e.Stream]
		if st == nil {
			st = &streamState{Owner: e.Source}
			in.streams[e.Stream] = st
		}
		st.Last = max(st.Last, e.Seq)
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	in.ingested = c("rampart_server_audit_ingested_total", "Audit entries received from agents and proxies and stored.")
	in.duplicates = c("rampart_server_audit_ingest_duplicates_total", "Audit entries received again (retried batches) and dropped.")
	in.refused = c("rampart_server_audit_ingest_refused_total", "Audit batches refused (malformed, not a shipper, a stream of another identity, too many streams).")
	in.entriesRefused = c("rampart_server_audit_ingest_entries_refused_total", "Shipped audit entries refused: an action the source may not record, or about another target.")
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(in.ingested, in.duplicates, in.refused, in.entriesRefused)
	}
	return in, nil
}

// Snapshot saves the stream table; size must be read before the table.
func (in *Intake) Snapshot(size int64) error {
	in.mu.Lock()
	snap := snapshot{Size: size, Streams: make(map[string]*streamState, len(in.streams))}
	states := make(map[string]*streamState, len(in.streams))
	for id, st := range in.streams {
		states[id] = st
	}
	in.mu.Unlock()
	for id, st := range states {
		st.mu.Lock()
		snap.Streams[id] = &streamState{Owner: st.Owner, Last: st.Last, Seen: st.Seen}
		st.mu.Unlock()
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	return atomicfile.Write(in.cfg.StatePath, b, 0o600)
}

// Batch is one shipped batch.
type Batch struct {
	Caller spiffeid.ID // the verified shipper
	// Body (at most MaxBatchBytes) and its content type.
	Body        io.Reader
	ContentType string
	// Refused makes the entries that record shipped entries refused, with
	// the reason and details given; they are appended with the batch (the
	// server aggregates them with its other refusals).
	Refused func(reason string, kv ...any) []*audit.Entry
}

// Ack acknowledges a batch: the log holds every entry of Stream through
// sequence number Through durably.
type Ack struct {
	Stream  string
	Through uint64
}

// Take appends a batch from an agent's, proxy's or replica's spool and
// acknowledges it once the entries are durable. Entries the source may
// not write are not stored. Every error is a *RefusedError.
func (in *Intake) Take(ctx context.Context, b Batch) (Ack, error) {
	caller := b.Caller.String()
	role, err := in.roleOf(ctx, b.Caller)
	if err != nil {
		return Ack{}, &RefusedError{Kind: ErrUnavailable, Detail: "cannot look up the caller's policy; retry later"}
	}
	if role == roleNone {
		in.refused.Inc()
		return Ack{}, &RefusedError{Kind: ErrNotShipper, Reason: "not an agent, a proxy or an SDK service: no policy protects " + caller, Details: []any{"target", "audit"},
			Detail: "audit ingest is for agents, proxies and SDK services: no policy protects " + caller + " (its spool keeps the entries until one does)"}
	}
	es, err := DecodeBatch(b.Body, b.ContentType)
	if err != nil {
		in.refused.Inc()
		return Ack{}, err
	}
	stream := es[0].Stream
	now := in.cfg.Now()
	in.mu.Lock()
	st := in.streams[stream]
	if st == nil {
		if n := in.streamsOf(caller, now); n >= MaxStreamsPerIdentity {
			in.mu.Unlock()
			in.refused.Inc()
			return Ack{}, &RefusedError{Kind: ErrStreamLimit, Reason: fmt.Sprintf("stream limit: %s already ships %d streams", caller, n), Details: []any{"target", "audit"},
				Detail: fmt.Sprintf("audit stream refused: %s already ships %d streams (at most %d active)", caller, n, MaxStreamsPerIdentity)}
		}
		st = &streamState{Owner: caller}
		in.streams[stream] = st
	}
	in.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.Owner != caller {
		in.refused.Inc()
		return Ack{}, &RefusedError{Kind: ErrNotOwner, Reason: "stream " + stream + " belongs to " + st.Owner, Details: []any{"stream", stream},
			Detail: "audit stream " + stream + " belongs to another identity"}
	}
	st.Seen = now
	fresh := es
	for len(fresh) > 0 && fresh[0].Seq <= st.Last {
		fresh = fresh[1:]
	}
	in.duplicates.Add(float64(len(es) - len(fresh)))
	if len(fresh) == 0 {
		return Ack{Stream: stream, Through: st.Last}, nil
	}
	last := fresh[len(fresh)-1].Seq
	first := fresh[0].Seq
	kept := fresh[:0:0]
	refusedBy := map[string]int{}
	var why string
	for _, e := range fresh {
		if reason := admit(e, caller, role, now); reason != "" {
			refusedBy[e.Action]++
			why = reason
			continue
		}
		kept = append(kept, e)
	}
	if first != st.Last+1 {
		// Entries between were lost on the way (a spool deleted or
		// damaged by hand). Say so in the log itself.
		gap := &audit.Entry{V: audit.SchemaVersion, Time: now, Actor: audit.Actor{SpiffeID: caller},
			Action: "audit.ingest.gap", Target: stream, Outcome: audit.OutcomeFailure, Source: "server",
			Reason:  fmt.Sprintf("entries %d to %d of the stream never arrived", st.Last+1, first-1),
			Details: map[string]string{"stream": stream, "from": strconv.FormatUint(st.Last+1, 10), "to": strconv.FormatUint(first-1, 10)}}
		in.cfg.Log.Warn("audit stream gap", "stream", stream, "source", caller, "from", st.Last+1, "to", first-1)
		kept = append([]*audit.Entry{gap}, kept...)
	}
	if len(refusedBy) > 0 {
		n := 0
		for _, c := range refusedBy {
			n += c
		}
		in.entriesRefused.Add(float64(n))
		kept = append(kept, b.Refused(fmt.Sprintf("%d shipped entries refused; e.g. %s", n, why),
			"target", "audit", "stream", stream, "from_seq", first, "to_seq", last, "refused", fmt.Sprint(refusedBy))...)
	}
	in.ingested.Add(float64(len(kept)))
	if len(kept) > 0 {
		if err := in.cfg.Append(ctx, kept...); err != nil {
			return Ack{}, &RefusedError{Kind: ErrUnavailable, Detail: "the audit log cannot be written; retry later"}
		}
	}
	st.Last = last
	return Ack{Stream: stream, Through: st.Last}, nil
}

// streamsOf counts caller's streams seen within StreamIdle (or of unknown
// age: loaded from the log, not yet seen again). Call with in.mu held.
func (in *Intake) streamsOf(caller string, now time.Time) int {
	n := 0
	for _, st := range in.streams {
		if st.Owner == caller && (st.Seen.IsZero() || now.Sub(st.Seen) < StreamIdle) {
			n++
		}
	}
	return n
}

// role is what the intake knows a shipping identity to be.
type role int

const (
	roleNone     role = iota // may not ship
	roleAgent                // an agent: attestation refusals on its own host
	roleEnforcer             // a proxy or SDK service: decisions about itself
	roleServer               // another replica forwarding the server's own entries
)

// roleOf says what caller may ship (decision 0030: a workload is an
// enforcement point, a proxy or SDK service, when a policy protecting it
// was ever published).
func (in *Intake) roleOf(ctx context.Context, caller spiffeid.ID) (role, error) {
	td := in.cfg.TrustDomain
	switch {
	case caller == identity.ServerID(td):
		return roleServer, nil
	case identity.IsAgentID(td, caller):
		return roleAgent, nil
	}
	id := caller.String()
	rev := in.cfg.Revision()
	in.mu.Lock()
	if in.enforcers[id] || in.notEnforcerRev[id] == rev+1 {
		ok := in.enforcers[id]
		in.mu.Unlock()
		if ok {
			return roleEnforcer, nil
		}
		return roleNone, nil
	}
	in.mu.Unlock()
	hist, err := in.cfg.Policies.PolicyHistory(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return roleNone, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(hist) > 0 {
		in.enforcers[id] = true // a history is never shortened
		return roleEnforcer, nil
	}
	if len(in.notEnforcerRev) > 10000 {
		clear(in.notEnforcerRev)
	}
	in.notEnforcerRev[id] = rev + 1 // +1: the zero value means unknown
	return roleNone, nil
}

// Spool bookkeeping any shipper may send: the intake names the shipper as
// its actor and target.
var spoolActions = map[string]bool{"audit.entries_dropped": true, "audit.entry_lost": true}

// admit checks one shipped entry against what its source may say, and
// fixes what the server decides: the source, the spool bookkeeping's actor
// and target, a time from the future, oversized fields. It returns why the
// entry is refused, or "".
func admit(e *audit.Entry, caller string, r role, now time.Time) string {
	audit.ClipEntry(e)
	if r == roleServer {
		return "" // the server's own entries, forwarded by a replica
	}
	if e.Actor.SpiffeID != "" && !spoolActions[e.Action] {
		// Detection and playbooks read actor.spiffe_id as an identity: a
		// pattern or a made-up string there is no one's (red team: an
		// actor "spiffe://TD/*" became a quarantine of the whole domain).
		if _, err := spiffeid.FromString(e.Actor.SpiffeID); err != nil {
			return "actor.spiffe_id " + strconv.Quote(e.Actor.SpiffeID) + " is not a SPIFFE ID"
		}
	}
	switch {
	case spoolActions[e.Action]:
		e.Actor, e.Target = audit.Actor{SpiffeID: caller}, caller
	case r == roleEnforcer && e.Action == "authz.decision":
		if e.Target != caller {
			return "a decision about another service (target " + e.Target + ")"
		}
	case r == roleAgent && (e.Action == "workload.attest" || e.Action == "netpol.dropped" || e.Action == "netpol.drift"):
		if e.Target != caller {
			return "an entry about another agent's host (target " + e.Target + ")"
		}
	default:
		return "action " + e.Action + " is not one a" + map[role]string{roleAgent: "n agent", roleEnforcer: " proxy or SDK service"}[r] + " records"
	}
	e.Source = caller // the server names who shipped the entry
	if e.Time.After(now.Add(MaxSkew)) {
		if e.Details == nil {
			e.Details = map[string]string{}
		}
		e.Details["time_claimed"] = e.Time.UTC().Format(time.RFC3339Nano)
		e.Time = now
	}
	return ""
}

// DecodeBatch reads and checks a batch: 1 to MaxBatchEntries canonical
// entries with consecutive sequence numbers of one stream.
//
// Two wire formats (see package spool): version 2 (spool.BatchContentType,
// compressed frames) from current senders, version 1 (JSON) from senders
// of the previous version. Entries need not be in canonical form: the
// server re-encodes what it stores.
func DecodeBatch(body io.Reader, contentType string) ([]*audit.Entry, error) {
	malformed := func(err error) error { return &RefusedError{Kind: ErrMalformed, Detail: "audit batch: " + err.Error()} }
	var raws [][]byte
	switch contentType {
	case spool.BatchContentType:
		var err error
		if raws, err = spool.DecodeBatch(body); err != nil {
			return nil, malformed(err)
		}
	case "application/json", "":
		var req api.AuditIngestRequest
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, malformed(err)
		}
		raws = make([][]byte, len(req.Entries))
		for i, e := range req.Entries {
			raws[i] = e
		}
	default:
		return nil, &RefusedError{Kind: ErrMediaType,
			Detail: fmt.Sprintf("audit batch: content type %q: want %s (or application/json, version 1)", contentType, spool.BatchContentType)}
	}
	if len(raws) == 0 || len(raws) > MaxBatchEntries {
		return nil, malformed(fmt.Errorf("%d entries, want 1 to %d", len(raws), MaxBatchEntries))
	}
	es := make([]*audit.Entry, len(raws))
	for i, raw := range raws {
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return nil, malformed(fmt.Errorf("entry %d: %w", i, err))
		}
		es[i] = e
	}
	if err := checkSequence(es); err != nil {
		return nil, malformed(err)
	}
	return es, nil
}

// checkSequence: one stream, consecutive sequence numbers from 1 on.
func checkSequence(es []*audit.Entry) error {
	for i, e := range es {
		var err error
		switch {
		case e.Stream == "":
			err = errors.New("no stream")
		case e.Seq == 0:
			err = errors.New("seq 0; sequence numbers start at 1")
		case i > 0 && (e.Stream != es[0].Stream || e.Seq != es[i-1].Seq+1):
			err = fmt.Errorf("stream %s seq %d does not follow stream %s seq %d", e.Stream, e.Seq, es[i-1].Stream, es[i-1].Seq)
		}
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}
