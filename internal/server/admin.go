package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/registration"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
)

func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(identity.EncodePEM(s.ca.X509Bundle()))
}

func (s *Server) handleJWTBundle(w http.ResponseWriter, r *http.Request) {
	b, err := s.ca.JWTBundle()
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot encode the JWT bundle")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Write(b)
}

func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.CreateJoinTokenRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	token, jt, err := s.registrar.NewJoinToken(r.Context(), req.AgentName, req.TTLSeconds)
	if err != nil {
		s.registrationError(w, err)
		return
	}
	s.event(r, "join_token.create", "agent_id", jt.AgentID, "expires_at", jt.ExpiresAt)
	api.WriteJSON(w, http.StatusCreated, api.CreateJoinTokenResponse{Token: token, AgentID: jt.AgentID, ExpiresAt: jt.ExpiresAt})
}

func (s *Server) handleCreateEntry(w http.ResponseWriter, r *http.Request) {
	var req api.Entry
	if !api.ReadJSON(w, r, &req) {
		return
	}
	spec := specFromAPI(req)
	if !s.mayWritePrivileged(w, r, []entryWrite{{spec: &spec}}) {
		return
	}
	e, err := s.registrar.NewEntry(r.Context(), spec)
	if err != nil {
		s.registrationError(w, err)
		return
	}
	s.notify(r.Context())
	s.entryEvents(r, "entry.create", []store.Entry{e})
	api.WriteJSON(w, http.StatusCreated, entryToAPI(e))
}

// registrationError answers an error of package registration.
func (s *Server) registrationError(w http.ResponseWriter, err error) {
	var partial *registration.PartialError
	switch {
	case errors.Is(err, registration.ErrInvalid):
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, registration.ErrConflict):
		api.WriteProblem(w, http.StatusConflict, err.Error())
	case errors.Is(err, registration.ErrNotEntitled):
		api.WriteProblem(w, http.StatusForbidden, err.Error())
	case errors.Is(err, registration.ErrCA):
		api.WriteProblem(w, http.StatusServiceUnavailable, "the CA cannot sign now")
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, err.Error())
	case errors.As(err, &partial):
		s.log.Error(partial.Message, "err", partial.Err)
		api.WriteProblem(w, http.StatusInternalServerError, partial.Message)
	default:
		s.internalError(w, err)
	}
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
		Admin: e.Admin, Downstream: e.Downstream, Hint: e.Hint, ExpiresAt: e.ExpiresAt, FederatesWith: e.FederatesWith,
	}
}

func specFromAPI(e api.Entry) registration.EntrySpec {
	return registration.EntrySpec{SpiffeID: e.SpiffeID, ParentID: e.ParentID, Selectors: e.Selectors,
		X509TTLSeconds: e.X509TTLSeconds, JWTTTLSeconds: e.JWTTTLSeconds, DNSNames: e.DNSNames,
		Admin: e.Admin, Downstream: e.Downstream, Hint: e.Hint, ExpiresAt: e.ExpiresAt, FederatesWith: e.FederatesWith}
}

func (s *Server) handleListEntries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.EntryFilter{ParentID: q.Get("parent_id"), SpiffeID: q.Get("spiffe_id"), Hint: q.Get("hint")}
	if v := q.Get("federates_with"); v != "" {
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "federates_with: "+err.Error())
			return
		}
		f.FederatesWith = td.Name()
	}
	for _, v := range q["selector"] {
		sel, err := selector.Parse(v)
		if err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "selector: "+err.Error())
			return
		}
		f.Selectors = append(f.Selectors, sel)
	}
	entries, err := s.store.FindEntries(r.Context(), f)
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(entries, entryToAPI))
}

func (s *Server) handleGetEntry(w http.ResponseWriter, r *http.Request) {
	e, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if !s.found(w, err, "no entry with id "+r.PathValue("id")) {
		return
	}
	api.WriteJSON(w, http.StatusOK, entryToAPI(e))
}

