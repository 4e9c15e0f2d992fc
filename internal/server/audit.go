package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/witness"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/svid"
)

// checkpointInterval is how often a new signed checkpoint is published
// when the log has grown.
const checkpointInterval = 10 * time.Second

// openAudit opens DATA/audit and loads (or creates, 0600) the checkpoint
// signing key; the verifier key is written to DATA/audit.pub for
// "rampart audit verify" and for witnesses.
func openAudit(cfg Config) (*audit.Log, note.Signer, error) {
	name := cfg.TrustDomain.Name() + "/audit"
	keyPath := filepath.Join(cfg.DataDir, "keys", "audit.key")
	skey, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		s, v, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, nil, fmt.Errorf("server: audit key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
			return nil, nil, err
		}
		if err := atomicfile.Write(keyPath, []byte(s+"\n"), 0o600); err != nil {
			return nil, nil, err
		}
		if err := atomicfile.Write(filepath.Join(cfg.DataDir, "audit.pub"), []byte(v+"\n"), 0o644); err != nil {
			return nil, nil, err
		}
		skey = []byte(s)
	} else if err != nil {
		return nil, nil, fmt.Errorf("server: audit key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, nil, fmt.Errorf("server: audit key %s: %w", keyPath, err)
	}
	l, err := audit.OpenWith(filepath.Join(cfg.DataDir, "audit"), name, audit.Options{SegmentEntries: cfg.AuditSegmentEntries,
		Logger: cfg.Log, Actor: audit.Actor{SpiffeID: identity.ServerID(cfg.TrustDomain).String()}, Now: cfg.Now})
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
	}
	return l, signer, nil
}

// event records a successful security-relevant action in the audit log
// (and as a log line).
func (s *Server) event(r *http.Request, action string, kv ...any) {
	s.record(r.Context(), s.entry(r, action, audit.OutcomeSuccess, "", kv...))
}

// refused records a refused action, aggregated with its repeats (see
// refusalAgg): refusals are what an attacker produces at will.
func (s *Server) refused(r *http.Request, action, reason string, kv ...any) {
	s.recordRefusal(r.Context(), s.entry(r, action, audit.OutcomeDenied, reason, kv...), r.RemoteAddr)
}

func (s *Server) recordRefusal(ctx context.Context, e *audit.Entry, remote string) {
	if es := s.refusals.Add(e, remote); len(es) > 0 {
		s.record(ctx, es...)
	}
}

func (s *Server) entry(r *http.Request, action, outcome, reason string, kv ...any) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: action, Outcome: outcome, Reason: reason,
		Source: "server", Details: map[string]string{"remote": r.RemoteAddr}}
	for i := 0; i+1 < len(kv); i += 2 {
		k, v := fmt.Sprint(kv[i]), fmt.Sprint(kv[i+1])
		if t, ok := kv[i+1].(time.Time); ok {
			v = t.UTC().Format(time.RFC3339Nano)
		}
		e.Details[k] = v
		if e.Target == "" && (k == "spiffe_id" || k == "agent_id" || k == "service" || k == "target") {
			e.Target = v
		}
	}
	s.setActor(e, r, action, outcome)
	return e
}

// setActor names who made request r, from what the request proved and
// nothing else: never a fallback to a privileged name. An entry recorded
// before the caller is known (a refused certificate, a refused token)
// names "unknown" with what the certificate claims, or "anonymous" when
// nothing was presented.
func (s *Server) setActor(e *audit.Entry, r *http.Request, action, outcome string) {
	switch caller := agentFrom(r); {
	case !caller.IsZero():
		e.Actor.SpiffeID = caller.String()
	case isAdmin(r):
		e.Actor.User = "admin" // the admin token was checked
	case action == "agent.attest" && outcome == audit.OutcomeSuccess:
		e.Actor.SpiffeID = e.Target // the agent, proven by its join token
	case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
		e.Actor.User = "unknown"
		certDetails(e, r.TLS.PeerCertificates[0])
	default:
		e.Actor.User = "anonymous"
	}
}

// certDetails adds what a refused client certificate claims to e: its
// serial and SPIFFE ID (unverified when the chain was refused).
func certDetails(e *audit.Entry, c *x509.Certificate) {
	e.Details["cert_serial"] = svid.SerialString(c.SerialNumber)
	if len(c.URIs) > 0 {
		e.Details["cert_spiffe_id"] = c.URIs[0].String()
	}
}

// refusedCertActor names the holder of a certificate refused with err: its
// SPIFFE ID when the chain verified (a revoked or evicted SVID is still
// that identity's, and detection groups by it), "unknown" when it did not
// (the ID is only a claim). Serial and SPIFFE ID go to the details either way.
func refusedCertActor(e *audit.Entry, c *x509.Certificate, err error) {
	certDetails(e, c)
	e.Actor = audit.Actor{User: "unknown"}
	if !errors.Is(err, errUntrusted) && len(c.URIs) == 1 {
		if id, perr := spiffeid.FromURI(c.URIs[0]); perr == nil {
			e.Actor = audit.Actor{SpiffeID: id.String()}
		}
	}
}

