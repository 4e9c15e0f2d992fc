package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits on one ingested batch.
const (
	maxIngestBody    = 16 << 20
	maxIngestEntries = 10000
)

// ingest tracks, per spool stream, who owns it and the highest sequence
// number the audit log holds, so retried batches are not stored twice and
// lost entries show. It is rebuilt at start from a snapshot (written with
// every checkpoint) plus the entries appended after it.
type ingest struct {
	mu      sync.Mutex
	streams map[string]*streamState
	// Identities known to be enforcement points (a policy protects them),
	// and those known not to be as of a revision (+1).
	enforcers      map[string]bool
	notEnforcerRev map[string]int64
}

type streamState struct {
	mu    sync.Mutex // held while a batch of the stream is appended
	Owner string     `json:"owner"` // the SPIFFE ID that ships it
	Last  uint64     `json:"last"`
	Seen  time.Time  `json:"seen,omitzero"` // last batch received
}

type ingestSnapshot struct {
	Size    int64                   `json:"size"`
	Streams map[string]*streamState `json:"streams"`
}

func ingestStatePath(dataDir string) string { return filepath.Join(dataDir, "audit-streams.json") }

// loadIngest rebuilds the stream table.
func loadIngest(dataDir string, l *audit.Log) (*ingest, error) {
	in := &ingest{streams: map[string]*streamState{}, enforcers: map[string]bool{}, notEnforcerRev: map[string]int64{}}
	var from int64
	b, err := os.ReadFile(ingestStatePath(dataDir))
	switch {
	case err == nil:
		var snap ingestSnapshot
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, fmt.Errorf("server: %s: %w", ingestStatePath(dataDir), err)
		}
		if snap.Size <= l.Size() {
			from = snap.Size
			for id, st := range snap.Streams {
				in.streams[id] = &streamState{Owner: st.Owner, Last: st.Last, Seen: st.Seen}
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("server: %w", err)
	}
	for i, n := from, l.Size(); i < n; i++ {
		data, err := l.Entry(i)
		if err != nil {
			return nil, fmt.Errorf("server: audit entry %d: %w", i, err)
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
	return in, nil
}

// snapshot saves the stream table; size must be read before the table.
func (in *ingest) snapshot(dataDir string, size int64) error {
	in.mu.Lock()
	snap := ingestSnapshot{Size: size, Streams: make(map[string]*streamState, len(in.streams))}
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
	return atomicfile.Write(ingestStatePath(dataDir), b, 0o600)
}

// Intake rules (issue 26 item 3). The audit log is evidence: a source may
// only put in it what it witnesses.
const (
	// maxIngestSkew: an entry's time may be ahead of the server's by this
	// much; later times are clamped to the time of receipt (the claimed
	// time kept in details.time_claimed).
	maxIngestSkew = time.Minute
	// maxStreamsPerIdentity bounds the streams one identity may open (a
	// spool directory each: a proxy or agent restarted with a fresh data
	// directory opens another). Streams idle for streamIdle no longer count.
	maxStreamsPerIdentity = 64
	streamIdle            = 7 * 24 * time.Hour
)

// Spool bookkeeping any shipper may send: the server names the shipper as
// its actor and target.
var spoolActions = map[string]bool{"audit.entries_dropped": true, "audit.entry_lost": true}

// ingestRole is what the server knows a shipping identity to be.
type ingestRole int

const (
	roleNone     ingestRole = iota // may not ship
	roleAgent                      // an agent: attestation refusals on its own host
	roleEnforcer                   // a proxy or SDK service: decisions about itself
	roleServer                     // another replica forwarding the server's own entries
)

func (r ingestRole) String() string {
	return [...]string{"none", "agent", "enforcer", "server"}[r]
}

// roleOf says what caller may ship (decision 0029: a workload is an
// enforcement point, a proxy or SDK service, when a policy protecting it
// was ever published).
func (s *Server) roleOf(ctx context.Context, caller spiffeid.ID) (ingestRole, error) {
	td := s.cfg.TrustDomain
	switch {
	case caller == identity.ServerID(td):
		return roleServer, nil
	case identity.IsAgentID(td, caller):
		return roleAgent, nil
	}
	id := caller.String()
	rev, _ := s.waitChange()
	s.ingest.mu.Lock()
	if s.ingest.enforcers[id] || s.ingest.notEnforcerRev[id] == rev+1 {
		ok := s.ingest.enforcers[id]
		s.ingest.mu.Unlock()
		if ok {
			return roleEnforcer, nil
		}
		return roleNone, nil
	}
	s.ingest.mu.Unlock()
	hist, err := s.store.PolicyHistory(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return roleNone, err
	}
	s.ingest.mu.Lock()
	defer s.ingest.mu.Unlock()
	if len(hist) > 0 {
		s.ingest.enforcers[id] = true // a history is never shortened
		return roleEnforcer, nil
	}
	if len(s.ingest.notEnforcerRev) > 10000 {
		clear(s.ingest.notEnforcerRev)
	}
	s.ingest.notEnforcerRev[id] = rev + 1 // +1: the zero value means unknown
	return roleNone, nil
}

// admit checks one shipped entry against what its source may say, and
// fixes what the server decides: the source, the spool bookkeeping's actor
// and target, a time from the future, oversized fields. It returns why the
// entry is refused, or "".
func admit(e *audit.Entry, caller string, role ingestRole, now time.Time) string {
	audit.ClipEntry(e)
	if role == roleServer {
		return "" // the server's own entries, forwarded by a replica
	}
	switch {
	case spoolActions[e.Action]:
		e.Actor, e.Target = audit.Actor{SpiffeID: caller}, caller
	case role == roleEnforcer && e.Action == "authz.decision":
		if e.Target != caller {
			return "a decision about another service (target " + e.Target + ")"
		}
	case role == roleAgent && e.Action == "workload.attest":
		if e.Target != caller {
			return "an attestation on another agent's host (target " + e.Target + ")"
		}
	default:
		return "action " + e.Action + " is not one a" + map[ingestRole]string{roleAgent: "n agent", roleEnforcer: " proxy or SDK service"}[role] + " records"
	}
	e.Source = caller // the server names who shipped the entry
	if e.Time.After(now.Add(maxIngestSkew)) {
		if e.Details == nil {
			e.Details = map[string]string{}
		}
		e.Details["time_claimed"] = e.Time.UTC().Format(time.RFC3339Nano)
		e.Time = now
	}
	return ""
}

// handleIngest appends a batch from an agent's or proxy's spool. The answer
// comes only after the entries are durable. Entries the source may not
// write are not stored: one audit.ingest refusal per batch counts them (by
// action), and the batch is acknowledged so the stream goes on.
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	callerID := agentFrom(r)
	caller := callerID.String()
	role, err := s.roleOf(r.Context(), callerID)
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "cannot look up the caller's policy; retry later")
		return
	}
	if role == roleNone {
		s.metrics.ingestRefused.Inc()
		s.refused(r, "audit.ingest", "not an agent, a proxy or an SDK service: no policy protects "+caller, "target", "audit")
		writeProblem(w, http.StatusForbidden, "audit ingest is for agents, proxies and SDK services: no policy protects "+caller+" (its spool keeps the entries until one does)")
		return
	}
	es, status, err := s.decodeBatch(r)
	if err != nil {
		s.metrics.ingestRefused.Inc()
		writeProblem(w, status, "audit batch: "+err.Error())
		return
	}
	stream := es[0].Stream
	now := s.now()
	s.ingest.mu.Lock()
	st := s.ingest.streams[stream]
	if st == nil {
		if n := s.ingest.streamsOf(caller, now); n >= maxStreamsPerIdentity {
			s.ingest.mu.Unlock()
			s.metrics.ingestRefused.Inc()
			s.refused(r, "audit.ingest", fmt.Sprintf("stream limit: %s already ships %d streams", caller, n), "target", "audit")
			writeProblem(w, http.StatusTooManyRequests, fmt.Sprintf("audit stream refused: %s already ships %d streams (at most %d active)", caller, n, maxStreamsPerIdentity))
			return
		}
		st = &streamState{Owner: caller}
		s.ingest.streams[stream] = st
	}
	s.ingest.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.Owner != caller {
		s.metrics.ingestRefused.Inc()
		s.refused(r, "audit.ingest", "stream "+stream+" belongs to "+st.Owner, "stream", stream)
		writeProblem(w, http.StatusForbidden, "audit stream "+stream+" belongs to another identity")
		return
	}
	st.Seen = now
	fresh := es
	for len(fresh) > 0 && fresh[0].Seq <= st.Last {
		fresh = fresh[1:]
	}
	s.metrics.ingestDuplicates.Add(float64(len(es) - len(fresh)))
	if len(fresh) > 0 {
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
			s.log.Warn("audit stream gap", "stream", stream, "source", caller, "from", st.Last+1, "to", first-1)
			kept = append([]*audit.Entry{gap}, kept...)
		}
		if len(refusedBy) > 0 {
			n := 0
			for _, c := range refusedBy {
				n += c
			}
			s.metrics.ingestEntriesRefused.Add(float64(n))
			e := s.entry(r, "audit.ingest", audit.OutcomeDenied, fmt.Sprintf("%d shipped entries refused; e.g. %s", n, why),
				"target", "audit", "stream", stream, "from_seq", first, "to_seq", last, "refused", fmt.Sprint(refusedBy))
			kept = append(kept, s.refusals.Add(e, caller)...)
		}
		s.metrics.ingested.Add(float64(len(kept)))
		if len(kept) > 0 {
			if err := s.appendAudit(r.Context(), kept...); err != nil {
				writeProblem(w, http.StatusServiceUnavailable, "the audit log cannot be written; retry later")
				return
			}
		}
		st.Last = last
	}
	writeJSON(w, http.StatusOK, api.AuditIngestResponse{Stream: stream, AckedThrough: st.Last})
}

