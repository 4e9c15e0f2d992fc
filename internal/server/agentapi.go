package server

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// handleAttest spends a join token and returns the agent's first SVID.
func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	var req api.AttestRequest
	if err := decode(r, &req); err != nil {
		s.metrics.attestations.WithLabelValues("bad_request").Inc()
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	hash := sha256.Sum256([]byte(req.JoinToken))
	jt, err := s.store.ConsumeJoinToken(r.Context(), hash[:], now)
	if err != nil {
		outcome := "invalid_token"
		if !errors.Is(err, store.ErrTokenInvalid) {
			outcome = "error"
			s.log.Error("consume join token", "err", err)
		}
		s.metrics.attestations.WithLabelValues(outcome).Inc()
		s.refused(r, "agent.attest", "join token unknown, used or expired")
		writeProblem(w, http.StatusUnauthorized, "join token unknown, already used, or expired")
		return
	}
	agentID, err := spiffeid.FromString(jt.AgentID)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "stored agent id is invalid")
		return
	}
	chain, ok := s.signAgent(w, r, agentID, req.CSR, now)
	if !ok {
		s.metrics.attestations.WithLabelValues("bad_csr").Inc()
		return
	}
	s.metrics.attestations.WithLabelValues("ok").Inc()
	s.event(r, "agent.attest", "agent_id", agentID.String(), "serial", svid.SerialString(chain[0].SerialNumber))
	writeJSON(w, http.StatusOK, api.AttestResponse{SVID: toAPISVID(agentID, chain), Bundle: s.bundleDER()})
}

// handleRenew issues a new SVID to an agent that proved its current one.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	agentID := agentFrom(r)
	chain, ok := s.signAgent(w, r, agentID, req.CSR, s.now())
	if !ok {
		return
	}
	s.metrics.renewals.Inc()
	s.event(r, "agent.renew", "agent_id", agentID.String(), "serial", svid.SerialString(chain[0].SerialNumber))
	writeJSON(w, http.StatusOK, api.AttestResponse{SVID: toAPISVID(agentID, chain), Bundle: s.bundleDER()})
}

func (s *Server) signAgent(w http.ResponseWriter, r *http.Request, agentID spiffeid.ID, csr []byte, now time.Time) ([]*x509.Certificate, bool) {
	pub, err := svid.CheckCSR(csr, agentID)
	if err != nil {
		s.metrics.issueFailures.WithLabelValues("bad_csr").Inc()
		s.refused(r, "svid.issue", err.Error(), "agent_id", agentID.String())
		writeProblem(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	chain, err := s.ca.SignX509SVID(agentID, pub, s.cfg.AgentTTL, nil, nil)
	if err != nil {
		s.metrics.issueFailures.WithLabelValues("ca").Inc()
		writeProblem(w, http.StatusServiceUnavailable, "the CA cannot sign now")
		return nil, false
	}
	serial := svid.SerialString(chain[0].SerialNumber)
	prev, err := s.store.GetAgent(r.Context(), agentID.String())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusInternalServerError, "cannot read the agent")
		return nil, false
	}
	a := store.Agent{SpiffeID: agentID.String(), Serial: serial, SVIDNotAfter: chain[0].NotAfter, AttestedAt: now, LastSeen: now}
	if err == nil {
		a.AttestedAt = prev.AttestedAt
	}
	if err := s.store.UpsertAgent(r.Context(), a); err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot store the agent")
		return nil, false
	}
	if err := s.store.RecordSVIDs(r.Context(), []store.IssuedSVID{{Serial: serial, SpiffeID: agentID.String(), AgentID: agentID.String(), NotAfter: chain[0].NotAfter, IssuedAt: now}}); err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot record the SVID")
		return nil, false
	}
	s.metrics.svidsIssued.WithLabelValues("agent").Inc()
	// A new agent changes who is evicted (a re-attested name) and must be
	// known to every replica at once.
	s.notify(r.Context())
	return chain, true
}

// handleSync returns what the agent needs: bundle, JWT bundle, its entries,
// revoked serials. With ?revision=N it waits (up to ?wait= seconds, at most
// 30) until the revision differs from N: a long poll, so changes reach agents
// within a moment of being made.
func (s *Server) handleSync(w http.ResponseWriter, r *http.Request) {
	agentID := agentFrom(r)
	if ok := s.longPoll(w, r); !ok {
		return
	}
	if a, err := s.store.GetAgent(r.Context(), agentID.String()); err == nil {
		a.LastSeen = s.now()
		s.store.UpsertAgent(r.Context(), a)
	}
	rev, _ := s.waitChange()
	entries, err := s.store.ListEntries(r.Context(), agentID.String())
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	revs, err := s.store.ListRevocations(r.Context(), s.now())
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read revocations")
		return
	}
	jwtBundle, err := s.ca.JWTBundle()
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot encode the JWT bundle")
		return
	}
	out := api.SyncResponse{Revision: rev, Bundle: s.bundleDER(), JWTBundle: json.RawMessage(jwtBundle), Entries: []api.Entry{}, Revoked: []string{}}
	for _, e := range entries {
		out.Entries = append(out.Entries, entryToAPI(e))
	}
	for _, rv := range revs {
		out.Revoked = append(out.Revoked, rv.Serial)
	}
	writeJSON(w, http.StatusOK, out)
}

