package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
)

// maxJoinTokenTTL bounds how long a join token may live: it is a bearer
// secret, so it should be spent soon after it is made.
const maxJoinTokenTTL = 7 * 24 * time.Hour

func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(identity.EncodePEM(s.ca.X509Bundle()))
}

func (s *Server) handleJWTBundle(w http.ResponseWriter, r *http.Request) {
	b, err := s.ca.JWTBundle()
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot encode the JWT bundle")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Write(b)
}

func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.CreateJoinTokenRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	ttl := s.cfg.JoinTokenTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if ttl <= 0 || ttl > maxJoinTokenTTL {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("ttl_seconds: must be between 1 and %d", int(maxJoinTokenTTL.Seconds())))
		return
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		writeProblem(w, http.StatusInternalServerError, "no randomness")
		return
	}
	name := req.AgentName
	if name == "" {
		nb := make([]byte, 6)
		if _, err := rand.Read(nb); err != nil {
			writeProblem(w, http.StatusInternalServerError, "no randomness")
			return
		}
		name = "agent-" + hex.EncodeToString(nb)
	}
	agentID, err := identity.AgentID(s.cfg.TrustDomain, name)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "agent_name: "+err.Error())
		return
	}
	if a, err := s.store.GetAgent(r.Context(), agentID.String()); err == nil && !a.Evicted {
		writeProblem(w, http.StatusConflict, fmt.Sprintf("agent_name: agent %s is already attested; evict it first or choose another name", agentID))
		return
	}
	token := "rjt_" + base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(token))
	now := s.now()
	jt := store.JoinToken{Hash: hash[:], AgentID: agentID.String(), ExpiresAt: now.Add(ttl), CreatedAt: now}
	if err := s.store.CreateJoinToken(r.Context(), jt); err != nil {
		s.log.Error("create join token", "err", err)
		writeProblem(w, http.StatusInternalServerError, "cannot store the join token")
		return
	}
	s.event(r, "join_token.create", "agent_id", agentID.String(), "expires_at", jt.ExpiresAt)
	writeJSON(w, http.StatusCreated, api.CreateJoinTokenResponse{Token: token, AgentID: agentID.String(), ExpiresAt: jt.ExpiresAt})
}

var dnsNameRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s *Server) handleCreateEntry(w http.ResponseWriter, r *http.Request) {
	var req api.Entry
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	e, err := s.entryFromAPI(req)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	siblings, err := s.store.ListEntries(r.Context(), e.ParentID)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	for _, o := range siblings {
		if o.SpiffeID == e.SpiffeID && selector.NewSet(o.Selectors...).Matches(e.Selectors) && len(o.Selectors) == len(e.Selectors) {
			writeProblem(w, http.StatusConflict, fmt.Sprintf("entry %s already gives %s to these selectors under %s", o.ID, e.SpiffeID, e.ParentID))
			return
		}
	}
	if err := s.store.CreateEntry(r.Context(), e); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeProblem(w, http.StatusConflict, "an entry with this id already exists")
			return
		}
		s.log.Error("create entry", "err", err)
		writeProblem(w, http.StatusInternalServerError, "cannot store the entry")
		return
	}
	s.notify(r.Context())
	s.event(r, "entry.create", "entry_id", e.ID, "spiffe_id", e.SpiffeID, "parent_id", e.ParentID, "selectors", req.Selectors)
	writeJSON(w, http.StatusCreated, entryToAPI(e))
}

