package server

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/registration"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// handleAttest spends a join token and returns the agent's first SVID.
func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	var req api.AttestRequest
	if err := api.Decode(r, &req); err != nil {
		s.metrics.attestations.WithLabelValues("bad_request").Inc()
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
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
		api.WriteProblem(w, http.StatusUnauthorized, "join token unknown, already used, or expired")
		return
	}
	agentID, err := spiffeid.FromString(jt.AgentID)
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "stored agent id is invalid")
		return
	}
	// A join token made for an evicted agent's name readmits it: an
	// operator chose to (registration.NewJoinToken).
	chain, ok := s.signAgent(w, r, agentID, req.CSR, true)
	if !ok {
		s.metrics.attestations.WithLabelValues("bad_csr").Inc()
		return
	}
	s.metrics.attestations.WithLabelValues("ok").Inc()
	s.event(r, "agent.attest", "agent_id", agentID.String(), "serial", svid.SerialString(chain[0].SerialNumber))
	api.WriteJSON(w, http.StatusOK, api.AttestResponse{SVID: toAPISVID(agentID, chain), Bundle: s.bundleDER()})
}

// handleRenew issues a new SVID to an agent that proved its current one.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	agentID := agentFrom(r)
	chain, ok := s.signAgent(w, r, agentID, req.CSR, false)
	if !ok {
		return
	}
	s.metrics.renewals.Inc()
	s.event(r, "agent.renew", "agent_id", agentID.String(), "serial", svid.SerialString(chain[0].SerialNumber))
	api.WriteJSON(w, http.StatusOK, api.AttestResponse{SVID: toAPISVID(agentID, chain), Bundle: s.bundleDER()})
}

// signAgent signs an agent's SVID (registration.SignAgent), answering
// the failure if there is one.
func (s *Server) signAgent(w http.ResponseWriter, r *http.Request, agentID spiffeid.ID, csr []byte, readmit bool) ([]*x509.Certificate, bool) {
	chain, err := s.registrar.SignAgent(r.Context(), agentID, csr, readmit)
	switch {
	case errors.Is(err, registration.ErrInvalid):
		s.metrics.issueFailures.WithLabelValues("bad_csr").Inc()
		s.refused(r, "svid.issue", err.Error(), "agent_id", agentID.String())
	case errors.Is(err, registration.ErrCA):
		s.metrics.issueFailures.WithLabelValues("ca").Inc()
	}
	if err != nil {
		s.registrationError(w, err)
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
	// Last seen only: writing back the whole record read here could undo
	// an eviction or a renewal made in between.
	if err := s.store.TouchAgent(r.Context(), agentID.String(), s.now()); err != nil {
		s.log.Warn("recording when an agent was last seen", "agent_id", agentID.String(), "err", err)
	}
	rev, _ := s.feed.wait()
	entries, err := s.store.ListEntries(r.Context(), agentID.String())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	revs, err := s.store.ListRevocations(r.Context(), s.now())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read revocations")
		return
	}
	jwtBundle, err := s.ca.JWTBundle()
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot encode the JWT bundle")
		return
	}
	now := s.now()
	// An expired entry is not synced: the agent drops it, and its SVID,
	// as if deleted.
	entries = slices.DeleteFunc(entries, func(e store.Entry) bool { return registration.Expired(e, now) })
	fed, err := s.federatedBundles(r.Context(), entries)
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read federated bundles")
		return
	}
	out := api.SyncResponse{Revision: rev, Bundle: s.bundleDER(), JWTBundle: json.RawMessage(jwtBundle), Entries: api.MapAll(entries, entryToAPI), Revoked: []string{},
		ReissueUnlessRoot: s.rekey.Reissuing(), FederatedBundles: fed}
	for _, rv := range revs {
		out.Revoked = append(out.Revoked, rv.Serial)
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// maxSignBatch bounds one signing request.
const maxSignBatch = 1000

// handleSign signs workload SVIDs for entries parented by the calling agent.
// Each item succeeds or fails on its own.
func (s *Server) handleSign(w http.ResponseWriter, r *http.Request) {
	var req api.SignRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if len(req.Requests) == 0 || len(req.Requests) > maxSignBatch {
		api.WriteProblem(w, http.StatusBadRequest, "requests: want between 1 and 1000 items")
		return
	}
	agentID := agentFrom(r)
	reqs := make([]registration.SignRequest, len(req.Requests))
	for i, item := range req.Requests {
		reqs[i] = registration.SignRequest{EntryID: item.EntryID, CSR: item.CSR}
	}
	signed, err := s.registrar.SignWorkloads(r.Context(), agentID, reqs)
	if err != nil {
		s.internalError(w, err)
		return
	}
	out := api.SignResponse{Results: make([]api.SignResult, len(signed))}
	var events []*audit.Entry
	issued := 0
	for i, sg := range signed {
		res := &out.Results[i]
		res.EntryID = sg.EntryID
		switch {
		case errors.Is(sg.Err, registration.ErrNotEntitled):
			s.metrics.issueFailures.WithLabelValues("not_entitled").Inc()
			events = append(events, s.entry(r, "svid.issue", audit.OutcomeDenied, "not entitled", "entry_id", sg.EntryID))
		case errors.Is(sg.Err, registration.ErrInvalid):
			s.metrics.issueFailures.WithLabelValues("bad_csr").Inc()
			events = append(events, s.entry(r, "svid.issue", audit.OutcomeDenied, sg.Err.Error(), "entry_id", sg.Entry.ID, "spiffe_id", sg.Entry.SpiffeID))
		case errors.Is(sg.Err, registration.ErrCA):
			s.metrics.issueFailures.WithLabelValues("ca").Inc()
			res.Error = "the CA cannot sign now"
			continue
		case sg.Err == nil:
			sv := toAPISVID(sg.ID, sg.Chain)
			res.SVID = &sv
			issued++
			events = append(events, s.entry(r, "svid.issue", audit.OutcomeSuccess, "", "spiffe_id", sg.Entry.SpiffeID, "serial",
				svid.SerialString(sg.Chain[0].SerialNumber), "entry_id", sg.Entry.ID, "not_after", sg.Chain[0].NotAfter))
		}
		if sg.Err != nil {
			res.Error = sg.Err.Error()
		}
	}
	s.metrics.svidsIssued.WithLabelValues("workload").Add(float64(issued))
	if len(events) > 0 {
		s.record(r.Context(), events...)
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleJWTSVID(w http.ResponseWriter, r *http.Request) {
	var req api.JWTSVIDRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	id, tok, exp, err := s.registrar.SignJWT(r.Context(), s.store, agentFrom(r), req.EntryID, req.Audience)
	if errors.Is(err, registration.ErrNotEntitled) {
		s.metrics.issueFailures.WithLabelValues("not_entitled").Inc()
	}
	if err != nil {
		s.registrationError(w, err)
		return
	}
	s.metrics.svidsIssued.WithLabelValues("jwt").Inc()
	api.WriteJSON(w, http.StatusOK, api.JWTSVIDResponse{SpiffeID: id, Token: tok, ExpiresAt: exp})
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