func (s *Server) handleDeleteEntry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.mayWritePrivileged(w, r, []entryWrite{{id: id}}) {
		return
	}
	e, err := s.store.GetEntry(r.Context(), id)
	if err == nil {
		err = s.store.DeleteEntry(r.Context(), id)
	}
	if !s.found(w, err, "no entry with id "+id) {
		return
	}
	s.notify(r.Context())
	s.event(r, "entry.delete", "entry_id", id, "spiffe_id", e.SpiffeID)
	api.WriteJSON(w, http.StatusOK, entryToAPI(e))
}

// handleUpdateEntry replaces every field of an entry but its ID.
func (s *Server) handleUpdateEntry(w http.ResponseWriter, r *http.Request) {
	var req api.Entry
	if !api.ReadJSON(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	if req.ID != "" && req.ID != id {
		api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("id: the body names entry %q, the path %q", req.ID, id))
		return
	}
	spec := specFromAPI(req)
	if !s.mayWritePrivileged(w, r, []entryWrite{{spec: &spec, id: id}}) {
		return
	}
	es, err := s.registrar.UpdateEntries(r.Context(), s.store, []registration.EntryUpdate{{ID: id, Spec: spec}})
	if err != nil {
		var be *registration.BatchError
		if errors.As(err, &be) {
			err = be.Err // one entry: no index to name
		}
		s.registrationError(w, err)
		return
	}
	s.notify(r.Context())
	s.entryEvents(r, "entry.update", es)
	api.WriteJSON(w, http.StatusOK, entryToAPI(es[0]))
}

// maxBatchBody bounds a batch request: 10,000 entries with long
// selectors and DNS names.
const maxBatchBody = 16 << 20

// handleEntryBatch creates, updates or deletes many entries, all or none;
// a refusal names the entry by index and the field.
func (s *Server) handleEntryBatch(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.EntryBatch
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBatchBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("invalid batch (a JSON object with \"entries\" or \"ids\", at most %d bytes): %v", maxBatchBody, err))
			return
		}
		var es []store.Entry
		var err error
		switch op {
		case "create":
			if len(req.IDs) > 0 {
				api.WriteProblem(w, http.StatusBadRequest, "ids: not taken by a create batch")
				return
			}
			specs := make([]registration.EntrySpec, len(req.Entries))
			for i, e := range req.Entries {
				if e.ID != "" {
					api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("entries[%d]: id: the server chooses entry IDs", i))
					return
				}
				specs[i] = specFromAPI(e)
			}
			writes := make([]entryWrite, len(specs))
			for i := range specs {
				writes[i] = entryWrite{spec: &specs[i]}
			}
			if !s.mayWritePrivileged(w, r, writes) {
				return
			}
			es, err = s.registrar.NewEntries(r.Context(), s.store, specs)
		case "update":
			if len(req.IDs) > 0 {
				api.WriteProblem(w, http.StatusBadRequest, "ids: not taken by an update batch; give each entry its id")
				return
			}
			ups := make([]registration.EntryUpdate, len(req.Entries))
			for i, e := range req.Entries {
				if e.ID == "" {
					api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("entries[%d]: id: required to update an entry", i))
					return
				}
				ups[i] = registration.EntryUpdate{ID: e.ID, Spec: specFromAPI(e)}
			}
			writes := make([]entryWrite, len(ups))
			for i := range ups {
				writes[i] = entryWrite{spec: &ups[i].Spec, id: ups[i].ID}
			}
			if !s.mayWritePrivileged(w, r, writes) {
				return
			}
			es, err = s.registrar.UpdateEntries(r.Context(), s.store, ups)
		case "delete":
			if len(req.Entries) > 0 {
				api.WriteProblem(w, http.StatusBadRequest, "entries: not taken by a delete batch; give \"ids\"")
				return
			}
			writes := make([]entryWrite, len(req.IDs))
			for i, id := range req.IDs {
				writes[i] = entryWrite{id: id}
			}
			if !s.mayWritePrivileged(w, r, writes) {
				return
			}
			es, err = s.registrar.DeleteEntries(r.Context(), s.store, req.IDs)
		}
		if err != nil {
			s.registrationError(w, err)
			return
		}
		s.notify(r.Context())
		s.entryEvents(r, "entry."+op, es)
		api.WriteJSON(w, http.StatusOK, api.EntryBatchResponse{Entries: api.MapAll(es, entryToAPI)})
	}
}

