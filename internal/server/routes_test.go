package server

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/permission"
)

var update = flag.Bool("update", false, "rewrite docs/api.md from the route table")

var pathParam = regexp.MustCompile(`\{[a-z]+\}`)

// fillPath gives a route's path parameters values.
func fillPath(p string) string {
	return pathParam.ReplaceAllStringFunc(p, func(v string) string {
		if v == "{version}" {
			return "1"
		}
		return "x"
	})
}

// routeServer is a server not yet serving, on a fixed address so that its
// authorization server (and its routes) exists from New on.
func routeServer(t *testing.T) *Server {
	t.Helper()
	srv, err := New(context.Background(), Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:8443",
		JWTIssuer: "https://127.0.0.1:8443/spiffe"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestRouteTable walks the API's route table and the mux built from it:
// every admin route names a permission of the vocabulary; a route is
// registered once; a public route only reads; and every route that needs
// a caller refuses one that presents nothing, so none was registered
// without its check.
func TestRouteTable(t *testing.T) {
	srv := routeServer(t)
	mux := srv.Handler()
	seen := map[string]bool{}
	oauthRoutes := 0
	var table strings.Builder
	for _, rt := range srv.routes() {
		key := rt.Method + " " + rt.Path
		fmt.Fprintf(&table, "%-6s %-52s %-10s %s\n", rt.Method, rt.Path, rt.Auth, rt.Permission)
		if rt.Auth == AuthOAuth {
			oauthRoutes++
		}
		if seen[key] {
			t.Errorf("%s: registered twice", key)
		}
		seen[key] = true
		if rt.Doc == "" || rt.Handler == nil {
			t.Errorf("%s: no doc or no handler", key)
		}
		switch {
		case rt.Auth == AuthAdmin && !rt.Permission.Valid():
			t.Errorf("%s: an admin route without a permission of package permission (has %q)", key, rt.Permission)
		case rt.Auth != AuthAdmin && rt.Permission != "":
			t.Errorf("%s: a %s route names permission %q, which nothing checks", key, rt.Auth, rt.Permission)
		case rt.Auth == AuthPublic && rt.Method != http.MethodGet:
			t.Errorf("%s: a public route that is not a GET", key)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(rt.Method, fillPath(rt.Path), nil))
		switch rt.Auth {
		case AuthAdmin, AuthCaller, AuthMetrics:
			realm := "rampart-" + string(rt.Auth)
			if rt.Auth == AuthCaller {
				realm = "rampart-admin"
			}
			if w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("WWW-Authenticate"), realm) {
				t.Errorf("%s without a token: %d %q, want 401 naming the %s realm", key, w.Code, w.Header().Get("WWW-Authenticate"), rt.Auth)
			}
		case AuthAgent, AuthWorkload:
			if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "client certificate") {
				t.Errorf("%s without a certificate: %d %s, want 401", key, w.Code, w.Body)
			}
		default:
			if w.Code == http.StatusNotFound && strings.Contains(w.Body.String(), "no such API endpoint") || w.Code == http.StatusMethodNotAllowed {
				t.Errorf("%s: not served (%d)", key, w.Code)
			}
		}
	}
	t.Logf("the route table:\n%s", table.String())
	if oauthRoutes == 0 {
		t.Error("the authorization server's routes are not in the table")
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/nothing", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("an unknown path: %d, want 404", w.Code)
	}
}

// authDoc says who each kind of caller is, for docs/api.md.
var authDoc = []struct {
	auth Auth
	who  string
}{
	{AuthPublic, "anyone who reaches the API"},
	{AuthAdmin, "a caller holding the route's permission through its roles (docs/operators.md): an operator signed in with `rampart login` (`Authorization: DPoP` with a DPoP proof), a workload whose SVID a workload operator pattern matches (TLS client certificate), or the break-glass admin token (DATA/admin.token, `Authorization: Bearer`; audited and alerted on every use, refused with `--admin-token=off`)"},
	{AuthCaller, "any caller `admin` takes, whatever it holds"},
	{AuthAgent, "an agent, by its X.509-SVID as the TLS client certificate (checked again per request: not revoked, not evicted)"},
	{AuthWorkload, "any X.509-SVID of the trust domain as the TLS client certificate (proxies, SDK services, agents, other replicas)"},
	{AuthJoinToken, "an agent not yet attested, by a one-time join token in the body"},
	{AuthNodeProof, "an agent not yet attested, by its node's proof in the body: a certificate from a CA given to --node-attest-x509pop-ca and a signature over a single-use server nonce, or a TPM whose EK --node-attest-tpm-ek-hash allows, activating a credential and quoting a single-use nonce (docs/attestation.md)"},
	{AuthMetrics, "Prometheus, by the scrape-only token (DATA/metrics.token); the admin token is not taken"},
	{AuthOAuth, "OAuth clients and users, authenticated per request as OAuth 2.0 and OpenID Connect say (see docs/oauth.md)"},
	{AuthACME, "ACME clients: every POST a JWS signed by an account's key, or by a new key with an external account binding (RFC 8555; see docs/acme.md)"},
}

