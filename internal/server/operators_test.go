package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/permission"
)

func (h *harness) addOperator(c api.OperatorCreate) {
	h.t.Helper()
	if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/operators", c, nil); err != nil {
		h.t.Fatalf("add operator %s: %v", c.Name, err)
	}
}

// requestAs is r presented over TLS with cert as the client certificate
// (the chain as the handshake would have verified it).
func requestAs(method, path string, cert *tls.Certificate) *http.Request {
	r := httptest.NewRequest(method, "https://rampart.test"+path, nil)
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	if cert != nil {
		for _, der := range cert.Certificate {
			c, _ := x509.ParseCertificate(der)
			r.TLS.PeerCertificates = append(r.TLS.PeerCertificates, c)
		}
	}
	return r
}

// TestPermissionTable walks every admin endpoint of the route table with a
// caller holding each role (a workload granted it) and one holding none:
// each is let through or refused exactly as package permission's role
// table says. A route whose permission is outside the vocabulary, or that
// some role reaches without the table saying so, fails. The handlers are
// replaced by a sentinel: what is tested is the guard, not what the
// endpoints do.
func TestPermissionTable(t *testing.T) {
	h := newHarness(t)
	certs := map[permission.Role]*tls.Certificate{}
	for _, ri := range permission.Roles {
		id := "spiffe://example.org/ops/" + string(ri.Role)
		h.addOperator(api.OperatorCreate{Name: id, Kind: "workload", Roles: []api.OperatorRole{{Role: string(ri.Role)}}})
		certs[ri.Role] = h.workloadCert("node-"+string(ri.Role), id)
	}
	nobody := h.workloadCert("node-x", "spiffe://example.org/not-an-operator")
	admins := 0
	for _, rt := range h.srv.routes() {
		if rt.Auth != AuthAdmin {
			continue
		}
		admins++
		key := rt.Method + " " + rt.Path
		if !rt.Permission.Valid() {
			t.Errorf("%s: permission %q is not in the vocabulary", key, rt.Permission)
			continue
		}
		reached := false
		rt.Handler = func(w http.ResponseWriter, r *http.Request) { reached = true; w.WriteHeader(299) }
		guarded := h.srv.guard(rt)
		for _, ri := range permission.Roles {
			reached = false
			w := httptest.NewRecorder()
			guarded(w, requestAs(rt.Method, fillPath(rt.Path), certs[ri.Role]))
			want := ri.Role.Allows(rt.Permission)
			if reached != want {
				t.Errorf("%s (%s) as %s: reached %v, want %v (%d %s)", key, rt.Permission, ri.Role, reached, want, w.Code, w.Body)
			}
			if !want && (w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), string(rt.Permission))) {
				t.Errorf("%s as %s: %d %s, want 403 naming %s", key, ri.Role, w.Code, w.Body, rt.Permission)
			}
		}
		reached = false
		w := httptest.NewRecorder()
		guarded(w, requestAs(rt.Method, fillPath(rt.Path), nobody))
		if reached || w.Code != http.StatusUnauthorized {
			t.Errorf("%s as a workload holding no role: %d, reached %v", key, w.Code, reached)
		}
	}
	if admins < 40 {
		t.Fatalf("only %d admin routes walked", admins)
	}
}

// A policy-author limited to payments' services publishes their policies
// and no one else's; a workload whose SVID no pattern matches holds
// nothing, and one whose operator is disabled loses its role at once.
func TestScopedPolicyAuthorAndWorkloadPatterns(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.addOperator(api.OperatorCreate{Name: "spiffe://example.org/ci/payments/*", Kind: "workload",
		Roles: []api.OperatorRole{{Role: "policy-author", Services: []string{"spiffe://example.org/payments/*"}}}})
	ci := h.client("", h.workloadCert("node-ci", "spiffe://example.org/ci/payments/deploy"))
	pol := func(svc string) []byte {
		return []byte("service: " + svc + "\nrules:\n  - name: any\n    callers: [spiffe://example.org/gateway]\n    paths: [/*]\n")
	}
	if err := ci.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", pol("spiffe://example.org/payments/api"), nil); err != nil {
		t.Fatalf("the pipeline's own service: %v", err)
	}
	for _, svc := range []string{"spiffe://example.org/orders", "spiffe://example.org/payments", "spiffe://example.org/rampart/kms"} {
		err := ci.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", pol(svc), nil)
		wantStatus(t, err, http.StatusForbidden, "for "+svc)
	}
	wantStatus(t, ci.Do(ctx, http.MethodDelete, "/v1/policy?service=spiffe://example.org/orders", nil, nil), http.StatusForbidden, "policy.write")
	wantStatus(t, ci.Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusForbidden, "entry.read")
	es := logEntries(t, h.srv.audit, "policy.put")
	if len(es) != 1 || es[0].Actor.SpiffeID != "spiffe://example.org/ci/payments/deploy" || es[0].Details["auth"] != "workload" ||
		es[0].Details["operator"] != "spiffe://example.org/ci/payments/*" {
		t.Fatalf("policy.put entries %+v: want one naming the pipeline and the pattern that lent it the role", es)
	}
	// Outside the pattern: the same trust domain, a sibling path.
	other := h.client("", h.workloadCert("node-ci2", "spiffe://example.org/ci/orders/deploy"))
	wantStatus(t, other.Do(ctx, http.MethodGet, "/v1/policies", nil, nil), http.StatusUnauthorized, "holds no role")
	// Disabled: refused at the next request.
	disabled := true
	if err := h.admin.Do(ctx, http.MethodPatch, "/v1/operator?name=spiffe://example.org/ci/payments/*", api.OperatorUpdate{Disabled: &disabled}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ci.Do(ctx, http.MethodGet, "/v1/policies", nil, nil), http.StatusUnauthorized, "holds no role")
}

