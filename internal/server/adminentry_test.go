package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/respond"
	"github.com/rampartsec/rampart/internal/store"
)

// entryWorkload registers e (its parent the agent named agent, attested
// here) with the admin token, and returns an SVID signed for it through
// the agent, and the entry's ID.
func (h *harness) entryWorkload(agent string, e api.Entry) (*tls.Certificate, string) {
	h.t.Helper()
	agentCert, _ := h.attest(agent)
	e.ParentID = "spiffe://example.org/rampart/agent/" + agent
	if len(e.Selectors) == 0 {
		e.Selectors = []string{"unix:uid:1000"}
	}
	var got api.Entry
	if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/entries", e, &got); err != nil {
		h.t.Fatalf("create entry %s: %v", e.SpiffeID, err)
	}
	key, csr := newCSR(h.t, spiffeid.RequireFromString(e.SpiffeID), nil)
	var resp api.SignResponse
	if err := h.client("", agentCert).Do(context.Background(), http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: []api.SignItem{{EntryID: got.ID, CSR: csr}}}, &resp); err != nil || resp.Results[0].SVID == nil {
		h.t.Fatalf("sign: %v %+v", err, resp)
	}
	return &tls.Certificate{Certificate: resp.Results[0].SVID.Chain, PrivateKey: key}, got.ID
}

// An admin entry's workload calls the admin API with the admin role,
// audited as itself; an ordinary entry's does not; clearing the flag,
// deleting the entry, or quarantining the workload ends it at the next
// request, on the same connection.
func TestAdminEntryCallsTheAdminAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const botID = "spiffe://example.org/ops/bot"
	cert, entryID := h.entryWorkload("node-1", api.Entry{SpiffeID: botID, Admin: true})
	bot := h.client("", cert)
	var who api.Whoami
	if err := bot.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		t.Fatal(err)
	}
	if who.Kind != operator.KindWorkload || who.SpiffeID != botID || len(who.Via) != 1 || who.Via[0] != operator.ViaEntry+entryID {
		t.Fatalf("whoami %+v: want the workload, via its admin entry", who)
	}
	// An admin call (operator.write: only admin holds it), audited with
	// the workload as the actor.
	if err := bot.Do(ctx, http.MethodPost, "/v1/operators", api.OperatorCreate{Name: "spiffe://example.org/ci/*", Kind: "workload",
		Roles: []api.OperatorRole{{Role: "auditor"}}}, nil); err != nil {
		t.Fatalf("admin entry's workload adds an operator: %v", err)
	}
	es := logEntries(t, h.srv.audit, "operator.create")
	if len(es) != 1 || es[0].Actor.SpiffeID != botID || es[0].Actor.User != "" {
		t.Fatalf("operator.create entries %+v: want one naming %s", es, botID)
	}

	// An ordinary entry's workload holds nothing.
	plainCert, _ := h.entryWorkload("node-2", api.Entry{SpiffeID: "spiffe://example.org/ops/plain"})
	wantStatus(t, h.client("", plainCert).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "holds no role")

	// The flag cleared: refused at the next request.
	var e api.Entry
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/entries/"+entryID, nil, &e); err != nil {
		t.Fatal(err)
	}
	e.Admin = false
	if err := h.admin.Do(ctx, http.MethodPut, "/v1/entries/"+entryID, e, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, bot.Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "holds no role")
	e.Admin = true
	if err := h.admin.Do(ctx, http.MethodPut, "/v1/entries/"+entryID, e, nil); err != nil {
		t.Fatal(err)
	}
	if err := bot.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("admin set again: %v", err)
	}
	ups := logEntries(t, h.srv.audit, "entry.update")
	if last := ups[len(ups)-1]; last.Details["admin"] != "true" {
		t.Fatalf("entry.update %+v: want admin=true in the details", last.Details)
	}

	// Quarantined: nothing, though the entry stands.
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines", respond.QuarantineRequest{Identity: botID, Reason: "stolen"}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.client("", cert).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "quarantined")
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: botID, Reason: "re-keyed"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.client("", cert).Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("quarantine lifted: %v", err)
	}

	// Deleted: refused at the next request.
	if err := h.admin.Do(ctx, http.MethodDelete, "/v1/entries/"+entryID, nil, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.client("", cert).Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "holds no role")
}

