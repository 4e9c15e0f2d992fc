package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/inventory"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits on supply-chain requests.
const (
	maxScanDBBody    = 1 << 30  // an OSV zip (osv.dev's largest ecosystems are hundreds of MB)
	maxInventoryBody = 64 << 20 // an agent's batch: symbol lists of new binaries
)

// newInventory wires the inventory to the store; nil if the store has no
// scan tables.
func newInventory(s *Server) *inventory.Inventory {
	ss, ok := store.Scan(s.store)
	if !ok {
		return nil
	}
	return &inventory.Inventory{Store: ss, Now: s.now}
}

func (s *Server) scanReady(w http.ResponseWriter) bool {
	if s.scan == nil {
		api.WriteProblem(w, http.StatusNotImplemented, "this store has no vulnerability database or inventory")
		return false
	}
	return true
}

// handleImportScanDB replaces the server's vulnerability database with the
// OSV records of a zip, read and checked here (nothing the client sent is
// trusted), then re-matches the running workloads.
func (s *Server) handleImportScanDB(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxScanDBBody))
	if err != nil {
		api.WriteProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("an OSV zip of at most %d bytes: %v", maxScanDBBody, err))
		return
	}
	entries, err := osv.ReadZip(bytes.NewReader(body), int64(len(body)), "request body")
	if err != nil {
		s.refused(r, "scan.db_import", err.Error())
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	source := r.URL.Query().Get("source")
	if source == "" {
		source = "upload"
	}
	info, err := s.scan.Import(r.Context(), source, entries)
	if err != nil {
		s.log.Error("import the vulnerability database", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the vulnerability database")
		return
	}
	s.event(r, "scan.db_import", "source", source, "records", info.Records, "digest", info.Digest, "generation", info.Generation)
	alerts, err := s.scan.Rematch(r.Context())
	if err != nil {
		s.log.Error("re-match the inventory", "err", err)
	}
	s.recordVulnerable(r, alerts)
	api.WriteJSON(w, http.StatusOK, info)
}

// recordVulnerable audits each called finding on a running workload; the
// default detection rule vulnerable-workload-running alerts on them.
func (s *Server) recordVulnerable(r *http.Request, alerts []inventory.Alert) {
	var es []*audit.Entry
	for _, a := range alerts {
		f := a.Finding
		e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: "scan.vulnerable", Outcome: audit.OutcomeFailure,
			Reason: fmt.Sprintf("%s calls vulnerable code: %s in %s@%s", a.Service, f.ID, f.Package, f.Version),
			Source: "server", Target: a.Service, Actor: audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()},
			Details: map[string]string{"vuln": f.ID, "aliases": strings.Join(f.Aliases, ","), "sha256": a.SHA256, "host": a.Host, "exe": a.Exe,
				"package": f.Package, "version": f.Version, "fixed": strings.Join(f.Fixed, ","), "severity": a.Severity.String(),
				"rated": fmt.Sprint(f.Severity != "UNKNOWN"), "reachability": f.Reachability, "symbols": strings.Join(f.Symbols, ",")}}
		es = append(es, e)
	}
	if len(es) > 0 {
		s.record(r.Context(), es...)
	}
}

func (s *Server) handleGetScanDB(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	info, err := s.scan.DBInfo(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the vulnerability database")
		return
	}
	api.WriteJSON(w, http.StatusOK, info)
}

func (s *Server) handleCreateScanException(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	var req api.ScanException
	if err := api.Decode(r, &req); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now().UTC()
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
		Reason: req.Reason, Expires: req.Expires.UTC(), CreatedAt: now, CreatedBy: "admin"}
	if err := s.scan.Store.CreateScanException(r.Context(), e); err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the exception")
		return
	}
	s.event(r, "scan.exception_add", "id", e.ID, "vuln", e.Vuln, "binary", e.Binary, "service", e.Service, "reason", e.Reason, "expires", e.Expires)
	api.WriteJSON(w, http.StatusCreated, inventory.ExceptionToAPI(e))
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func (s *Server) handleListScanExceptions(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	es, err := s.scan.Store.ListScanExceptions(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read exceptions")
		return
	}
	out := []api.ScanException{}
	for _, e := range es {
		out = append(out, inventory.ExceptionToAPI(e))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteScanException(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	id := r.PathValue("id")
	if err := s.scan.Store.DeleteScanException(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, http.StatusNotFound, "no exception "+id)
		return
	} else if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot delete the exception")
		return
	}
	s.event(r, "scan.exception_remove", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handlePutScanGate(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
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
			api.WriteProblem(w, http.StatusBadRequest, field+": want LOW, MEDIUM, HIGH or CRITICAL")
			return
		}
		*v = l.String()
	}
	if g.Severity == "" && g.Entry == "" && (g.DryRun || g.Unknown != "") {
		api.WriteProblem(w, http.StatusBadRequest, "severity: required (empty removes the gate)")
		return
	}
	if g.Entry != "" {
		if _, err := s.store.GetEntry(r.Context(), g.Entry); err != nil {
			api.WriteProblem(w, http.StatusNotFound, "entry: no registration entry "+g.Entry)
			return
		}
	}
	if err := s.scan.Store.PutScanGate(r.Context(), store.ScanGate{Entry: g.Entry, Severity: g.Severity, DryRun: g.DryRun, Unknown: g.Unknown}); err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the gate")
		return
	}
	s.event(r, "scan.gate_set", "entry", g.Entry, "severity", g.Severity, "dry_run", g.DryRun, "unknown", g.Unknown)
	api.WriteJSON(w, http.StatusOK, g)
}

func (s *Server) handleListScanGates(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	p, err := s.scan.Policy(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read gates")
		return
	}
	api.WriteJSON(w, http.StatusOK, p.Gates)
}

// handleListInventory lists what runs: ?service=, ?host=, ?sha256=,
// ?vulnerable=true.
func (s *Server) handleListInventory(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	q := r.URL.Query()
	items, err := s.scan.List(r.Context(), store.SightingFilter{Service: q.Get("service"), Host: q.Get("host"), SHA256: strings.ToLower(q.Get("sha256"))}, q.Get("vulnerable") == "true")
	if err != nil {
		s.log.Error("list the inventory", "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read the inventory")
		return
	}
	api.WriteJSON(w, http.StatusOK, items)
}

// handleAgentInventory takes an agent's batch. Its sightings may only name
// services the agent serves (entries it is the parent of).
func (s *Server) handleAgentInventory(w http.ResponseWriter, r *http.Request) {
	if !s.scanReady(w) {
		return
	}
	agentID := agentFrom(r)
	var rep api.InventoryReport
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxInventoryBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "invalid inventory report: "+err.Error())
		return
	}
	entries, err := s.store.ListEntries(r.Context(), agentID.String())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read entries")
		return
	}
	for _, x := range rep.Sightings {
		if !slices.ContainsFunc(entries, func(e store.Entry) bool { return e.SpiffeID == x.Service }) {
			s.refused(r, "inventory.report", "a sighting names a service this agent does not serve", "service", x.Service)
			api.WriteProblem(w, http.StatusForbidden, "sighting of "+x.Service+": this agent serves no entry with that SPIFFE ID")
			return
		}
	}
	resp, alerts, err := s.scan.Report(r.Context(), agentID.String(), rep)
	if err != nil {
		if strings.HasPrefix(err.Error(), "inventory: ") {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Error("inventory report", "agent_id", agentID.String(), "err", err)
		api.WriteProblem(w, http.StatusInternalServerError, "cannot record the inventory")
		return
	}
	s.recordVulnerable(r, alerts)
	api.WriteJSON(w, http.StatusOK, resp)
}
