package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/witness"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/svid"
)

// openAudit opens DATA/audit and loads (or creates, 0600) the checkpoint
// signing key; the verifier key is written to DATA/audit.pub for
// "rampart audit verify" and for witnesses.
func openAudit(cfg Config) (*audit.Log, note.Signer, error) {
	name := cfg.TrustDomain.Name() + "/audit"
	signer, err := audit.LoadSigner(filepath.Join(cfg.DataDir, "keys", "audit.key"), filepath.Join(cfg.DataDir, "audit.pub"), name)
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
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
	op, isOp := callerFrom(r)
	switch caller := agentFrom(r); {
	case !caller.IsZero():
		e.Actor.SpiffeID = caller.String()
	case isOp:
		// An admin caller, authenticated: the operator's subject, the
		// workload's SPIFFE ID, or "admin" for the break-glass token;
		// how, and the token's session, in the details.
		e.Actor = op.Actor
		e.Details["auth"] = op.Kind
		if op.Name != "" {
			e.Details["operator_name"] = op.Name
		}
		if op.Session != "" {
			e.Details["session"] = op.Session
		}
		if op.Kind == operator.KindWorkload {
			e.Details["operator"] = strings.Join(op.Via, " ")
		}
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
	if !errors.Is(err, identity.ErrUntrusted) && len(c.URIs) == 1 {
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

// handleCheckpoint serves the latest signed checkpoint (C2SP
// tlog-checkpoint). Public: it carries the log's size and root hash only,
// and witnesses on other machines keep copies of it.
func (s *Server) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, "audit", "checkpoint"))
	if err != nil {
		api.WriteProblem(w, http.StatusServiceUnavailable, "no checkpoint published yet")
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
		api.WriteProblem(w, http.StatusBadRequest, "old and new: want two tree sizes, old <= new")
		return
	}
	proof, err := s.audit.ProveConsistency(older, newer)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	out := witness.ConsistencyResponse{Old: older, New: newer, Proof: make([][]byte, len(proof))}
	for i, h := range proof {
		out.Proof[i] = h[:]
	}
	api.WriteJSON(w, http.StatusOK, out)
}