// streamsOf counts caller's streams seen within streamIdle (or of unknown
// age: loaded from the log, not yet seen again). Call with in.mu held.
func (in *ingest) streamsOf(caller string, now time.Time) int {
	n := 0
	for _, st := range in.streams {
		if st.Owner == caller && (st.Seen.IsZero() || now.Sub(st.Seen) < streamIdle) {
			n++
		}
	}
	return n
}

// decodeBatch reads and checks a batch: 1 to maxIngestEntries canonical
// entries with consecutive sequence numbers of one stream.
//
// Two wire formats (see package spool): version 2 (spool.BatchContentType,
// compressed frames) from current senders, version 1 (JSON) from senders
// of the previous version. Entries need not be in canonical form: the
// server re-encodes what it stores.
func (s *Server) decodeBatch(r *http.Request) ([]*audit.Entry, int, error) {
	var raws [][]byte
	body := http.MaxBytesReader(nil, r.Body, maxIngestBody)
	switch ct := r.Header.Get("Content-Type"); ct {
	case spool.BatchContentType:
		var err error
		if raws, err = spool.DecodeBatch(body); err != nil {
			return nil, http.StatusBadRequest, err
		}
	case "application/json", "":
		var req api.AuditIngestRequest
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, http.StatusBadRequest, err
		}
		raws = make([][]byte, len(req.Entries))
		for i, e := range req.Entries {
			raws[i] = e
		}
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want %s (or application/json, version 1)", ct, spool.BatchContentType)
	}
	if len(raws) == 0 || len(raws) > maxIngestEntries {
		return nil, http.StatusBadRequest, fmt.Errorf("%d entries, want 1 to %d", len(raws), maxIngestEntries)
	}
	es := make([]*audit.Entry, len(raws))
	for i, raw := range raws {
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("entry %d: %w", i, err)
		}
		es[i] = e
	}
	if err := checkSequence(es); err != nil {
		return nil, http.StatusBadRequest, err
	}
	return es, 0, nil
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