// Patterns that would grant every workload, or another trust domain's,
// are refused; so are roles that cannot be scoped and unknown roles.
func TestOperatorValidation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, c := range []struct {
		req  api.OperatorCreate
		want string
	}{
		{api.OperatorCreate{Name: "spiffe://example.org/*", Kind: "workload", Roles: []api.OperatorRole{{Role: "admin"}}}, "every workload"},
		{api.OperatorCreate{Name: "spiffe://other.org/ci", Kind: "workload", Roles: []api.OperatorRole{{Role: "admin"}}}, "trust domain"},
		{api.OperatorCreate{Name: "spiffe://example.org/ci/*/x", Kind: "workload", Roles: []api.OperatorRole{{Role: "admin"}}}, "want a SPIFFE ID"},
		{api.OperatorCreate{Name: "spiffe://example.org/ci", Kind: "workload", Roles: []api.OperatorRole{{Role: "root"}}}, "unknown role"},
		{api.OperatorCreate{Name: "spiffe://example.org/ci", Kind: "workload", Roles: nil}, "at least one role"},
		{api.OperatorCreate{Name: "spiffe://example.org/ci", Kind: "workload", Roles: []api.OperatorRole{{Role: "responder", Services: []string{"spiffe://example.org/a"}}}}, "cannot be limited"},
		{api.OperatorCreate{Name: "nobody", Kind: "user", Roles: []api.OperatorRole{{Role: "auditor"}}}, "no OAuth user"},
		{api.OperatorCreate{Name: "x", Kind: "robot", Roles: []api.OperatorRole{{Role: "auditor"}}}, "kind"},
	} {
		err := h.admin.Do(ctx, http.MethodPost, "/v1/operators", c.req, nil)
		wantStatus(t, err, http.StatusBadRequest, c.want)
	}
}

// Break glass: every use of the admin token is an audit entry of its own,
// and the default rule admin-token-used raises a high alert on it.
func TestBreakGlassAuditedAndAlerted(t *testing.T) {
	h := newHarness(t)
	if err := h.admin.Do(context.Background(), http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatal(err)
	}
	es := logEntries(t, h.srv.audit, "admin.break_glass")
	if len(es) != 1 || es[0].Actor.User != "admin" || es[0].Details["path"] != "/v1/entries" || es[0].Details["permission"] != "entry.read" ||
		es[0].Details["auth"] != "break-glass" {
		t.Fatalf("break-glass entries %+v: want one for GET /v1/entries", es)
	}
	fired := alertsOver(t, h.srv.audit)
	n := 0
	for k, c := range fired {
		if strings.HasPrefix(k, "admin-token-used ") {
			n += c
		}
	}
	if n == 0 {
		t.Fatalf("no admin-token-used alert: %v", fired)
	}
}

// With --admin-token=off the admin token opens nothing (not /metrics
// either), and trying is audited and alerted on.
func TestAdminTokenOff(t *testing.T) {
	h := newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", AdminTokenOff: true})
	ctx := context.Background()
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/v1/entries", nil, nil), http.StatusUnauthorized, "turned off")
	wantStatus(t, h.admin.Do(ctx, http.MethodGet, "/metrics", nil, nil), http.StatusUnauthorized, "metrics token")
	h.srv.record(ctx, h.srv.refusals.Flush(true)...)
	es := logEntries(t, h.srv.audit, "admin.break_glass")
	if len(es) != 1 || es[0].Outcome != "denied" || es[0].Actor.User != "anonymous" {
		t.Fatalf("entries %+v: want one refusal by anonymous", es)
	}
	fired := alertsOver(t, h.srv.audit)
	if fired["admin-token-used outcome=denied details.remote="+es[0].Details["remote"]] == 0 {
		t.Fatalf("no alert for a refused break-glass use: %v", fired)
	}
}
