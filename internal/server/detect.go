package server

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

// AlertToAPI is an alert as the API and the CLI show it.
func AlertToAPI(a store.Alert) api.Alert {
	return api.Alert{ID: a.ID, Rule: a.Rule, Severity: a.Severity, Group: a.Group, Summary: a.Summary, FirstSeen: a.FirstSeen,
		LastSeen: a.LastSeen, Count: a.Count, FirstIndex: a.FirstIndex, LastIndex: a.LastIndex, Status: a.Status, UpdatedAt: a.UpdatedAt}
}

func (s *Server) handleListAlerts(w http.ResponseWriter, r *http.Request) {
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
	as, err := s.store.ListAlerts(r.Context(), f)
	if err != nil {
		s.internalError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(as, AlertToAPI))
}

func (s *Server) handleGetAlert(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.GetAlert(r.Context(), r.PathValue("id"))
	if !s.found(w, err, "no alert "+r.PathValue("id")) {
		return
	}
	api.WriteJSON(w, http.StatusOK, AlertToAPI(a))
}

func (s *Server) handleSetAlertStatus(w http.ResponseWriter, r *http.Request) {
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
	if !s.found(w, s.store.SetAlertStatus(r.Context(), id, req.Status, s.now()), "no alert "+id) {
		return
	}
	s.event(r, "alert.status", "alert_id", id, "status", req.Status, "note", req.Note)
	s.handleGetAlert(w, r)
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("store error", "err", err)
	api.WriteProblem(w, http.StatusInternalServerError, "the store failed; see the server log")
}
