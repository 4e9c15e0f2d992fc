package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

func TestAlertsAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := h.srv.store.UpsertAlert(ctx, store.Alert{ID: "alr_1", Rule: "denied-burst", Severity: "high", Summary: "s", FirstSeen: at, LastSeen: at, Count: 1, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	// Admin only: no token, a wrong token, a workload certificate.
	wantStatus(t, h.client("", nil).Do(ctx, http.MethodGet, "/v1/alerts", nil, nil), http.StatusUnauthorized, "admin token")
	wantStatus(t, h.client("wrong", nil).Do(ctx, http.MethodPost, "/v1/alerts/alr_1/status", api.SetAlertStatusRequest{Status: "resolved"}, nil), http.StatusUnauthorized, "admin token")

	var as []api.Alert
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/alerts?rule=denied-burst&status=open", nil, &as); err != nil || len(as) != 1 || as[0].ID != "alr_1" {
		t.Fatalf("list: %v %+v", err, as)
	}
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/v1/alerts?limit=-1", nil, nil), http.StatusBadRequest, "limit")
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/v1/alerts?since=yesterday", nil, nil), http.StatusBadRequest, "since")
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/v1/alerts?status=sleeping", nil, nil), http.StatusBadRequest, "status: want open, acknowledged or resolved")
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/v1/alerts/alr_nope", nil, nil), http.StatusNotFound, "no alert")
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/alerts/alr_1/status", api.SetAlertStatusRequest{Status: "closed"}, nil), http.StatusBadRequest, `"closed"`)
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/alerts/alr_nope/status", api.SetAlertStatusRequest{Status: "resolved"}, nil), http.StatusNotFound, "no alert")

	var a api.Alert
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/alerts/alr_1/status", api.SetAlertStatusRequest{Status: "acknowledged", Note: "on it"}, &a); err != nil || a.Status != "acknowledged" {
		t.Fatalf("ack: %v %+v", err, a)
	}
	// The change is an audit entry naming the alert and the note.
	found := false
	for i := int64(0); i < h.srv.audit.Size(); i++ {
		b, _ := h.srv.audit.Entry(i)
		if e, err := audit.ParseEntry(b); err == nil && e.Action == "alert.status" && e.Details["alert_id"] == "alr_1" && e.Details["note"] == "on it" && e.Actor.User == "admin" {
			found = true
		}
	}
	if !found {
		t.Fatal("no alert.status audit entry")
	}
}
