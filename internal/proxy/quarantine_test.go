package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/upstream"
)

// quarantinedInbound is an inbound listener wired as Run wires it (the h1
// forwarder for HTTP/1.1, net/http for HTTP/2, connections tracked by
// peer) in front of an app with a streaming endpoint, an upgrade to a
// tunnel and a plain one.
type quarantinedInbound struct {
	pki     *testPKI
	server  *x509svid.SVID
	q       *mtls.Quarantine
	tracked *authz.Conns
	addr    string
}

func newQuarantinedInbound(t *testing.T) *quarantinedInbound {
	t.Helper()
	pki := newTestPKI(t)
	x := &quarantinedInbound{pki: pki, server: pki.svid(t, "/payments")}
	x.q = &mtls.Quarantine{Self: x.server.ID}
	x.tracked = authz.NewConns(x.q)
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.Compile(p)
	guard := authz.NewGuard(authz.GuardConfig{Service: x.server.ID, Quarantine: x.q})
	guard.SetPolicy(eng)

	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upgrade := echoUpgradeApp()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream": // a long answer: one line, then nothing until the caller goes
			io.WriteString(w, "start\n")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		case "/ws":
			upgrade.ServeHTTP(w, r)
		default:
			io.WriteString(w, "ok")
		}
	})}
	go app.Serve(appLn)
	t.Cleanup(func() { app.Close() })

	m := newMetrics(prometheus.NewRegistry())
	appAddr := appLn.Addr().String()
	f := &h1Forwarder{guard: guard, m: m.forDirection("inbound"), log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		pool: newPool(func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", appAddr)
		}, upstream.Limits{}, nil),
		badGateway: func(err error) string { return err.Error() }}
	h2srv, err := newInboundServer(&Inbound{App: appAddr}, guard, nil, m, m.pool("inbound", "test"), upstream.Limits{}, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := mtls.ServerConfig(mtls.Options{SVID: x.server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td), Quarantine: x.q})
	h2srv.TLSConfig = tlsCfg.Clone()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.addr = ln.Addr().String()
	h2 := newConnListener(ln.Addr())
	go h2srv.Serve(h2)
	done := make(chan struct{})
	go func() {
		serveInbound(context.Background(), ln, tlsCfg, x.tracked, f, h2, m)
		close(done)
	}()
	t.Cleanup(func() {
		ln.Close()
		h2srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.conns.shutdown(ctx)
		<-done
		f.pool.closeAll()
	})
	return x
}

func (x *quarantinedInbound) clientConfig(t *testing.T, client *x509svid.SVID, protos ...string) *tls.Config {
	cfg := mtls.ClientConfig(mtls.Options{SVID: client, Bundles: x.pki.bundle(), Authorize: tlsconfig.AuthorizeID(x.server.ID)})
	if len(protos) > 0 {
		cfg.NextProtos = protos
	}
	return cfg
}

// Within bound: the test fails, it does not wait, if what should end
// does not. The bound only guards against a hang.
const endedWithin = 5 * time.Second

