package respond

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/approval"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// API serves playbooks, runs, incidents, approvals, quarantines and breach
// scope over HTTP. The server's route table puts each handler behind its
// permission (playbook.*, incident.*, approval.grant).
type API struct {
	Service *Service
	// Actor names the caller the request proved (the server's actor
	// logic: the admin token, an operator, a workload).
	Actor func(*http.Request) audit.Actor
	Log   *slog.Logger
}

// Wire types (the CLI reads them too).
type (
	// RunRequest starts a run.
	RunRequest struct {
		Version int               `json:"version,omitempty"`
		AlertID string            `json:"alert_id,omitempty"`
		Alert   *AlertFacts       `json:"alert,omitempty"` // a simulated alert (drills, tests)
		Vars    map[string]string `json:"vars,omitempty"`
		DryRun  bool              `json:"dry_run,omitempty"`
		Drill   bool              `json:"drill,omitempty"`
	}
	// PlaybookInfo is a stored playbook.
	PlaybookInfo struct {
		Name        string    `json:"name"`
		Version     int       `json:"version"`
		Description string    `json:"description,omitempty"`
		Triggers    []string  `json:"triggers,omitempty"`
		Steps       int       `json:"steps"`
		CreatedAt   time.Time `json:"created_at"`
		CreatedBy   string    `json:"created_by"`
		Source      string    `json:"source,omitempty"`
	}
	// TestRequest validates a playbook against a simulated alert without
	// storing it.
	TestRequest struct {
		Source string            `json:"source"`
		Alert  AlertFacts        `json:"alert"`
		Vars   map[string]string `json:"vars,omitempty"`
	}
	// TestResponse says whether the alert starts the playbook and what
	// each step would do.
	TestResponse struct {
		Matches bool `json:"matches"`
		Run     *Run `json:"run"`
	}
	// OpenRequest opens an incident by hand.
	OpenRequest struct {
		Title      string   `json:"title"`
		Severity   string   `json:"severity,omitempty"`
		Owner      string   `json:"owner,omitempty"`
		Identities []string `json:"identities,omitempty"`
	}
	// IncidentView is an incident with its timeline and runs.
	IncidentView struct {
		Incident *Incident       `json:"incident"`
		Timeline []TimelineEntry `json:"timeline"`
		Runs     []*Run          `json:"runs"`
	}
	// NoteRequest adds a note.
	NoteRequest struct {
		Text string `json:"text"`
	}
	// StatusRequest changes status, severity or owner.
	StatusRequest struct {
		Status   string `json:"status,omitempty"`
		Severity string `json:"severity,omitempty"`
		Owner    string `json:"owner,omitempty"`
		Reason   string `json:"reason,omitempty"`
	}
	// QuarantineRequest quarantines or lifts an identity.
	QuarantineRequest struct {
		Identity string `json:"identity"`
		Reason   string `json:"reason"`
		Incident string `json:"incident,omitempty"`
	}
	// ScopeRequest asks for a breach scope (and attaches it to the
	// incident of the path, if any).
	ScopeRequest struct {
		Identity string    `json:"identity"`
		Since    time.Time `json:"since"`
		Until    time.Time `json:"until,omitzero"`
	}
)

func (a *API) fail(w http.ResponseWriter, err error) {
	var ye interface{ Error() string }
	switch {
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, err.Error())
	case errors.Is(err, approval.ErrSelfApproval), errors.Is(err, approval.ErrAnonymousApprover), errors.Is(err, approval.ErrNoRequester):
		api.WriteProblem(w, http.StatusForbidden, err.Error())
	case errors.Is(err, ErrNothingToApprove), errors.Is(err, ErrBusy), errors.Is(err, store.ErrConflict),
		errors.Is(err, ErrApprovalMismatch), errors.Is(err, ErrApprovalExpired):
		api.WriteProblem(w, http.StatusConflict, err.Error())
	case errors.As(err, &ye) && strings.HasPrefix(err.Error(), "respond: "):
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
	default:
		api.InternalError(w, a.Log, err)
	}
}

func info(sp store.Playbook, p *Playbook, withSource bool) PlaybookInfo {
	pi := PlaybookInfo{Name: sp.Name, Version: sp.Version, CreatedAt: sp.CreatedAt, CreatedBy: sp.CreatedBy}
	if p != nil {
		pi.Description, pi.Triggers, pi.Steps = p.Description, p.Trigger.Rules, len(p.Steps)
	}
	if withSource {
		pi.Source = sp.Source
	}
	return pi
}