func (s *Server) entryFromAPI(req api.Entry) (store.Entry, error) {
	id, err := identity.ParseWorkloadID(s.cfg.TrustDomain, req.SpiffeID)
	if err != nil {
		return store.Entry{}, fmt.Errorf("spiffe_id: %w", err)
	}
	parent, err := identity.ParseAgentID(s.cfg.TrustDomain, req.ParentID)
	if err != nil {
		return store.Entry{}, fmt.Errorf("parent_id: %w", err)
	}
	if len(req.Selectors) == 0 {
		return store.Entry{}, errors.New("selectors: at least one selector is required (an entry without selectors would match no workload)")
	}
	sels, err := selector.ParseAll(req.Selectors)
	if err != nil {
		return store.Entry{}, fmt.Errorf("selectors: %w", err)
	}
	if err := selector.CheckEntry(sels); err != nil {
		return store.Entry{}, fmt.Errorf("selectors: %w", err)
	}
	maxTTL := s.cfg.IntermediateTTL
	if maxTTL == 0 {
		maxTTL = identity.DefaultIntermediateTTL
	}
	for name, v := range map[string]int64{"x509_ttl_seconds": req.X509TTLSeconds, "jwt_ttl_seconds": req.JWTTTLSeconds} {
		if v < 0 || time.Duration(v)*time.Second > maxTTL {
			return store.Entry{}, fmt.Errorf("%s: must be between 1 and %d (0 for the default)", name, int64(maxTTL.Seconds()))
		}
	}
	for _, d := range req.DNSNames {
		if !dnsNameRE.MatchString(d) || len(d) > 253 {
			return store.Entry{}, fmt.Errorf("dns_names: %q is not a lower-case DNS name", d)
		}
	}
	idBytes := make([]byte, 16)
	if _, err := rand.Read(idBytes); err != nil {
		return store.Entry{}, err
	}
	return store.Entry{
		ID: hex.EncodeToString(idBytes), SpiffeID: id.String(), ParentID: parent.String(), Selectors: sels,
		X509TTL: time.Duration(req.X509TTLSeconds) * time.Second, JWTTTL: time.Duration(req.JWTTTLSeconds) * time.Second,
		DNSNames: req.DNSNames, CreatedAt: s.now(),
	}, nil
}

func entryToAPI(e store.Entry) api.Entry {
	sels := make([]string, len(e.Selectors))
	for i, s := range e.Selectors {
		sels[i] = s.String()
	}
	return api.Entry{
		ID: e.ID, SpiffeID: e.SpiffeID, ParentID: e.ParentID, Selectors: sels,
		X509TTLSeconds: int64(e.X509TTL / time.Second), JWTTTLSeconds: int64(e.JWTTTL / time.Second),
		DNSNames: e.DNSNames, CreatedAt: e.CreatedAt,
	}
}

func (s *Server) handleListEntries(w http.ResponseWriter, r *http.Request) {
	parent := r.URL.Query().Get("parent_id")
	entries, err := s.store.ListEntries(r.Context(), parent)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	out := make([]api.Entry, 0, len(entries))
	for _, e := range entries {
		out = append(out, entryToAPI(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetEntry(w http.ResponseWriter, r *http.Request) {
	e, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no entry with id "+r.PathValue("id"))
		return
	}
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read the entry")
		return
	}
	writeJSON(w, http.StatusOK, entryToAPI(e))
}

func (s *Server) handleDeleteEntry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e, err := s.store.GetEntry(r.Context(), id)
	if err == nil {
		err = s.store.DeleteEntry(r.Context(), id)
	}
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no entry with id "+id)
		return
	}
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot delete the entry")
		return
	}
	s.notify(r.Context())
	s.event(r, "entry.delete", "entry_id", id, "spiffe_id", e.SpiffeID)
	writeJSON(w, http.StatusOK, entryToAPI(e))
}

func agentToAPI(a store.Agent) api.Agent {
	return api.Agent{SpiffeID: a.SpiffeID, Serial: a.Serial, SVIDNotAfter: a.SVIDNotAfter, AttestedAt: a.AttestedAt,
		LastSeen: a.LastSeen, Evicted: a.Evicted, EvictedAt: a.EvictedAt}
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.store.ListAgents(r.Context())
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read agents")
		return
	}
	out := make([]api.Agent, 0, len(agents))
	for _, a := range agents {
		out = append(out, agentToAPI(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) agentByName(w http.ResponseWriter, r *http.Request) (store.Agent, bool) {
	id, err := identity.AgentID(s.cfg.TrustDomain, r.PathValue("name"))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return store.Agent{}, false
	}
	a, err := s.store.GetAgent(r.Context(), id.String())
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no agent "+id.String())
		return store.Agent{}, false
	}
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read the agent")
		return store.Agent{}, false
	}
	return a, true
}

func (s *Server) handleGetAgent(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.agentByName(w, r); ok {
		writeJSON(w, http.StatusOK, agentToAPI(a))
	}
}