// A quarantine ends what is already open, not only what opens next: an
// HTTP/2 stream in the middle of its answer, an upgraded (WebSocket-style)
// tunnel, a keep-alive HTTP/1.1 connection; a new handshake is refused.
// Another caller's connection is left alone.
func TestQuarantineEndsOpenConnections(t *testing.T) {
	x := newQuarantinedInbound(t)
	orders, gateway := x.pki.svid(t, "/orders"), x.pki.svid(t, "/gateway")

	// An HTTP/2 stream, open.
	h2c := &http.Transport{TLSClientConfig: x.clientConfig(t, orders), ForceAttemptHTTP2: true}
	defer h2c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+x.addr+"/stream", nil)
	resp, err := h2c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("stream over %s, want HTTP/2", resp.Proto)
	}
	stream := bufio.NewReader(resp.Body)
	if line, err := stream.ReadString('\n'); err != nil || line != "start\n" {
		t.Fatalf("stream: %q %v", line, err)
	}

	// An upgraded tunnel over HTTP/1.1, open.
	tun, err := (&mtls.Dialer{Config: x.clientConfig(t, orders, "http/1.1")}).DialContext(context.Background(), "tcp", x.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	tun.SetDeadline(time.Now().Add(endedWithin))
	tbr := bufio.NewReader(tun)
	fmt.Fprintf(tun, "GET /ws HTTP/1.1\r\nHost: payments\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello\n")
	if r, err := http.ReadResponse(tbr, nil); err != nil || r.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", r, err)
	}
	if line, _ := tbr.ReadString('\n'); line != "echo: hello\n" {
		t.Fatalf("tunnel: %q", line)
	}

	// A keep-alive HTTP/1.1 connection, idle between requests.
	ka, err := (&mtls.Dialer{Config: x.clientConfig(t, orders, "http/1.1")}).DialContext(context.Background(), "tcp", x.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	ka.SetDeadline(time.Now().Add(endedWithin))
	kbr := bufio.NewReader(ka)
	fmt.Fprintf(ka, "GET /x HTTP/1.1\r\nHost: payments\r\n\r\n")
	if r, err := http.ReadResponse(kbr, nil); err != nil || r.StatusCode != 200 {
		t.Fatalf("keep-alive: %v %v", r, err)
	} else {
		io.Copy(io.Discard, r.Body)
	}

	// Another caller's HTTP/2 connection.
	other := &http.Transport{TLSClientConfig: x.clientConfig(t, gateway), ForceAttemptHTTP2: true}
	defer other.CloseIdleConnections()
	get := func(tr *http.Transport) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+x.addr+"/x", nil)
		r, err := tr.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r.StatusCode, nil
	}
	if code, err := get(other); code != 200 {
		t.Fatalf("gateway before: %d %v", code, err)
	}
	if n := x.tracked.Len(); n != 4 {
		t.Fatalf("%d connections tracked, want 4", n)
	}

	x.q.Set([]string{"spiffe://example.org/orders"}) // as the syncer does when the server says so

	// Set swept before it returned: every one of orders' connections is
	// closed; reads end at once with an error, not at the deadline.
	ended := func(what string, r io.Reader) {
		t.Helper()
		start := time.Now()
		_, err := io.ReadAll(r)
		if time.Since(start) >= endedWithin-time.Second {
			t.Errorf("%s: still open after the quarantine (%v)", what, err)
		}
	}
	ended("HTTP/2 stream", stream)
	ended("upgraded tunnel", tbr)
	ended("keep-alive connection", kbr)
	if _, err := fmt.Fprintf(ka, "GET /x HTTP/1.1\r\nHost: payments\r\n\r\n"); err == nil {
		if r, err := http.ReadResponse(kbr, nil); err == nil {
			t.Errorf("keep-alive connection answered %d after the quarantine", r.StatusCode)
		}
	}
	// New connections: refused at the handshake.
	if c, err := (&mtls.Dialer{Config: x.clientConfig(t, orders, "http/1.1")}).DialContext(context.Background(), "tcp", x.addr); err == nil {
		c.SetDeadline(time.Now().Add(endedWithin))
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: payments\r\n\r\n")
		if r, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			t.Errorf("a new connection of the quarantined caller was answered %d", r.StatusCode)
		}
		c.Close()
	}
	if code, err := get(other); code != 200 {
		t.Errorf("gateway after: %d %v (another caller must be left alone)", code, err)
	}
	// Lifted: orders connects again.
	x.q.Set(nil)
	fresh := &http.Transport{TLSClientConfig: x.clientConfig(t, orders), ForceAttemptHTTP2: true}
	defer fresh.CloseIdleConnections()
	if code, err := get(fresh); code != 200 {
		t.Errorf("orders after the lift: %d %v", code, err)
	}
}

// When the service itself is quarantined, it serves no one.
func TestQuarantineOfSelfEndsEverything(t *testing.T) {
	x := newQuarantinedInbound(t)
	gateway := x.pki.svid(t, "/gateway")
	tr := &http.Transport{TLSClientConfig: x.clientConfig(t, gateway), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+x.addr+"/stream", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	x.q.Set([]string{"spiffe://example.org/payments"})
	start := time.Now()
	io.ReadAll(resp.Body)
	if time.Since(start) >= endedWithin-time.Second {
		t.Error("stream still open after the service was quarantined")
	}
	req, _ = http.NewRequest(http.MethodGet, "https://"+x.addr+"/x", nil)
	if r, err := tr.RoundTrip(req); err == nil {
		t.Errorf("answered %d while quarantined", r.StatusCode)
		r.Body.Close()
	}
}

// A raw TCP connection (no HTTP at all) is ended too.
func TestQuarantineEndsRawTCP(t *testing.T) {
	pki := newTestPKI(t)
	server, orders := pki.svid(t, "/payments"), pki.svid(t, "/orders")
	q := &mtls.Quarantine{Self: server.ID}
	tracked := authz.NewConns(q)
	p, _ := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	eng, _ := policy.Compile(p)
	guard := authz.NewGuard(authz.GuardConfig{Service: server.ID, Quarantine: q})
	guard.SetPolicy(eng)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td), Quarantine: q})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		serveTCPInbound(ctx, ln, tlsCfg, tracked, app.Addr().String(), guard, newMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
		close(done)
	}()
	defer func() { cancel(); ln.Close(); <-done }()

	cfg := mtls.ClientConfig(mtls.Options{SVID: orders, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
	c, err := (&mtls.Dialer{Config: cfg}).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(endedWithin))
	br := bufio.NewReader(c)
	io.WriteString(c, "ping\n")
	if line, _ := br.ReadString('\n'); line != "ping\n" {
		t.Fatalf("echo: %q", line)
	}
	q.Set([]string{"spiffe://example.org/orders/*"}) // a pattern: orders and beneath
	start := time.Now()
	io.ReadAll(br)
	if time.Since(start) >= endedWithin-time.Second {
		t.Error("raw TCP connection still open after the quarantine")
	}
	if !q.Holds(spiffeid.RequireFromString("spiffe://example.org/orders/v2")) || q.Holds(spiffeid.RequireFromString("spiffe://example.org/ordersx")) {
		t.Error("pattern orders/* must hold orders/v2 and not ordersx")
	}
	if strings.Join(q.Patterns(), ",") != "spiffe://example.org/orders/*" {
		t.Errorf("patterns %v", q.Patterns())
	}
}
