// Package netpolapi serves the network view (package netpol) from the
// server's store: agents' placement reports, each agent's host table, and
// the view for operators. It is the server's side: agents import package
// netpol only, never the store.
package netpolapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/netpol"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits of a report.
const (
	MaxReportBody     = 1 << 20
	maxReportServices = 4096
	maxReportPorts    = 64
)

// DefaultTTL is how long a placement counts without a new report: agents
// report every few seconds, so a host whose agent stopped drops out (its
// callees close to it) within a minute.
const DefaultTTL = time.Minute

// API serves the network view. The server's route table puts each
// handler behind its check: an agent SVID for the agent's report and its
// host's table, netpol.read for the view. Without a placement table in
// the store (Placements nil) each answers 501.
type API struct {
	Placements store.NetpolStore
	Policies   interface {
		ListPolicies(ctx context.Context) ([]store.Policy, error)
		Revision(ctx context.Context) (int64, error)
	}
	Entries interface {
		ListEntries(ctx context.Context, parentID string) ([]store.Entry, error)
	}
	// Caller is the agent the request's SVID proved.
	Caller  func(*http.Request) spiffeid.ID
	Refused func(r *http.Request, action, reason string, kv ...any)
	Now     func() time.Time
	TTL     time.Duration
	Log     *slog.Logger

	build1   sync.Mutex // one build at a time: the others wait for its view
	mu       sync.Mutex
	cached   *netpol.View
	cachedAt time.Time
	cachedRv int64
}

// viewCacheFor is how long a built view serves agents' table requests
// while the store's revision stays put: placements move only that often
// (a policy change moves the revision and rebuilds at once).
const viewCacheFor = time.Second

func (a *API) ready(w http.ResponseWriter) bool {
	if a == nil || a.Placements == nil {
		api.WriteProblem(w, http.StatusNotImplemented, "this store has no placement table")
		return false
	}
	return true
}

// remoteHost is the address the request came from: the host an agent runs
// on, as its peers see it (an agent cannot claim another host's address).
func remoteHost(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("remote address %q: %w", r.RemoteAddr, err)
	}
	return ap.Addr().Unmap().WithZone(""), nil
}

// HandleAgentReport records an agent's placements. Each service must be
// one of the agent's own entries: an agent speaks only for its host.
func (a *API) HandleAgentReport(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	agentID := a.Caller(r)
	var rep netpol.Report
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxReportBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "invalid placement report: "+err.Error())
		return
	}
	if len(rep.Services) > maxReportServices {
		api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("invalid placement report: %d services, at most %d", len(rep.Services), maxReportServices))
		return
	}
	host, err := remoteHost(r)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	entries, err := a.Entries.ListEntries(r.Context(), agentID.String())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	now := a.Now()
	var ps []store.Placement
	seen := map[string]bool{}
	for i, s := range rep.Services {
		if !slices.ContainsFunc(entries, func(e store.Entry) bool { return e.SpiffeID == s.SpiffeID }) {
			a.Refused(r, "netpol.report", "a placement names a service this agent does not serve", "service", s.SpiffeID)
			api.WriteProblem(w, http.StatusForbidden, fmt.Sprintf("services[%d] %q: this agent serves no entry with that SPIFFE ID", i, s.SpiffeID))
			return
		}
		if seen[s.SpiffeID] {
			api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("services[%d] %q: listed twice", i, s.SpiffeID))
			return
		}
		seen[s.SpiffeID] = true
		if len(s.Ports) > maxReportPorts || slices.Contains(s.Ports, 0) {
			// This service only: the rest of the host stays placed (a
			// refused report would empty the host's table).
			a.Refused(r, "netpol.report", fmt.Sprintf("a placement with more than %d ports, or port 0", maxReportPorts), "service", s.SpiffeID)
			continue
		}
		ports := slices.Clone(s.Ports)
		slices.Sort(ports)
		ps = append(ps, store.Placement{Host: host.String(), Service: s.SpiffeID, Ports: slices.Compact(ports), ReportedAt: now})
	}
	if err := a.Placements.ReplacePlacements(r.Context(), agentID.String(), ps); err != nil {
		a.Log.Error("placement report", "agent_id", agentID.String(), "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot record the placements")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// View returns the current view: built anew when the store's revision
// moved or the last one is older than viewCacheFor. Views are read-only,
// so one serves concurrent requests.
func (a *API) View(ctx context.Context) (*netpol.View, error) {
	rv, err := a.Policies.Revision(ctx)
	if err != nil {
		return nil, err
	}
	now := a.Now()
	a.mu.Lock()
	if a.cached != nil && rv == a.cachedRv && now.Sub(a.cachedAt) < viewCacheFor && !now.Before(a.cachedAt) {
		v := a.cached
		a.mu.Unlock()
		return v, nil
	}
	a.mu.Unlock()
	a.build1.Lock()
	defer a.build1.Unlock()
	a.mu.Lock()
	if a.cached != nil && rv == a.cachedRv && !a.cachedAt.Before(now) {
		v := a.cached // built while this request waited
		a.mu.Unlock()
		return v, nil
	}
	a.mu.Unlock()
	v, err := a.build(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.cached, a.cachedAt, a.cachedRv = v, now, rv
	a.mu.Unlock()
	return v, nil
}

func (a *API) build(ctx context.Context) (*netpol.View, error) {
	ttl := a.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	sps, err := a.Placements.ListPlacements(ctx, a.Now().Add(-ttl))
	if err != nil {
		return nil, err
	}
	var ps []netpol.Placement
	for _, p := range sps {
		id, err1 := spiffeid.FromString(p.Service)
		h, err2 := netip.ParseAddr(p.Host)
		if err1 != nil || err2 != nil {
			continue // written by us; not expected
		}
		ps = append(ps, netpol.Placement{Service: id, Host: h, Ports: p.Ports})
	}
	stored, err := a.Policies.ListPolicies(ctx)
	if err != nil {
		return nil, err
	}
	var pols []*policy.Policy
	var bad []string
	for _, sp := range stored {
		if sp.Deleted {
			continue
		}
		p, err := policy.Parse(sp.Source)
		if err != nil {
			bad = append(bad, fmt.Sprintf("policy %s@%s does not parse: %v", sp.Service, sp.Version, err))
			continue
		}
		pols = append(pols, p)
	}
	v := netpol.Build(ps, pols)
	v.Problems = append(v.Problems, bad...)
	return v, nil
}

// HandleView answers the view (GET /v1/netpol/view), which the CLI
// renders.
func (a *API) HandleView(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	v, err := a.View(r.Context())
	if err != nil {
		a.Log.Error("netpol view", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot build the network view")
		return
	}
	api.WriteJSON(w, http.StatusOK, v)
}

// HandleAgentTable answers the table of the calling agent's host (GET
// /v1/agent/netpol).
func (a *API) HandleAgentTable(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	host, err := remoteHost(r)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := a.View(r.Context())
	if err != nil {
		a.Log.Error("netpol view", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot build the network view")
		return
	}
	api.WriteJSON(w, http.StatusOK, v.HostTable(host))
}
