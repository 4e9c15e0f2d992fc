package server

import (
	"context"
	"net/http"
	"strings"
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
	// The approval names what the approver saw: another step or another
	// request is refused (409), a body that is not an ApprovalRef too (400).
	err = h.client("", oncall).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, respond.ApprovalRef{Step: "not-this-one"}, nil)
	wantStatus(t, err, http.StatusConflict, "waits at step")
	err = h.client("", oncall).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, respond.ApprovalRef{Approval: "apr-forged"}, nil)
	wantStatus(t, err, http.StatusConflict, "waits on request")
	err = h.client("", oncall).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, map[string]string{"steps": "x"}, nil)
	wantStatus(t, err, http.StatusBadRequest, "approval body")
	want := respond.ApprovalRef{Step: run.Steps[0].Name, Approval: run.Steps[0].Approval.ID}
	if err := h.client("", oncall).Do(ctx, http.MethodPost, "/v1/workload/approvals/"+run.ID, want, nil); err != nil {
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

// The playbook actions act through the server's own code: a key-store key,
// the CA intermediate and the OAuth signing key rotated, an agent evicted, the SVIDs of a
// pattern refused without a person's approval, one identity's SVIDs
// revoked (and only those), each step's result recorded.
func TestPlaybookEffects(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		t.Fatal(err)
	}
	h.workloadCert("node-1", "spiffe://example.org/batch/nightly")
	h.workloadCert("node-2", "spiffe://example.org/batchx")
	h.attest("node-9")
	src := `name: effects
steps:
  - action: rotate_key
    with: {kind: kms, name: orders-pii}
  - action: rotate_key
    with: {kind: ca}
  - action: rotate_key
    with: {kind: oauth}
  - action: evict_agent
    with: {agent: node-9}
  - action: revoke_svids
    with: {identity: "spiffe://example.org/batch/*", reason: "test"}
    on_failure: continue
  - action: revoke_svids
    with: {identity: "spiffe://example.org/batch/nightly", reason: "test"}
  - action: revoke_user
    with: {user: nobody}
    on_failure: continue
`
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/playbooks", "application/yaml", []byte(src), nil); err != nil {
		t.Fatal(err)
	}
	var run respond.Run
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/playbooks/effects/run", respond.RunRequest{}, &run); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(20 * time.Second); run.State == respond.RunRunning && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		h.admin.Do(ctx, http.MethodGet, "/v1/runs/"+run.ID, nil, &run)
	}
	for i, st := range run.Steps[:6] {
		if i == 4 {
			// A pattern, on no person's word: refused (red team: a forged
			// entry had the trust domain revoked through a playbook).
			if st.State != respond.StepFailed || !strings.Contains(st.Error, "approval") {
				t.Errorf("an unapproved pattern revocation: %s %s", st.State, st.Error)
			}
			continue
		}
		if st.State != respond.StepSucceeded {
			t.Errorf("step %d %s: %s %s", i, st.Action, st.State, st.Error)
		}
	}
	// A user who does not exist (a typo, an empty variable) fails the
	// step, recorded, and the run says so: never a quiet no-op.
	if run.Steps[6].State != respond.StepFailed || !strings.Contains(run.Steps[6].Error, "not found") || run.State != respond.RunFailed {
		t.Errorf("revoke_user without OAuth: %+v, run %s", run.Steps[6], run.State)
	}
	if !strings.Contains(run.Steps[2].Result, "signing key ") {
		t.Errorf("oauth key rotation: %q", run.Steps[2].Result)
	}
	var key api.KMSKey
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/kms/keys/orders-pii", nil, &key); err != nil || key.Latest != 2 {
		t.Errorf("kms key: %v latest %d", err, key.Latest)
	}
	var a api.Agent
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/agents/node-9", nil, &a); err != nil || !a.Evicted {
		t.Errorf("agent: %v %+v", err, a)
	}
	if !strings.Contains(run.Steps[5].Result, "revoked 1 SVIDs of spiffe://example.org/batch/nightly") {
		t.Errorf("revoke: %q (batchx is another identity)", run.Steps[5].Result)
	}
}

// A quarantine takes away what a workload was lent: the roles of a workload
// operator on the admin API, and the power to approve playbook steps
// (red team, stop 31: only the key store checked quarantines). Lifted,
// both come back.
func TestQuarantinedWorkloadLosesRolesAndApprovals(t *testing.T) {
	h := newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", Approvers: []string{"spiffe://example.org/ci/*"}})
	ctx := context.Background()
	h.addOperator(api.OperatorCreate{Name: "spiffe://example.org/ci/*", Kind: "workload", Roles: []api.OperatorRole{{Role: "auditor"}}})
	ci := h.client("", h.workloadCert("node-1", "spiffe://example.org/ci/deploy"))
	if err := ci.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("before the quarantine: %v", err)
	}
	quarantine := respond.QuarantineRequest{Identity: "spiffe://example.org/ci/deploy", Reason: "stolen, then re-keyed"}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines", quarantine, nil); err != nil {
		t.Fatal(err)
	}
	err := ci.Do(ctx, http.MethodGet, "/v1/entries", nil, nil)
	wantStatus(t, err, http.StatusUnauthorized, "")
	err = ci.Do(ctx, http.MethodPost, "/v1/workload/approvals/run-x", nil, nil)
	wantStatus(t, err, http.StatusForbidden, "quarantined")
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", quarantine, nil); err != nil {
		t.Fatal(err)
	}
	if err := ci.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
}
