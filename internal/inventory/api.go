package inventory

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits on supply-chain requests.
const (
	MaxDBBody     = 1 << 30  // an OSV zip (osv.dev's largest ecosystems are hundreds of MB)
	MaxReportBody = 64 << 20 // an agent's batch: symbol lists of new binaries
)

// EntryStore reads registration entries; store.Store implements it.
type EntryStore interface {
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context, parentID string) ([]store.Entry, error)
}

// API serves the supply chain over HTTP: the vulnerability database,
// exceptions, gates and the inventory to operators, and the agents'
// reports. The server's route table puts each behind its check
// (scan.read, scan.write, scan.except, inventory.read; an agent SVID for
// reports). Without scan tables in the store (Inventory nil) each
// answers 501.
type API struct {
	Inventory *Inventory
	Entries   EntryStore
	// Caller is the agent the request's SVID proved.
	Caller func(*http.Request) spiffeid.ID
	// Record appends audit entries (scan.vulnerable, named as Actor, the
	// server); Event and Refused record an admin action or a refusal,
	// naming the caller the request proved.
	Record  func(ctx context.Context, es ...*audit.Entry)
	Event   func(r *http.Request, action string, kv ...any)
	Refused func(r *http.Request, action, reason string, kv ...any)
	Actor   audit.Actor
	// Operator names the admin caller of r (who made an exception);
	// nil: "admin".
	Operator func(r *http.Request) audit.Actor
	Now      func() time.Time
	Log      *slog.Logger
}

func (a *API) ready(w http.ResponseWriter) bool {
	if a == nil || a.Inventory == nil {
		api.WriteProblem(w, http.StatusNotImplemented, "this store has no vulnerability database or inventory")
		return false
	}
	return true
}

// HandleImportDB replaces the server's vulnerability database with the
// OSV records of a zip, read and checked here (nothing the client sent is
// trusted), then re-matches the running workloads.
func (a *API) HandleImportDB(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxDBBody))
	if err != nil {
		api.WriteProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("an OSV zip of at most %d bytes: %v", MaxDBBody, err))
		return
	}
	entries, err := osv.ReadZip(bytes.NewReader(body), int64(len(body)), "request body")
	if err != nil {
		a.Refused(r, "scan.db_import", err.Error())
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	source := r.URL.Query().Get("source")
	if source == "" {
		source = "upload"
	}
	info, err := a.Inventory.Import(r.Context(), source, entries)
	if err != nil {
		a.Log.Error("import the vulnerability database", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the vulnerability database")
		return
	}
	a.Event(r, "scan.db_import", "source", source, "records", info.Records, "digest", info.Digest, "generation", info.Generation)
	alerts, err := a.Inventory.Rematch(r.Context())
	if err != nil {
		a.Log.Error("re-match the inventory", "err", err)
	}
	a.recordVulnerable(r, alerts)
	api.WriteJSON(w, http.StatusOK, info)
}

// recordVulnerable audits each called finding on a running workload; the
// default detection rule vulnerable-workload-running alerts on them.
func (a *API) recordVulnerable(r *http.Request, alerts []Alert) {
	var es []*audit.Entry
	for _, al := range alerts {
		f := al.Finding
		e := &audit.Entry{V: audit.SchemaVersion, Time: a.Now(), Action: "scan.vulnerable", Outcome: audit.OutcomeFailure,
			Reason: fmt.Sprintf("%s calls vulnerable code: %s in %s@%s", al.Service, f.ID, f.Package, f.Version),
			Source: "server", Target: al.Service, Actor: a.Actor,
			Details: map[string]string{"vuln": f.ID, "aliases": strings.Join(f.Aliases, ","), "sha256": al.SHA256, "host": al.Host, "exe": al.Exe,
				"package": f.Package, "version": f.Version, "fixed": strings.Join(f.Fixed, ","), "severity": al.Severity.String(),
				"rated": fmt.Sprint(f.Severity != "UNKNOWN"), "reachability": f.Reachability, "symbols": strings.Join(f.Symbols, ",")}}
		es = append(es, e)
	}
	if len(es) > 0 {
		a.Record(r.Context(), es...)
	}
}

// HandleGetDB serves GET /v1/scan/db.
func (a *API) HandleGetDB(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	info, err := a.Inventory.DBInfo(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the vulnerability database")
		return
	}
	api.WriteJSON(w, http.StatusOK, info)
}

// HandleCreateException serves POST /v1/scan/exceptions.
func (a *API) HandleCreateException(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	var req api.ScanException
	if err := api.Decode(r, &req); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	now := a.Now().UTC()
	switch {
	case req.Vuln == "":
		api.WriteProblem(w, http.StatusBadRequest, "vuln: the OSV id or alias to except is required")
		return
	case strings.TrimSpace(req.Reason) == "":
		api.WriteProblem(w, http.StatusBadRequest, "reason: why the exception is needed is required")
		return
	case !req.Expires.After(now):
		api.WriteProblem(w, http.StatusBadRequest, "expires: must be in the future")
		return
	case req.Expires.After(now.AddDate(1, 0, 0)):
		api.WriteProblem(w, http.StatusBadRequest, "expires: at most one year ahead; renew it when it ends")
		return
	case req.Binary != "" && (len(req.Binary) != 64 || !isHex(req.Binary)):
		api.WriteProblem(w, http.StatusBadRequest, "binary: want the executable's SHA-256, 64 hex digits")
		return
	case req.Service != "" && !strings.HasPrefix(req.Service, "spiffe://"):
		api.WriteProblem(w, http.StatusBadRequest, "service: want a SPIFFE ID")
		return
	}
	var id [8]byte
	rand.Read(id[:])
	e := store.ScanException{ID: hex.EncodeToString(id[:]), Vuln: req.Vuln, Binary: strings.ToLower(req.Binary), Service: req.Service,
		Reason: req.Reason, Expires: req.Expires.UTC(), CreatedAt: now, CreatedBy: a.operator(r)}
	if err := a.Inventory.Store.CreateScanException(r.Context(), e); err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the exception")
		return
	}
	a.Event(r, "scan.exception_add", "id", e.ID, "vuln", e.Vuln, "binary", e.Binary, "service", e.Service, "reason", e.Reason, "expires", e.Expires)
	api.WriteJSON(w, http.StatusCreated, ExceptionToAPI(e))
}