// HandlePut stores a playbook (YAML body) as its next version.
func (a *API) HandlePut(w http.ResponseWriter, r *http.Request) {
	src, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 256<<10))
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "playbook body: "+err.Error())
		return
	}
	sp, p, err := a.Service.PutPlaybook(r.Context(), src, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, info(sp, p, false))
}

// HandleList lists the playbooks.
func (a *API) HandleList(w http.ResponseWriter, r *http.Request) {
	sps, err := a.Service.cfg.Store.ListPlaybooks(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(sps, func(sp store.Playbook) PlaybookInfo {
		p, _ := Parse([]byte(sp.Source), nil)
		return info(sp, p, false)
	}))
}

// HandleGet reads a playbook (?version=).
func (a *API) HandleGet(w http.ResponseWriter, r *http.Request) {
	v, _ := strconv.Atoi(r.URL.Query().Get("version"))
	sp, p, err := a.Service.Playbook(r.Context(), r.PathValue("name"), v)
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, info(sp, p, true))
}

// HandleDelete deletes a playbook (its versions stay for the runs).
func (a *API) HandleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.Service.cfg.Store.DeletePlaybook(r.Context(), name); err != nil {
		a.fail(w, err)
		return
	}
	a.Service.record(r.Context(), a.Actor(r), "playbook.delete", name, audit.OutcomeSuccess, "", nil)
	w.WriteHeader(http.StatusNoContent)
}

// HandleTest validates a playbook and shows, for a simulated alert,
// whether it starts and what each step would do. Nothing is stored.
func (a *API) HandleTest(w http.ResponseWriter, r *http.Request) {
	var req TestRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	p, err := Parse([]byte(req.Source), a.Service.cfg.KnownRule)
	if err != nil {
		a.fail(w, err)
		return
	}
	run, err := a.Service.simulate(p, req.Alert, req.Vars, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, TestResponse{Matches: p.Matches(req.Alert), Run: run})
}

// HandleRun starts a run of the playbook (or a dry run).
func (a *API) HandleRun(w http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	o := StartOptions{Playbook: r.PathValue("name"), Version: req.Version, Vars: req.Vars, By: a.Actor(r), DryRun: req.DryRun, Drill: req.Drill}
	switch {
	case req.AlertID != "" && req.Alert != nil:
		api.WriteProblem(w, http.StatusBadRequest, "give alert_id or alert, not both")
		return
	case req.AlertID != "":
		al, err := a.Service.alerts(r.Context(), req.AlertID)
		if err != nil {
			a.fail(w, err)
			return
		}
		o.Alert = al
	case req.Alert != nil:
		o.Alert = *req.Alert
	}
	run, err := a.Service.Start(r.Context(), o)
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, run)
}

// HandleGetRun reads a run.
func (a *API) HandleGetRun(w http.ResponseWriter, r *http.Request) {
	run, err := a.Service.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, run)
}

// HandleListIncidents lists incidents (?status=).
func (a *API) HandleListIncidents(w http.ResponseWriter, r *http.Request) {
	ins, err := a.Service.Incidents(r.Context(), r.URL.Query().Get("status"))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, ins)
}

// HandleOpen opens an incident by hand.
func (a *API) HandleOpen(w http.ResponseWriter, r *http.Request) {
	var req OpenRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	in, err := a.Service.Open(r.Context(), OpenOptions{Title: req.Title, Severity: req.Severity, Owner: req.Owner, Identities: req.Identities}, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, in)
}

// HandleGetIncident reads an incident with its timeline and runs.
func (a *API) HandleGetIncident(w http.ResponseWriter, r *http.Request) {
	in, tl, runs, err := a.Service.Timeline(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, IncidentView{Incident: in, Timeline: tl, Runs: runs})
}