// maxSignBatch bounds one signing request.
const maxSignBatch = 1000

// handleSign signs workload SVIDs for entries parented by the calling agent.
// Each item succeeds or fails on its own.
func (s *Server) handleSign(w http.ResponseWriter, r *http.Request) {
	var req api.SignRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Requests) == 0 || len(req.Requests) > maxSignBatch {
		writeProblem(w, http.StatusBadRequest, "requests: want between 1 and 1000 items")
		return
	}
	agentID := agentFrom(r)
	now := s.now()
	// One read of the agent's entries per batch, not one per item.
	mine, err := s.store.ListEntries(r.Context(), agentID.String())
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	byID := make(map[string]store.Entry, len(mine))
	for _, e := range mine {
		byID[e.ID] = e
	}
	out := api.SignResponse{Results: make([]api.SignResult, len(req.Requests))}
	var records []store.IssuedSVID
	var events []*audit.Entry
	for i, item := range req.Requests {
		res := &out.Results[i]
		res.EntryID = item.EntryID
		e, ok := byID[item.EntryID]
		if !ok || e.ParentID != agentID.String() {
			// The same answer for "no such entry" and "not yours", so an
			// agent cannot probe other agents' entries.
			s.metrics.issueFailures.WithLabelValues("not_entitled").Inc()
			res.Error = "entry " + item.EntryID + " does not exist or is not parented by " + agentID.String()
			events = append(events, s.entry(r, "svid.issue", audit.OutcomeDenied, "not entitled", "entry_id", item.EntryID))
			continue
		}
		id, err := spiffeid.FromString(e.SpiffeID)
		if err != nil {
			res.Error = "entry has an invalid SPIFFE ID"
			continue
		}
		pub, err := svid.CheckCSR(item.CSR, id)
		if err != nil {
			s.metrics.issueFailures.WithLabelValues("bad_csr").Inc()
			events = append(events, s.entry(r, "svid.issue", audit.OutcomeDenied, err.Error(), "entry_id", e.ID, "spiffe_id", e.SpiffeID))
			res.Error = err.Error()
			continue
		}
		ttl := e.X509TTL
		if ttl == 0 {
			ttl = s.cfg.DefaultX509TTL
		}
		chain, err := s.ca.SignX509SVID(id, pub, ttl, e.DNSNames, nil)
		if err != nil {
			s.metrics.issueFailures.WithLabelValues("ca").Inc()
			res.Error = "the CA cannot sign now"
			continue
		}
		sv := toAPISVID(id, chain)
		res.SVID = &sv
		records = append(records, store.IssuedSVID{Serial: svid.SerialString(chain[0].SerialNumber), SpiffeID: e.SpiffeID,
			AgentID: agentID.String(), EntryID: e.ID, NotAfter: chain[0].NotAfter, IssuedAt: now})
		events = append(events, s.entry(r, "svid.issue", audit.OutcomeSuccess, "", "spiffe_id", e.SpiffeID, "serial",
			svid.SerialString(chain[0].SerialNumber), "entry_id", e.ID, "not_after", chain[0].NotAfter))
	}
	if len(records) > 0 {
		// Record before answering: an SVID the store does not know could
		// not be revoked by SPIFFE ID or eviction.
		if err := s.store.RecordSVIDs(r.Context(), records); err != nil {
			s.log.Error("record SVIDs", "err", err)
			writeProblem(w, http.StatusInternalServerError, "cannot record the SVIDs")
			return
		}
		s.metrics.svidsIssued.WithLabelValues("workload").Add(float64(len(records)))
	}
	if len(events) > 0 {
		s.record(r.Context(), events...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleJWTSVID(w http.ResponseWriter, r *http.Request) {
	var req api.JWTSVIDRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	agentID := agentFrom(r)
	e, err := s.store.GetEntry(r.Context(), req.EntryID)
	if err != nil || e.ParentID != agentID.String() {
		s.metrics.issueFailures.WithLabelValues("not_entitled").Inc()
		writeProblem(w, http.StatusForbidden, "entry "+req.EntryID+" does not exist or is not parented by "+agentID.String())
		return
	}
	if len(req.Audience) == 0 {
		writeProblem(w, http.StatusBadRequest, "audience: at least one audience is required")
		return
	}
	id, _ := spiffeid.FromString(e.SpiffeID)
	ttl := e.JWTTTL
	if ttl == 0 {
		ttl = s.cfg.DefaultJWTTTL
	}
	tok, exp, err := s.ca.SignJWTSVID(id, req.Audience, ttl)
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "the CA cannot sign now")
		return
	}
	s.metrics.svidsIssued.WithLabelValues("jwt").Inc()
	writeJSON(w, http.StatusOK, api.JWTSVIDResponse{SpiffeID: e.SpiffeID, Token: tok, ExpiresAt: exp})
}

func (s *Server) bundleDER() [][]byte {
	roots := s.ca.X509Bundle()
	out := make([][]byte, len(roots))
	for i, c := range roots {
		out[i] = c.Raw
	}
	return out
}

func toAPISVID(id spiffeid.ID, chain []*x509.Certificate) api.X509SVID {
	out := api.X509SVID{SpiffeID: id.String(), Chain: make([][]byte, len(chain))}
	for i, c := range chain {
		out.Chain[i] = c.Raw
	}
	return out
}