// operator names the caller of r for the records it makes.
func (a *API) operator(r *http.Request) string {
	if a.Operator == nil {
		return "admin"
	}
	if o := a.Operator(r); o.User != "" {
		return o.User
	} else if o.SpiffeID != "" {
		return o.SpiffeID
	}
	return "admin"
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// HandleListExceptions serves GET /v1/scan/exceptions.
func (a *API) HandleListExceptions(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	es, err := a.Inventory.Store.ListScanExceptions(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read exceptions")
		return
	}
	out := []api.ScanException{}
	for _, e := range es {
		out = append(out, ExceptionToAPI(e))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// HandleDeleteException serves DELETE /v1/scan/exceptions/{id}.
func (a *API) HandleDeleteException(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	id := r.PathValue("id")
	if err := a.Inventory.Store.DeleteScanException(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, http.StatusNotFound, "no exception "+id)
		return
	} else if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot delete the exception")
		return
	}
	a.Event(r, "scan.exception_remove", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

// HandlePutGate serves PUT /v1/scan/gates.
func (a *API) HandlePutGate(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	var g api.ScanGate
	if err := api.Decode(r, &g); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	for field, v := range map[string]*string{"severity": &g.Severity, "unknown": &g.Unknown} {
		if *v == "" {
			continue
		}
		l, err := osv.ParseLevel(*v)
		if err != nil || l < osv.Low {
			api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("%s %q: want LOW, MEDIUM, HIGH or CRITICAL", field, *v))
			return
		}
		*v = l.String()
	}
	if g.Severity == "" && g.Entry == "" && (g.DryRun || g.Unknown != "") {
		api.WriteProblem(w, http.StatusBadRequest, "severity: required (empty removes the gate)")
		return
	}
	if g.Entry != "" {
		if _, err := a.Entries.GetEntry(r.Context(), g.Entry); err != nil {
			api.WriteProblem(w, http.StatusNotFound, "entry: no registration entry "+g.Entry)
			return
		}
	}
	if err := a.Inventory.Store.PutScanGate(r.Context(), store.ScanGate{Entry: g.Entry, Severity: g.Severity, DryRun: g.DryRun, Unknown: g.Unknown}); err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the gate")
		return
	}
	a.Event(r, "scan.gate_set", "entry", g.Entry, "severity", g.Severity, "dry_run", g.DryRun, "unknown", g.Unknown)
	api.WriteJSON(w, http.StatusOK, g)
}

// HandleListGates serves GET /v1/scan/gates.
func (a *API) HandleListGates(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	p, err := a.Inventory.Policy(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read gates")
		return
	}
	api.WriteJSON(w, http.StatusOK, p.Gates)
}

// HandleList lists what runs: ?service=, ?host=, ?sha256=,
// ?vulnerable=true.
func (a *API) HandleList(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	q := r.URL.Query()
	items, err := a.Inventory.List(r.Context(), store.SightingFilter{Service: q.Get("service"), Host: q.Get("host"), SHA256: strings.ToLower(q.Get("sha256"))}, q.Get("vulnerable") == "true")
	if err != nil {
		a.Log.Error("list the inventory", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the inventory")
		return
	}
	api.WriteJSON(w, http.StatusOK, items)
}

// HandleAgentReport takes an agent's batch. Its sightings may only name
// services the agent serves (entries it is the parent of).
func (a *API) HandleAgentReport(w http.ResponseWriter, r *http.Request) {
	if !a.ready(w) {
		return
	}
	agentID := a.Caller(r)
	var rep api.InventoryReport
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxReportBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "invalid inventory report: "+err.Error())
		return
	}
	entries, err := a.Entries.ListEntries(r.Context(), agentID.String())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	for _, x := range rep.Sightings {
		if !slices.ContainsFunc(entries, func(e store.Entry) bool { return e.SpiffeID == x.Service }) {
			a.Refused(r, "inventory.report", "a sighting names a service this agent does not serve", "service", x.Service)
			api.WriteProblem(w, http.StatusForbidden, "sighting of "+x.Service+": this agent serves no entry with that SPIFFE ID")
			return
		}
	}
	resp, alerts, err := a.Inventory.Report(r.Context(), agentID.String(), rep)
	if err != nil {
		if strings.HasPrefix(err.Error(), "inventory: ") {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		a.Log.Error("inventory report", "agent_id", agentID.String(), "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot record the inventory")
		return
	}
	a.recordVulnerable(r, alerts)
	api.WriteJSON(w, http.StatusOK, resp)
}
