package detect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

// AlertAdmin reads alerts and changes their status; store.Store
// implements it.
type AlertAdmin interface {
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error)
	GetAlert(ctx context.Context, id string) (store.Alert, error)
	SetAlertStatus(ctx context.Context, id, status string, at time.Time) error
}

// AlertAPI serves alerts to operators: the list (by rule, status, time,
// at most a number), one alert, and a change of status, which is an audit
// entry naming the operator and the note. The server's route table puts
// each handler behind the permission it needs.
type AlertAPI struct {
	Store AlertAdmin
	// Event records an admin action in the audit log, naming the caller
	// the request proved.
	Event func(r *http.Request, action string, kv ...any)
	Now   func() time.Time
	Log   *slog.Logger
}

// AlertToAPI is an alert as the API and the CLI show it.
func AlertToAPI(a store.Alert) api.Alert {
	return api.Alert{ID: a.ID, Rule: a.Rule, Severity: a.Severity, Group: a.Group, Summary: a.Summary, FirstSeen: a.FirstSeen,
		LastSeen: a.LastSeen, Count: a.Count, FirstIndex: a.FirstIndex, LastIndex: a.LastIndex, Status: a.Status, UpdatedAt: a.UpdatedAt}
}

// List serves GET /v1/alerts?rule=&status=&since=&limit=.
func (a *AlertAPI) List(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AlertFilter{Rule: q.Get("rule"), Status: q.Get("status")}
	switch f.Status {
	case "", store.AlertOpen, store.AlertAcknowledged, store.AlertResolved:
	default:
		api.WriteProblem(w, http.StatusBadRequest, "status: want open, acknowledged or resolved")
		return
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "since: want an RFC 3339 time")
			return
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			api.WriteProblem(w, http.StatusBadRequest, "limit: want a positive number")
			return
		}
		f.Limit = n
	}
	as, err := a.Store.ListAlerts(r.Context(), f)
	if err != nil {
		api.InternalError(w, a.Log, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(as, AlertToAPI))
}

// Get serves GET /v1/alerts/{id}.
func (a *AlertAPI) Get(w http.ResponseWriter, r *http.Request) {
	al, err := a.Store.GetAlert(r.Context(), r.PathValue("id"))
	if a.found(w, err, r.PathValue("id")) {
		api.WriteJSON(w, http.StatusOK, AlertToAPI(al))
	}
}

// SetStatus serves POST /v1/alerts/{id}/status.
func (a *AlertAPI) SetStatus(w http.ResponseWriter, r *http.Request) {
	var req api.SetAlertStatusRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	switch req.Status {
	case store.AlertOpen, store.AlertAcknowledged, store.AlertResolved:
	default:
		api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("status %q: want open, acknowledged or resolved", req.Status))
		return
	}
	id := r.PathValue("id")
	if !a.found(w, a.Store.SetAlertStatus(r.Context(), id, req.Status, a.Now()), id) {
		return
	}
	a.Event(r, "alert.status", "alert_id", id, "status", req.Status, "note", req.Note)
	a.Get(w, r)
}

func (a *AlertAPI) found(w http.ResponseWriter, err error, id string) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, "no alert "+id)
	default:
		api.InternalError(w, a.Log, err)
	}
	return false
}