// entryEvents audits each entry of a change: the log says what each
// entry became, batch or not. One append for the batch: one durable write,
// not one per entry.
func (s *Server) entryEvents(r *http.Request, event string, es []store.Entry) {
	out := make([]*audit.Entry, len(es))
	for i, e := range es {
		sels := make([]string, len(e.Selectors))
		for j, sel := range e.Selectors {
			sels[j] = sel.String()
		}
		kv := []any{"entry_id", e.ID, "spiffe_id", e.SpiffeID, "parent_id", e.ParentID, "selectors", sels}
		if e.Admin {
			kv = append(kv, "admin", true)
		}
		if e.Downstream {
			kv = append(kv, "downstream", true)
		}
		if len(e.FederatesWith) > 0 {
			// Who trusts another trust domain's CA is a security fact.
			kv = append(kv, "federates_with", e.FederatesWith)
		}
		out[i] = s.entry(r, event, audit.OutcomeSuccess, "", kv...)
	}
	s.record(r.Context(), out...)
}

func agentToAPI(a store.Agent) api.Agent {
	return api.Agent{SpiffeID: a.SpiffeID, Serial: a.Serial, SVIDNotAfter: a.SVIDNotAfter, AttestedAt: a.AttestedAt,
		LastSeen: a.LastSeen, Evicted: a.Evicted, EvictedAt: a.EvictedAt}
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.store.ListAgents(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read agents")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(agents, agentToAPI))
}

func (s *Server) agentByName(w http.ResponseWriter, r *http.Request) (store.Agent, bool) {
	id, err := identity.AgentID(s.cfg.TrustDomain, r.PathValue("name"))
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return store.Agent{}, false
	}
	a, err := s.store.GetAgent(r.Context(), id.String())
	return a, s.found(w, err, "no agent "+id.String())
}

func (s *Server) handleGetAgent(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.agentByName(w, r); ok {
		api.WriteJSON(w, http.StatusOK, agentToAPI(a))
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
	revs, err := s.registrar.Evict(r.Context(), s.store, a)
	if err != nil {
		s.registrationError(w, err)
		return
	}
	revoked := s.revoked(r, revs)
	a.Evicted, a.EvictedAt = true, s.now()
	s.event(r, "agent.evict", "agent_id", a.SpiffeID, "revoked", len(revoked))
	api.WriteJSON(w, http.StatusOK, api.EvictResponse{Agent: agentToAPI(a), Revoked: revoked})
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req api.RevokeRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	revs, err := s.registrar.Revoke(r.Context(), s.store, req.Serial, req.SpiffeID, req.Reason)
	if err != nil {
		s.registrationError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.RevokeResponse{Revoked: s.revoked(r, revs)})
}

// revoked records revocations made and wakes the agents and workloads
// that must learn of them; it returns their serials.
func (s *Server) revoked(r *http.Request, revs []store.Revocation) []string {
	serials := make([]string, 0, len(revs))
	for _, rv := range revs {
		s.event(r, "svid.revoke", "serial", rv.Serial, "spiffe_id", rv.SpiffeID, "reason", rv.Reason)
		serials = append(serials, rv.Serial)
	}
	s.notify(r.Context())
	return serials
}

func (s *Server) handleCAStatus(w http.ResponseWriter, r *http.Request) {
	out := api.CAStatus{TrustDomain: s.cfg.TrustDomain.Name()}
	for _, k := range s.ca.Status() {
		out.Keys = append(out.Keys, api.CAKey{Kind: string(k.Kind), ID: k.ID, State: string(k.State), Subject: k.Subject,
			NotBefore: k.NotBefore, NotAfter: k.NotAfter, Upstream: k.Upstream})
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleCARotate(w http.ResponseWriter, r *http.Request) {
	var req api.RotateRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if err := s.ca.Rotate(r.Context(), req.Target); errors.Is(err, identity.ErrRotateTarget) {
		api.WriteProblem(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), identity.ErrRotateTarget.Error()+": "))
		return
	} else if err != nil {
		api.WriteProblem(w, http.StatusConflict, err.Error())
		return
	}
	s.notify(r.Context())
	s.event(r, "ca.rotate", "target", req.Target)
	s.handleCAStatus(w, r)
}