// handleEvictAgent evicts an agent: it can no longer call the server or
// renew, and every unexpired SVID issued through it is revoked, because a
// host whose agent is evicted must be presumed compromised.
func (s *Server) handleEvictAgent(w http.ResponseWriter, r *http.Request) {
	a, ok := s.agentByName(w, r)
	if !ok {
		return
	}
	if a.Evicted {
		// Evicting again would move the recorded eviction time.
		writeProblem(w, http.StatusConflict, fmt.Sprintf("agent %s was already evicted at %s", r.PathValue("name"), a.EvictedAt.UTC().Format(time.RFC3339)))
		return
	}
	now := s.now()
	if err := s.store.EvictAgent(r.Context(), a.SpiffeID, now); err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot evict the agent")
		return
	}
	svids, err := s.store.ListSVIDs(r.Context(), store.SVIDFilter{AgentID: a.SpiffeID}, now)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "agent evicted, but its SVIDs could not be listed for revocation; retry")
		return
	}
	revoked, err := s.revoke(r, svids, "agent evicted")
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "agent evicted, but revoking its SVIDs failed; retry")
		return
	}
	a.Evicted, a.EvictedAt = true, now
	s.event(r, "agent.evict", "agent_id", a.SpiffeID, "revoked", len(revoked))
	writeJSON(w, http.StatusOK, api.EvictResponse{Agent: agentToAPI(a), Revoked: revoked})
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req api.RevokeRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if (req.Serial == "") == (req.SpiffeID == "") {
		writeProblem(w, http.StatusBadRequest, "give exactly one of serial and spiffe_id")
		return
	}
	now := s.now()
	svids, err := s.store.ListSVIDs(r.Context(), store.SVIDFilter{SpiffeID: req.SpiffeID}, now)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot list SVIDs")
		return
	}
	if req.Serial != "" {
		var match []store.IssuedSVID
		for _, sv := range svids {
			if sv.Serial == req.Serial {
				match = append(match, sv)
			}
		}
		svids = match
	}
	if len(svids) == 0 {
		writeProblem(w, http.StatusNotFound, "no unexpired SVID matches; nothing to revoke")
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = "revoked by admin"
	}
	revoked, err := s.revoke(r, svids, reason)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot store the revocation")
		return
	}
	writeJSON(w, http.StatusOK, api.RevokeResponse{Revoked: revoked})
}

func (s *Server) revoke(r *http.Request, svids []store.IssuedSVID, reason string) ([]string, error) {
	now := s.now()
	revs := make([]store.Revocation, 0, len(svids))
	serials := make([]string, 0, len(svids))
	for _, sv := range svids {
		revs = append(revs, store.Revocation{Serial: sv.Serial, SpiffeID: sv.SpiffeID, Reason: reason, RevokedAt: now, NotAfter: sv.NotAfter})
		serials = append(serials, sv.Serial)
	}
	if len(revs) > 0 {
		if err := s.store.AddRevocations(r.Context(), revs); err != nil {
			return nil, err
		}
		for _, rv := range revs {
			s.event(r, "svid.revoke", "serial", rv.Serial, "spiffe_id", rv.SpiffeID, "reason", reason)
		}
	}
	s.notify(r.Context())
	return serials, nil
}

func (s *Server) handleCAStatus(w http.ResponseWriter, r *http.Request) {
	out := api.CAStatus{TrustDomain: s.cfg.TrustDomain.Name()}
	for _, k := range s.ca.Status() {
		out.Keys = append(out.Keys, api.CAKey{Kind: string(k.Kind), ID: k.ID, State: string(k.State), Subject: k.Subject,
			NotBefore: k.NotBefore, NotAfter: k.NotAfter, Upstream: k.Upstream})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCARotate(w http.ResponseWriter, r *http.Request) {
	var req api.RotateRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	var err error
	switch req.Target {
	case api.RotateIntermediate:
		err = s.ca.RotateIntermediate(r.Context())
	case api.RotateRootPrepare:
		err = s.ca.PrepareRoot(r.Context())
	case api.RotateRootActivate:
		err = s.ca.ActivateRoot(r.Context())
	default:
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("target: %q; want %s, %s or %s", req.Target, api.RotateIntermediate, api.RotateRootPrepare, api.RotateRootActivate))
		return
	}
	if err != nil {
		writeProblem(w, http.StatusConflict, err.Error())
		return
	}
	s.notify(r.Context())
	s.event(r, "ca.rotate", "target", req.Target)
	s.handleCAStatus(w, r)
}
