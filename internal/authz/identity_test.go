package authz

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

// Forged identity headers that other proxies and platforms set, which an
// app behind them reads as proven, in the spellings a caller could send.
var forgedIdentity = []string{
	"X-Spiffe-Id", "x-spiffe-id", "X-SPIFFE-ID", "X-Peer-Identity", "x-peer-identity",
	"X-Client-Cert", "X-Client-Certificate", "X-Client-Cert-Chain", "Client-Cert", "Client-Cert-Chain",
	"X-SSL-Client-Cert", "X-SSL-Client-S-DN", "X-SSL-Client-Verify", "Ssl-Client-Cert", "X-Ssl",
	"X-Client-Verify", "X-Client-DN", "X-ARR-ClientCert", "X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Subject",
	"X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Scopes", "Remote-User", "Remote-Groups", "Remote-Email",
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
	"X-Authenticated-User", "X-Authenticated-Userid", "X-Authenticated-Scope",
	"X-Consumer-Id", "X-Consumer-Username", "X-Credential-Identifier", "X-Anonymous-Consumer", "X-Userinfo",
	"X-User", "X-User-Id", "X-Username", "X-Email", "X-Auth-User", "X-Roles", "X-Identity-Status",
	"X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Data", "X-Amzn-Oidc-Accesstoken",
	"X-Goog-Authenticated-User-Email", "X-Goog-Authenticated-User-Id", "X-Goog-Iap-Jwt-Assertion",
	"X-MS-CLIENT-PRINCIPAL", "X-MS-CLIENT-PRINCIPAL-NAME", "X-MS-CLIENT-PRINCIPAL-ID", "X-MS-TOKEN-AAD-ACCESS-TOKEN",
	"Cf-Access-Authenticated-User-Email", "Cf-Access-Jwt-Assertion",
	"X-WEBAUTH-USER", "Tailscale-User-Login", "X-Pomerium-Jwt-Assertion", "X-Pomerium-Claim-Email",
	"X-Authentik-Username", "X-Vouch-User", "L5d-Client-Id", "X-Envoy-Peer-Metadata", "Shib-Identity-Provider", "Sm-User",
	"X-Jwt-Assertion", "X-Apigateway-Api-Userinfo", "X-Endpoint-Api-Userinfo",
	// Underscore spellings (CGI-style servers read them as the dash ones).
	"X_Spiffe_Id", "x_remote_user", "X-MS_CLIENT_PRINCIPAL",
}

// Headers an app legitimately gets from its callers: kept.
var kept = []string{"Accept", "User-Agent", "Content-Type", "Authorization", "X-Request-Id", "X-Api-Key",
	"X-Auth-Token", "X-Tenant", "Traceparent", "X-Correlation-Id", "Cookie", "X-Csrf-Token", "X-Userland"}

func guardAllowingAll(t *testing.T, cfg GuardConfig) *Guard {
	t.Helper()
	cfg.Service = spiffeid.RequireFromString("spiffe://example.org/payments")
	g := NewGuard(cfg)
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	g.SetPolicy(eng)
	return g
}

// serve passes r through the guard's middleware and returns the headers
// the app got.
func serve(t *testing.T, g *Guard, r *http.Request) http.Header {
	t.Helper()
	var saw http.Header
	w := httptest.NewRecorder()
	g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { saw = r.Header.Clone() })).ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	return saw
}

func TestForgedIdentityHeadersNeverReachTheApp(t *testing.T) {
	g := guardAllowingAll(t, GuardConfig{})
	r := request(t, "spiffe://example.org/orders", "/x")
	for _, name := range forgedIdentity {
		r.Header[name] = []string{"spiffe://example.org/admin"} // as sent, not canonicalised
	}
	for _, name := range kept {
		r.Header.Set(name, "v")
	}
	saw := serve(t, g, r)
	for name := range saw {
		for _, f := range forgedIdentity {
			if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), strings.ReplaceAll(f, "_", "-")) {
				t.Errorf("%s reached the app", name)
			}
		}
	}
	for _, name := range kept {
		if saw.Get(name) != "v" {
			t.Errorf("%s did not reach the app", name)
		}
	}
	if saw.Get("X-Rampart-Caller") != "spiffe://example.org/orders" {
		t.Errorf("verified caller %q", saw.Get("X-Rampart-Caller"))
	}
}

func TestOperatorStripHeaders(t *testing.T) {
	names, err := ParseStripHeaders([]string{"x-corp-user", "X_Corp_Role", "x-corp-claim-*", " X-Tenant-Principal "})
	if err != nil {
		t.Fatal(err)
	}
	g := guardAllowingAll(t, GuardConfig{StripHeaders: names})
	r := request(t, "spiffe://example.org/orders", "/x")
	for _, h := range []string{"X-Corp-User", "X-CORP-ROLE", "X-Corp-Claim-Email", "x-corp-claim-groups", "X-Tenant-Principal", "X-Corp-Other"} {
		r.Header.Set(h, "forged")
	}
	saw := serve(t, g, r)
	for name := range saw {
		if strings.HasPrefix(name, "X-Corp-") && name != "X-Corp-Other" || name == "X-Tenant-Principal" {
			t.Errorf("%s reached the app", name)
		}
	}
	if saw.Get("X-Corp-Other") != "forged" {
		t.Error("a header not named was stripped")
	}
	for _, bad := range []string{"", "*", "X Corp", "X-Corp:", "1-*", "é"} {
		if _, err := ParseStripHeaders([]string{bad}); err == nil || !strings.Contains(err.Error(), "strip-header") {
			t.Errorf("%q: %v, want an error naming the flag", bad, err)
		}
	}
}