// apiDoc renders docs/api.md from the route table.
func apiDoc(rs []Route) string {
	var b strings.Builder
	b.WriteString(`# The HTTP API

<!-- Generated from the server's route table (internal/server/routes.go) by
     go test ./internal/server -run TestAPIDoc -update
     Do not edit: TestAPIDoc fails when this file and the table differ. -->

Every endpoint of ` + "`rampart server`" + `, from the one table the server registers
its routes from. JSON over HTTPS (TLS 1.3 only) unless the description says
otherwise; errors are RFC 9457 problem details. Endpoints marked *holder*
are served by the replica that keeps the audit log; the others answer with
a redirect to it.

## Who may call what

| auth | the caller |
| --- | --- |
`)
	for _, a := range authDoc {
		fmt.Fprintf(&b, "| %s | %s |\n", a.auth, a.who)
	}
	b.WriteString("\n## Endpoints\n\n| method | path | auth | permission | what it does |\n| --- | --- | --- | --- | --- |\n")
	uses := map[permission.Permission][]string{}
	for _, rt := range rs {
		auth := string(rt.Auth)
		if rt.Holder {
			auth += ", holder"
		}
		perm := "–"
		if rt.Permission != "" {
			perm = "`" + string(rt.Permission) + "`"
			uses[rt.Permission] = append(uses[rt.Permission], rt.Method+" `"+rt.Path+"`")
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s |\n", rt.Method, rt.Path, auth, perm, rt.Doc)
	}
	b.WriteString(`
## Permissions

Each admin endpoint needs one permission (package permission); roles are
sets of them (see docs/operators.md), and the break-glass admin token holds
them all.

| permission | allows | endpoints |
| --- | --- | --- |
`)
	for _, p := range permission.All {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", p.Permission, p.Allows, strings.Join(uses[p.Permission], ", "))
	}
	return b.String()
}

// respondPending are the permissions Respond's endpoints (playbooks,
// incidents, approvals) will need; the vocabulary and the roles hold them
// before those routes are in the table. Remove each as its route lands.
var respondPending = map[permission.Permission]bool{
	permission.IncidentRead: true, permission.IncidentManage: true, permission.PlaybookRead: true,
	permission.PlaybookWrite: true, permission.PlaybookRun: true, permission.ApprovalGrant: true,
}

// TestAPIDoc keeps docs/api.md in step with the route table (-update
// rewrites it), and every permission of the vocabulary in use.
func TestAPIDoc(t *testing.T) {
	rs := routeServer(t).routes()
	for _, p := range permission.All {
		if respondPending[p.Permission] {
			continue
		}
		used := false
		for _, rt := range rs {
			used = used || rt.Permission == p.Permission
		}
		if !used {
			t.Errorf("permission %s: no endpoint needs it", p.Permission)
		}
	}
	want := apiDoc(rs)
	const path = "../../docs/api.md"
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("docs/api.md is out of date with the route table: run go test ./internal/server -run TestAPIDoc -update")
	}
}

// A JWT issuer that could collide with the API's own routes, or that
// relying parties would not accept, stops the server at start.
func TestJWTIssuerChecked(t *testing.T) {
	for _, iss := range []string{"http://127.0.0.1:8443/spiffe", "https://127.0.0.1:8443", "https://127.0.0.1:8443/v1/entries"} {
		_, err := New(context.Background(), Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:8443", JWTIssuer: iss})
		if err == nil || !strings.Contains(err.Error(), "--jwt-issuer") {
			t.Errorf("JWT issuer %s: got %v, want a refusal naming --jwt-issuer", iss, err)
		}
	}
}