// record appends entries durably. A failure to audit is logged loudly and
// counted; the action it describes has already happened.
func (s *Server) record(ctx context.Context, es ...*audit.Entry) {
	for _, e := range es {
		audit.ClipEntry(e) // before the log line too: no megabyte lines
		attrs := []slog.Attr{slog.String("event", e.Action), slog.String("outcome", e.Outcome), slog.String("target", e.Target)}
		for k, v := range e.Details {
			attrs = append(attrs, slog.String(k, v))
		}
		lvl := slog.LevelInfo
		switch {
		case e.Outcome != audit.OutcomeSuccess:
			lvl = slog.LevelWarn
		case e.Action == "svid.issue" || strings.HasPrefix(e.Action, "oauth.token_"):
			lvl = slog.LevelDebug // thousands a second; the audit log has them
		}
		s.log.LogAttrs(ctx, lvl, "audit", attrs...)
	}
	s.appendAudit(ctx, es...)
}

// appendAudit appends entries durably (even if ctx ends: the action they
// describe has happened). A failure is logged loudly and counted.
func (s *Server) appendAudit(ctx context.Context, es ...*audit.Entry) error {
	if len(es) == 0 {
		return nil
	}
	for _, e := range es {
		// No input can make an entry too large to write.
		audit.ClipEntry(e)
	}
	var err error
	if s.forward != nil {
		err = s.appendForwarded(context.WithoutCancel(ctx), es...)
	} else {
		_, err = s.audit.AppendEntries(context.WithoutCancel(ctx), es...)
	}
	if err != nil {
		s.metrics.auditFailures.Inc()
		s.log.Error("AUDIT LOG WRITE FAILED", "err", err, "entries", len(es))
		return err
	}
	return nil
}

// checkpointLoop publishes a signed checkpoint whenever the log grew.
func (s *Server) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	var last int64 = -1
	for {
		select {
		case <-ctx.Done():
			// A last checkpoint, seal and archive copy on the way out,
			// bounded so an unreachable archive does not hold up a stop.
			s.checkpoint(&last, 15*time.Second)
			return
		case <-t.C:
			s.checkpoint(&last, 5*time.Minute)
		}
	}
}

func (s *Server) checkpoint(last *int64, archiveTimeout time.Duration) {
	// Refusals still being counted go in before the checkpoint covers
	// the log (at shutdown, this is the last chance).
	if es := s.refusals.Flush(true); len(es) > 0 {
		s.record(context.Background(), es...)
	}
	if n := s.audit.Size(); n != *last {
		if _, err := s.audit.Checkpoint(s.auditSigner); err != nil {
			s.log.Error("audit checkpoint failed", "err", err)
			return
		}
		if err := s.ingest.snapshot(s.cfg.DataDir, n); err != nil {
			s.log.Error("audit stream table snapshot failed", "err", err)
		}
		*last = n
	}
	s.retain(archiveTimeout)
}

// retain seals the segments the last checkpoint completed and copies them
// to the archive, recording both in the log itself.
func (s *Server) retain(archiveTimeout time.Duration) {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	ctx := context.Background()
	n, err := s.audit.Seal()
	if n > 0 {
		s.metrics.auditSealed.Add(float64(n))
		s.record(ctx, s.systemEntry("audit.seal", audit.OutcomeSuccess, "", "segments", strconv.Itoa(n), "entries_sealed", strconv.FormatInt(s.audit.Sealed(), 10)))
	}
	if err != nil {
		s.log.Error("AUDIT SEAL FAILED (run rampart audit verify)", "err", err)
		if !s.sealFailing {
			s.record(ctx, s.systemEntry("audit.seal", audit.OutcomeFailure, err.Error()))
		}
	}
	s.sealFailing = err != nil
	// What is sealed is archived even when the next seal fails: the
	// archiver copies each checkpoint as it comes, and none may be skipped.
	if s.archiver == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, archiveTimeout)
	defer cancel()
	res, err := s.archiver.Sync(actx)
	for _, k := range res.Segments {
		s.metrics.auditArchived.Inc()
		s.record(ctx, s.systemEntry("audit.archive", audit.OutcomeSuccess, "", "object", k, "archive", fmt.Sprint(s.cfg.AuditArchive)))
	}
	if err != nil {
		s.metrics.auditArchiveFailures.Inc()
		s.log.Error("audit archive copy failed; retrying in 10 s", "err", err)
		if !s.archiveFailing {
			s.record(ctx, s.systemEntry("audit.archive", audit.OutcomeFailure, err.Error(), "archive", fmt.Sprint(s.cfg.AuditArchive)))
		}
		s.archiveFailing = true
		return
	}
	s.archiveFailing = false
}

// systemEntry is an entry for an action the server took by itself.
func (s *Server) systemEntry(action, outcome, reason string, kv ...string) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: action, Outcome: outcome, Reason: reason,
		Source: "server", Actor: audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()}, Target: "audit", Details: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		e.Details[kv[i]] = kv[i+1]
	}
	return e
}

// handleCheckpoint serves the latest signed checkpoint (C2SP
// tlog-checkpoint). Public: it carries the log's size and root hash only,
// and witnesses on other machines keep copies of it.
func (s *Server) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, "audit", "checkpoint"))
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "no checkpoint published yet")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// handleConsistency proves that the log of size old is a prefix of the log
// of size new (RFC 6962 consistency proof). Public: hashes only.
func (s *Server) handleConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	older, err1 := strconv.ParseInt(q.Get("old"), 10, 64)
	newer, err2 := strconv.ParseInt(q.Get("new"), 10, 64)
	if err1 != nil || err2 != nil {
		writeProblem(w, http.StatusBadRequest, "old and new: want two tree sizes, old <= new")
		return
	}
	proof, err := s.audit.ProveConsistency(older, newer)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	out := witness.ConsistencyResponse{Old: older, New: newer, Proof: make([][]byte, len(proof))}
	for i, h := range proof {
		out.Proof[i] = h[:]
	}
	writeJSON(w, http.StatusOK, out)
}