// HandleNote adds a note.
func (a *API) HandleNote(w http.ResponseWriter, r *http.Request) {
	var req NoteRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if err := a.Service.Note(r.Context(), r.PathValue("id"), req.Text, a.Actor(r)); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// HandleStatus changes status, severity or owner.
func (a *API) HandleStatus(w http.ResponseWriter, r *http.Request) {
	var req StatusRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	in, err := a.Service.Update(r.Context(), r.PathValue("id"), req.Status, req.Severity, req.Owner, req.Reason, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, in)
}

// HandleReport answers the post-mortem in Markdown.
func (a *API) HandleReport(w http.ResponseWriter, r *http.Request) {
	md, err := a.Service.Report(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, md)
}

// HandleApprove grants the approval a run waits for ({ref}: a run ID, or
// an incident with one waiting run). The approver is the caller; it must
// not be whoever started the run. The body, optional, is an ApprovalRef:
// the step and request the approver saw.
func (a *API) HandleApprove(w http.ResponseWriter, r *http.Request) {
	want, ok := ReadApprovalRef(w, r)
	if !ok {
		return
	}
	run, err := a.Service.Approve(r.Context(), r.PathValue("ref"), want, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, run)
}

// ReadApprovalRef reads an approval's optional body: an ApprovalRef in
// JSON, at most 4 KiB, unknown fields refused. false: it answered.
func ReadApprovalRef(w http.ResponseWriter, r *http.Request) (ApprovalRef, bool) {
	var want ApprovalRef
	if r.ContentLength == 0 {
		return want, true
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&want); err != nil && !errors.Is(err, io.EOF) {
		api.WriteProblem(w, http.StatusBadRequest, "approval body: "+err.Error()+` (want {"step": NAME, "approval": ID}, both optional)`)
		return want, false
	}
	return want, true
}

// HandleQuarantines lists the quarantines (?all=true: lifted ones too).
func (a *API) HandleQuarantines(w http.ResponseWriter, r *http.Request) {
	qs, err := a.Service.cfg.Store.ListQuarantines(r.Context(), r.URL.Query().Get("all") == "true")
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(qs, func(q store.Quarantine) QuarantineInfo { return quarantineInfo(q) }))
}

// QuarantineInfo is a quarantine on the wire.
type QuarantineInfo struct {
	ID         string    `json:"id"`
	Identity   string    `json:"identity"`
	Reason     string    `json:"reason"`
	Incident   string    `json:"incident,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	CreatedBy  string    `json:"created_by"`
	LiftedAt   time.Time `json:"lifted_at,omitzero"`
	LiftedBy   string    `json:"lifted_by,omitempty"`
	LiftReason string    `json:"lift_reason,omitempty"`
}

func quarantineInfo(q store.Quarantine) QuarantineInfo {
	return QuarantineInfo{ID: q.ID, Identity: q.Pattern, Reason: q.Reason, Incident: q.Incident, CreatedAt: q.CreatedAt, CreatedBy: q.CreatedBy,
		LiftedAt: q.LiftedAt, LiftedBy: q.LiftedBy, LiftReason: q.LiftReason}
}

// HandleQuarantine quarantines an identity by hand.
func (a *API) HandleQuarantine(w http.ResponseWriter, r *http.Request) {
	var req QuarantineRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	q, err := a.Service.Quarantine(r.Context(), req.Identity, req.Reason, req.Incident, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, quarantineInfo(q))
}

// HandleLift lifts a quarantine; the reason is required and recorded.
func (a *API) HandleLift(w http.ResponseWriter, r *http.Request) {
	var req QuarantineRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	qs, err := a.Service.Lift(r.Context(), req.Identity, req.Reason, a.Actor(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(qs, quarantineInfo))
}

// HandleScope answers a breach scope; under /v1/incidents/{id}/scope it
// is also attached to the incident.
func (a *API) HandleScope(w http.ResponseWriter, r *http.Request) {
	var req ScopeRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if a.Service.cfg.Scoper == nil {
		api.WriteProblem(w, http.StatusServiceUnavailable, "breach scope is answered by the replica that keeps the audit log")
		return
	}
	sc, err := a.Service.cfg.Scoper.Scope(req.Identity, req.Since, req.Until)
	if err != nil {
		a.fail(w, err)
		return
	}
	if id := r.PathValue("id"); id != "" {
		if err := a.Service.AttachScope(r.Context(), id, sc, a.Actor(r)); err != nil {
			a.fail(w, err)
			return
		}
	} else {
		a.Service.record(r.Context(), a.Actor(r), "incident.scope", req.Identity, audit.OutcomeSuccess, "", map[string]string{"since": req.Since.UTC().Format(time.RFC3339)})
	}
	api.WriteJSON(w, http.StatusOK, sc)
}
