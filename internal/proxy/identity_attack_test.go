package proxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/upstream"
)

// Identity headers a caller forges, as other proxies would set them for
// the app (the app reads them as proven): none may reach the app, over any
// protocol. Spellings vary in case and "_".
var forgedIdentityFields = []string{
	"X-Spiffe-Id", "x-peer-identity", "X-SSL-Client-Cert", "X-Client-Cert", "X-Client-Verify",
	"X-Remote-User", "Remote-User", "X-Forwarded-User", "X-Forwarded-Email", "X-Auth-Request-User",
	"X-Authenticated-Userid", "X-Amzn-Oidc-Identity", "X-Goog-Authenticated-User-Email",
	"X-MS-CLIENT-PRINCIPAL-NAME", "Cf-Access-Authenticated-User-Email", "L5d-Client-Id",
	"X_Spiffe_Id", "x_remote_user",
	// The gateway's word that a request is internal, or what URL it had
	// (Envoy, nginx auth_request, IIS/ASP.NET, Symfony): the red team saw
	// these reach the app.
	"X-Envoy-Internal", "X-Envoy-Original-Path", "X-Original-URI", "X-Original-URL", "X-Rewrite-URL",
	"X-Envoy-External-Address", "X-Envoy-Downstream-Service-Cluster", "X-Envoy-Peer-Metadata-Id",
	"X-Original-Host",
}

func forgedNameOf(appName string) string {
	n := strings.ToLower(strings.ReplaceAll(appName, "_", "-"))
	for _, f := range forgedIdentityFields {
		if strings.ToLower(strings.ReplaceAll(f, "_", "-")) == n {
			return f
		}
	}
	return ""
}

// Over HTTP/1.1 (the proxy's own forwarder).
func TestH1AttackForgedIdentityHeaders(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	x := newGuardedFwd(t, "  - name: all\n    callers: ['*']\n", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
	}))
	c, br := dial(t, x)
	req := "GET /x HTTP/1.1\r\nHost: svc\r\n"
	for _, f := range forgedIdentityFields {
		req += f + ": spiffe://example.org/admin\r\n"
	}
	io.WriteString(c, req+"\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for name, v := range <-hdrs {
		if f := forgedNameOf(name); f != "" {
			t.Errorf("the app received %s: %q (sent as %s)", name, v, f)
		}
	}
}

// Over HTTP/2 (net/http behind the same guard, real mTLS), in headers and
// in request trailers, which a caller may declare for any name.
func TestH2AttackForgedIdentityHeaders(t *testing.T) {
	type saw struct{ header, trailer http.Header }
	got := make(chan saw, 1)
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- saw{r.Header.Clone(), r.Trailer.Clone()}
	})}
	go app.Serve(appLn)
	defer app.Close()

	pki := newTestPKI(t)
	server, client := pki.svid(t, "/payments"), pki.svid(t, "/orders")
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.Compile(p)
	guard := authz.NewGuard(authz.GuardConfig{Service: server.ID})
	guard.SetPolicy(eng)
	m := newMetrics(prometheus.NewRegistry())
	srv, err := newInboundServer(&Inbound{App: appLn.Addr().String()}, guard, nil, m, m.pool("inbound", "test"), upstream.Limits{}, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	srv.TLSConfig = mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(mtls.Options{SVID: client, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)}),
		ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := strings.NewReader("payload") // no length: the trailers follow the body
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+ln.Addr().String()+"/x", io.NopCloser(body))
	for _, f := range forgedIdentityFields {
		if !strings.Contains(f, "_") { // HTTP/2 refuses "_" in names only in some clients; sent where it can be
			req.Header.Set(f, "spiffe://example.org/admin")
		}
	}
	req.Trailer = http.Header{"X-Spiffe-Id": {"spiffe://example.org/admin"}, "X-Remote-User": {"admin"}}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("%s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	s := <-got
	for name, v := range s.header {
		if f := forgedNameOf(name); f != "" {
			t.Errorf("the app received header %s: %q", name, v)
		}
	}
	for name, v := range s.trailer {
		t.Errorf("the app received trailer %s: %q (request trailers arrive after the decision)", name, v)
	}
	if s.header.Get("X-Rampart-Caller") != client.ID.String() {
		t.Errorf("verified caller %q", s.header.Get("X-Rampart-Caller"))
	}
}
