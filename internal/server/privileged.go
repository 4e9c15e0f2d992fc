package server

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/registration"
	"github.com/rampartsec/rampart/internal/store"
)

// holdsAdmin says whether c holds the admin role itself (the break-glass
// token does).
func holdsAdmin(c operator.Caller) bool {
	return slices.ContainsFunc(c.Roles, func(r store.OperatorRole) bool { return r.Role == string(permission.Admin) })
}

// entryWrite is one entry a write touches: what it becomes (nil for a
// delete) and the ID of the stored entry it replaces or deletes ("" for a
// create).
type entryWrite struct {
	spec *registration.EntrySpec
	id   string
}

// mayWritePrivileged refuses (403, audited) an entry write by a caller
// without the admin role that touches what an admin or downstream entry
// grants: an entry it creates or updates with admin or downstream set, an
// entry that is one now (updated or deleted), or an entry for a SPIFFE ID
// that such an entry holds. Admin and downstream are granted by SPIFFE
// ID, so a second, ordinary entry for an admin entry's ID, with
// selectors that match the writer's own workload, would hand that
// workload the admin role (red team): entry.write alone may not do that.
// Writes are named by index, as batches are ("entries[2]").
func (s *Server) mayWritePrivileged(w http.ResponseWriter, r *http.Request, writes []entryWrite) bool {
	c, ok := callerFrom(r)
	if ok && holdsAdmin(c) {
		return true
	}
	needs := func(i int, why string) bool {
		at := ""
		if len(writes) > 1 {
			at = fmt.Sprintf("entries[%d]: ", i)
		}
		s.refused(r, "entry.privileged", why, "method", r.Method, "path", r.URL.Path, "index", i, "roles", rolesOf(c))
		api.WriteProblem(w, http.StatusForbidden, at+why+": only a caller holding the admin role may do that (your roles: "+rolesOf(c)+")")
		return false
	}
	for i, wr := range writes {
		if wr.spec != nil && (wr.spec.Admin || wr.spec.Downstream) {
			return needs(i, "admin and downstream entries grant the admin API and a CA of the trust domain")
		}
	}
	// One read of every entry for the lot: cheaper than one per write in
	// a batch of thousands, and only callers without admin get here.
	all, err := s.store.FindEntries(r.Context(), store.EntryFilter{})
	if err != nil {
		s.internalError(w, err)
		return false
	}
	privID := map[string]bool{}    // SPIFFE IDs an admin or downstream entry holds
	privEntry := map[string]bool{} // such entries by ID
	for _, e := range all {
		if e.Admin || e.Downstream {
			privID[e.SpiffeID], privEntry[e.ID] = true, true
		}
	}
	for i, wr := range writes {
		if wr.id != "" && privEntry[wr.id] {
			return needs(i, "entry "+wr.id+" is an admin or downstream entry")
		}
		if wr.spec != nil && privID[wr.spec.SpiffeID] {
			return needs(i, "an admin or downstream entry holds "+wr.spec.SpiffeID+", and what it grants goes with the SPIFFE ID")
		}
	}
	return true
}
