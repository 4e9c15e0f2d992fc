package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/store"
)

func policyToAPI(p store.Policy, withSource bool) api.Policy {
	out := api.Policy{Service: p.Service, Seq: p.Seq, Version: p.Version, Deleted: p.Deleted, CreatedAt: p.CreatedAt}
	if withSource {
		out.Source = string(p.Source)
	}
	return out
}

// handlePutPolicy stores a new version of a policy. The body is the YAML
// document; it is parsed and compiled first, so nothing invalid is stored
// and the error names the line and field.
func (s *Server) handlePutPolicy(w http.ResponseWriter, r *http.Request) {
	src, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, api.MaxBody))
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "policy body larger than 1 MiB or unreadable")
		return
	}
	service, version, err := policy.Check(src)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if id, _ := spiffeid.FromString(service); id.TrustDomain() != s.cfg.TrustDomain {
		api.WriteProblem(w, http.StatusBadRequest, "service: "+service+" is not in this server's trust domain "+s.cfg.TrustDomain.Name())
		return
	}
	// A policy-author may be limited to some services.
	if !s.mayService(w, r, permission.PolicyWrite, service) {
		return
	}
	if cur, err := s.store.GetPolicy(r.Context(), service); err == nil && cur.Version == version {
		api.WriteJSON(w, http.StatusOK, policyToAPI(cur, false)) // unchanged: no new version
		return
	}
	p, err := s.store.PutPolicy(r.Context(), store.Policy{Service: service, Version: version, Source: src, CreatedAt: s.now()})
	if err != nil {
		s.log.Error("put policy", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the policy")
		return
	}
	s.notify(r.Context())
	s.event(r, "policy.put", "service", service, "seq", p.Seq, "version", version)
	api.WriteJSON(w, http.StatusCreated, policyToAPI(p, false))
}

func serviceParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.URL.Query().Get("service")
	id, err := spiffeid.FromString(v)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "service: want the SPIFFE ID of the protected service: "+err.Error())
		return "", false
	}
	return id.String(), true
}

func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	svc, ok := serviceParam(w, r)
	if !ok {
		return
	}
	p, err := s.store.GetPolicy(r.Context(), svc)
	if !s.found(w, err, "no policy for "+svc+" (calls to it are denied by default)") {
		return
	}
	api.WriteJSON(w, http.StatusOK, policyToAPI(p, true))
}

func (s *Server) handleListPolicies(w http.ResponseWriter, r *http.Request) {
	ps, err := s.store.ListPolicies(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read policies")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(ps, func(p store.Policy) api.Policy { return policyToAPI(p, false) }))
}

func (s *Server) handlePolicyHistory(w http.ResponseWriter, r *http.Request) {
	svc, ok := serviceParam(w, r)
	if !ok {
		return
	}
	ps, err := s.store.PolicyHistory(r.Context(), svc)
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the policy history")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(ps, func(p store.Policy) api.Policy { return policyToAPI(p, true) }))
}

func (s *Server) handleDeletePolicy(w http.ResponseWriter, r *http.Request) {
	svc, ok := serviceParam(w, r)
	if !ok || !s.mayService(w, r, permission.PolicyWrite, svc) {
		return
	}
	err := s.store.DeletePolicy(r.Context(), svc, s.now())
	if !s.found(w, err, "no policy for "+svc) {
		return
	}
	s.notify(r.Context())
	s.event(r, "policy.delete", "service", svc)
	w.WriteHeader(http.StatusNoContent)
}

// handleWorkloadSync returns the policy protecting the calling workload and
// the revocation list, long-polling like the agent sync.
func (s *Server) handleWorkloadSync(w http.ResponseWriter, r *http.Request) {
	caller := agentFrom(r)
	if ok := s.longPoll(w, r); !ok {
		return
	}
	rev, _ := s.feed.wait()
	out := api.WorkloadSyncResponse{Revision: rev, Service: caller.String(), Revoked: []string{}, Bundle: s.bundleDER()}
	p, err := s.store.GetPolicy(r.Context(), caller.String())
	switch {
	case err == nil:
		ap := policyToAPI(p, true)
		out.Policy = &ap
	case !errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the policy")
		return
	}
	revs, err := s.store.ListRevocations(r.Context(), s.now())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read revocations")
		return
	}
	for _, rv := range revs {
		out.Revoked = append(out.Revoked, rv.Serial)
	}
	if s.oauth != nil {
		out.TokenIssuer = s.oauth.Issuer()
		if out.TokenKeys, err = json.Marshal(s.oauth.JWKS()); err != nil {
			s.internalError(w, err)
			return
		}
		trs, err := s.store.ListOAuthRevocations(r.Context(), s.now())
		if err != nil {
			s.internalError(w, err)
			return
		}
		for _, tr := range trs {
			out.RevokedTokens = append(out.RevokedTokens, tr.ID)
		}
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// longPoll implements ?revision=N&wait=S: it returns once the revision
// differs from N, after S seconds (at most 30), or false if the client left
// or the parameters are bad (the answer is then written).
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	v := q.Get("revision")
	if v == "" {
		return true
	}
	known, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "revision: want an integer")
		return false
	}
	wait := maxSyncWait
	if v := q.Get("wait"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 0 {
			api.WriteProblem(w, http.StatusBadRequest, "wait: want a non-negative number of seconds")
			return false
		}
		wait = time.Duration(min(secs, int(maxSyncWait/time.Second))) * time.Second // bounded before it could wrap
	}
	rev, ch := s.feed.wait()
	if rev != known {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-r.Context().Done():
		return false
	}
	return true
}