// The escalations mayWritePrivileged stops, for a caller holding
// entry.write but not the admin role (no role has it today: the guard is
// checked directly, with such a caller): marking an entry admin or
// downstream; registering an ordinary entry for an admin entry's SPIFFE
// ID with selectors of the writer's own workload (which would hand it the
// admin role, granted by ID); changing or deleting an admin entry. The
// refusal names the batch index and is audited. An ordinary write passes,
// and an admin makes admin entries.
func TestPrivilegedEntryWritesNeedAdmin(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, adminEntry := h.entryWorkload("node-1", api.Entry{SpiffeID: "spiffe://example.org/ops/bot", Admin: true})
	_, downEntry := h.entryWorkload("node-2", api.Entry{SpiffeID: "spiffe://example.org/nested", Downstream: true})
	nonAdmin := operator.Caller{Kind: operator.KindWorkload, Actor: audit.Actor{SpiffeID: "spiffe://example.org/ci/registrar"}, Roles: []store.OperatorRole{{Role: "responder"}, {Role: "policy-author"}}}
	spec := func(id string, admin, down bool) entryWrite {
		s := specFromAPI(api.Entry{SpiffeID: id, ParentID: "spiffe://example.org/rampart/agent/node-1", Selectors: []string{"unix:uid:1"}, Admin: admin, Downstream: down})
		return entryWrite{spec: &s}
	}
	for _, c := range []struct {
		name   string
		writes []entryWrite
		want   string
	}{
		{"create admin", []entryWrite{spec("spiffe://example.org/mine", true, false)}, "admin and downstream entries"},
		{"create downstream", []entryWrite{spec("spiffe://example.org/mine", false, true)}, "admin and downstream entries"},
		{"ordinary entry for the admin entry's ID", []entryWrite{spec("spiffe://example.org/ops/bot", false, false)}, "holds spiffe://example.org/ops/bot"},
		{"ordinary entry for the downstream entry's ID", []entryWrite{spec("spiffe://example.org/nested", false, false)}, "holds spiffe://example.org/nested"},
		{"update the admin entry, clearing the flag", []entryWrite{{spec: spec("spiffe://example.org/x", false, false).spec, id: adminEntry}}, "is an admin or downstream entry"},
		{"delete the downstream entry", []entryWrite{{id: downEntry}}, "is an admin or downstream entry"},
		{"batch, the second", []entryWrite{spec("spiffe://example.org/a", false, false), spec("spiffe://example.org/ops/bot", false, false)}, "entries[1]: "},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/entries", nil)
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, nonAdmin))
		w := httptest.NewRecorder()
		if h.srv.mayWritePrivileged(w, r, c.writes) || w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("%s: let through, or %d %s; want 403 naming %q", c.name, w.Code, w.Body, c.want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/entries", nil)
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, nonAdmin))
	if !h.srv.mayWritePrivileged(httptest.NewRecorder(), r, []entryWrite{spec("spiffe://example.org/mine", false, false), {id: "unknown"}}) {
		t.Error("an ordinary write is refused")
	}
	h.srv.record(ctx, h.srv.refusals.Flush(true)...)
	if es := logEntries(t, h.srv.audit, "entry.privileged"); len(es) == 0 {
		t.Error("no entry.privileged refusal audited")
	}
	// A caller without admin is refused over HTTP too (before the guard:
	// entry.write is admin's alone), and the admin token makes them.
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/entries/batch/create", api.EntryBatch{Entries: []api.Entry{{SpiffeID: "spiffe://example.org/ops/bot2",
		ParentID: "spiffe://example.org/rampart/agent/node-1", Selectors: []string{"unix:uid:7"}, Admin: true}}}, nil); err != nil {
		t.Fatalf("admin batch-creates an admin entry: %v", err)
	}
}
