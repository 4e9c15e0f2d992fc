package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/respond"
)

// A step waiting for approval: a workload not named --approver cannot
// approve it (the attack: any workload with an SVID granting itself what
// needs a second person), the admin token cannot (no one in particular),
// a named approver can.
func TestWorkloadApprovals(t *testing.T) {
	h := newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", Approvers: []string{"spiffe://example.org/oncall/*"}})
	ctx := context.Background()
	mallory := h.workloadCert("node-1", "spiffe://example.org/mallory")
	oncall := h.workloadCert("node-2", "spiffe://example.org/oncall/bob")
	src := "name: p\nsteps:\n  - action: incident\n    with: {title: hold}\n    approval: {role: approver}\n"
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/playbooks", "application/yaml", []byte(src), nil); err != nil {
		t.Fatal(err)
	}
	var run respond.Run
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/playbooks/p/run", respond.RunRequest{}, &run); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); run.State != respond.RunWaiting && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		h.admin.Do(ctx, http.MethodGet, "/v1/runs/"+run.ID, nil, &run)
	}
	if run.State != respond.RunWaiting {
		t.Fatalf("run %s", run.State)
	}
	err := h.client("", mallory).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, nil, nil)
	wantStatus(t, err, http.StatusForbidden, "may not approve")
	err = h.admin.Do(ctx, http.MethodPost, "/v1/approvals/"+run.ID, nil, nil)
	wantStatus(t, err, http.StatusForbidden, "not a named operator")
	h.admin.Do(ctx, http.MethodGet, "/v1/runs/"+run.ID, nil, &run)
	if run.State != respond.RunWaiting {
		t.Fatalf("a refused approval moved the run: %s", run.State)
	}
	if err := h.client("", oncall).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); run.State != respond.RunSucceeded && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		h.admin.Do(ctx, http.MethodGet, "/v1/runs/"+run.ID, nil, &run)
	}
	if run.State != respond.RunSucceeded || run.Steps[0].Approval.GrantedBy.SpiffeID != "spiffe://example.org/oncall/bob" {
		t.Fatalf("%s %+v", run.State, run.Steps[0].Approval)
	}
}

// A quarantine reaches every workload's sync, and wakes the long polls.
func TestQuarantineInWorkloadSync(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	wl := h.client("", h.workloadCert("node-1", "spiffe://example.org/payments"))
	var ws api.WorkloadSyncResponse
	if err := wl.Do(ctx, http.MethodGet, "/v1/workload/sync", nil, &ws); err != nil || len(ws.Quarantined) != 0 {
		t.Fatalf("%v %+v", err, ws)
	}
	woke := make(chan api.WorkloadSyncResponse, 1)
	go func() {
		var w api.WorkloadSyncResponse
		wl.Do(ctx, http.MethodGet, "/v1/workload/sync?revision="+itoa(ws.Revision)+"&wait=25", nil, &w)
		woke <- w
	}()
	time.Sleep(50 * time.Millisecond) // let the poll park (it returns at once if it is late, which passes too)
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines", respond.QuarantineRequest{Identity: "spiffe://example.org/orders/*", Reason: "stolen"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-woke:
		if len(w.Quarantined) != 1 || w.Quarantined[0] != "spiffe://example.org/orders/*" {
			t.Fatalf("%+v", w.Quarantined)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not wake for the quarantine")
	}
	err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: "spiffe://example.org/orders/*"}, nil)
	wantStatus(t, err, http.StatusBadRequest, "say why")
}

// A quarantined workload whose SVID is still valid cannot go on using the
// key store (the attack: the stolen identity decrypting what it can before
// anyone revokes its SVIDs); lifted, it can again.
func TestKMSQuarantinedCallerRefused(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(kmsPolicyYAML), nil); err != nil {
		t.Fatal(err)
	}
	orders := h.client("", h.workloadCert("node-1", "spiffe://example.org/orders"))
	if _, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines", respond.QuarantineRequest{Identity: "spiffe://example.org/orders", Reason: "stolen"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")})
	wantStatus(t, err, http.StatusForbidden, "quarantined")
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: "spiffe://example.org/orders", Reason: "re-keyed and redeployed"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
}
