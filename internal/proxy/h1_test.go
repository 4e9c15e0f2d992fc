package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/upstream"
)

// fwd is an HTTP/1.1 forwarder on loopback in front of a real net/http app,
// as an outbound listener runs it (no TLS: the forwarding is the same).
type fwd struct {
	t        testing.TB
	addr     string
	app      *httptest.Server
	appConns atomic.Int64 // connections the app accepted
	appIdle  atomic.Int64 // times an app connection went idle
	f        *h1Forwarder
}

func newFwd(t testing.TB, h http.Handler) *fwd {
	t.Helper()
	x := &fwd{t: t}
	x.app = httptest.NewUnstartedServer(h)
	x.app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			x.appConns.Add(1)
		case http.StateIdle:
			x.appIdle.Add(1)
		}
	}
	x.app.Start()
	t.Cleanup(x.app.Close)
	appAddr := x.app.Listener.Addr().String()
	x.f = &h1Forwarder{m: newMetrics(prometheus.NewRegistry()).forDirection("outbound"), log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		pool: newPool(func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", appAddr)
		}, upstream.Limits{MaxIdle: 8}, nil),
		badGateway: func(err error) string { return "upstream failed: " + err.Error() }}
	x.serveOn(t, func(ln net.Listener) { serveOutbound(context.Background(), ln, x.f, newConnListener(ln.Addr())) })
	return x
}

// serveOn runs serve (which returns once its listener is closed) on a new
// loopback listener, whose address becomes x.addr. At cleanup the listener
// is closed and the forwarder drained and waited for.
func (x *fwd) serveOn(t testing.TB, serve func(net.Listener)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		serve(ln)
		close(done)
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		x.f.conns.shutdown(ctx)
		<-done
	})
}

// raw opens a client connection for hand-written requests.
func (x *fwd) raw() (net.Conn, *bufio.Reader) {
	x.t.Helper()
	c, err := net.Dial("tcp", x.addr)
	if err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitIdleUpstream waits until the pool holds exactly one idle upstream
// connection (a client connection's goroutine gives its own back when it
// sees the client close).
func (x *fwd) waitIdleUpstream(t *testing.T) {
	t.Helper()
	waitFor(t, "the upstream connection back in the pool", func() bool {
		x.f.pool.mu.Lock()
		defer x.f.pool.mu.Unlock()
		return len(x.f.pool.idle) == 1
	})
}

// echoUpgradeApp accepts an upgrade to "echo" with a 101, then answers
// every line sent through the tunnel with "echo: " and the line.
func echoUpgradeApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo: " + line)
			brw.Flush()
		}
	})
}

func echoApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var hdr []string
		for k := range r.Header {
			hdr = append(hdr, k)
		}
		w.Header().Set("X-Headers", strings.Join(hdr, ","))
		fmt.Fprintf(w, "%s %s host=%s len=%d body=%s", r.Method, r.RequestURI, r.Host, r.ContentLength, b)
	})
}

// Keep-alive end to end: many requests on one client connection use one
// app connection, and a new client connection reuses it from the pool.
func TestH1ReusesUpstreamConnections(t *testing.T) {
	x := newFwd(t, echoApp())
	c, br := x.raw()
	for i := range 20 {
		fmt.Fprintf(c, "GET /n/%d?q=1 HTTP/1.1\r\nHost: svc\r\n\r\n", i)
		resp, body := readResp(t, br, "GET")
		if want := fmt.Sprintf("GET /n/%d?q=1 host=svc len=0 body=", i); resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	c.Close()
	// The first connection's goroutine gives its upstream back when it
	// sees the close; only then can the pool hand it on.
	x.waitIdleUpstream(t)
	c2, br2 := x.raw()
	fmt.Fprintf(c2, "POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello")
	if _, body := readResp(t, br2, "POST"); body != "POST /p host=svc len=5 body=hello" {
		t.Fatalf("second connection: %q", body)
	}
	if n := x.appConns.Load(); n != 1 {
		t.Fatalf("app saw %d connections for 21 requests on two client connections, want 1", n)
	}
}

// The app closed a pooled connection while it was idle: an idempotent
// request is sent again on a new connection instead of failing.
func TestH1RetriesIdempotentRequestOnClosedConnection(t *testing.T) {
	x := newFwd(t, echoApp())
	c, br := x.raw()
	fmt.Fprintf(c, "GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
	readResp(t, br, "GET")
	// The answer can reach the client before the app's server marks the
	// connection idle, and only idle ones are closed below.
	waitFor(t, "the app's connection idle", func() bool { return x.appIdle.Load() >= 1 })
	x.app.Config.SetKeepAlivesEnabled(false) // closes the app's idle connections
	x.app.Config.SetKeepAlivesEnabled(true)
	fmt.Fprintf(c, "GET /b HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /b") {
		t.Fatalf("after the app closed its side: %d %q", resp.StatusCode, body)
	}
	if n := x.appConns.Load(); n != 2 {
		t.Fatalf("app saw %d connections, want 2", n)
	}
}

// Hop-by-hop and forwarding headers never reach the app; the rest do.
func TestH1HeaderHygiene(t *testing.T) {
	x := newFwd(t, echoApp())
	c, br := x.raw()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n"+
		"Proxy-Authorization: Basic eA==\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nX-Forwarded-Prefix: /admin\r\n"+
		"Te: trailers, deflate\r\nX-Kept: yes\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	got := "," + resp.Header.Get("X-Headers") + ","
	for _, h := range []string{"X-Secret", "Keep-Alive", "Connection", "Proxy-Authorization", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Forwarded-Prefix"} {
		if strings.Contains(got, ","+h+",") {
			t.Errorf("%s reached the app (it saw %s)", h, got)
		}
	}
	if !strings.Contains(got, ",X-Kept,") || !strings.Contains(got, ",Te,") {
		t.Errorf("end-to-end headers lost: app saw %s", got)
	}
}

// A chunked response is passed on as it is produced, not when it ends.
func TestH1StreamsChunkedResponses(t *testing.T) {
	release := make(chan struct{})
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
		w.Header().Set("X-Sum", "42")
	}))
	c, br := x.raw()
	fmt.Fprintf(c, "GET /stream HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("first;"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
		t.Fatalf("first chunk before the app finished: %q %v", first, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("rest %q trailer %v", rest, resp.Trailer)
	}
}

// A body that arrives after its head, in pieces, reaches the other side
// intact, in both directions. (Copying it through the bufio.Writer's own
// ReadFrom while flushing that writer sent the head's first bytes again in
// place of the body.)
func TestH1BodiesArrivingInPieces(t *testing.T) {
	release, headSeen := make(chan struct{}), make(chan struct{})
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(headSeen) // the head went out before any of the body existed
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(len("got ")+len(b)+len(";second")))
		io.WriteString(w, "got ")
		w.Write(b)
		w.(http.Flusher).Flush()
		select { // bounded, so a failing run ends instead of hanging
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, ";second")
	}))
	c, br := x.raw()
	io.WriteString(c, "POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\n\r\n")
	<-headSeen
	io.WriteString(c, "0123456789")
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("got 0123456789"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "got 0123456789" {
		t.Fatalf("first part: %q %v", first, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != ";second" {
		t.Fatalf("rest %q", rest)
	}
}

// Responses without a body keep their framing: HEAD, 204, 304.
func TestH1BodylessResponses(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "1234")
		}
	}))
	c, br := x.raw()
	for _, tc := range []struct {
		method, path string
		code         int
		cl           string
	}{{"HEAD", "/", 200, "1234"}, {"GET", "/204", 204, ""}, {"GET", "/304", 304, ""}, {"HEAD", "/", 200, "1234"}} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: svc\r\n\r\n", tc.method, tc.path)
		resp, body := readResp(t, br, tc.method)
		if resp.StatusCode != tc.code || body != "" || resp.Header.Get("Content-Length") != tc.cl {
			t.Fatalf("%s %s: %d body %q Content-Length %q", tc.method, tc.path, resp.StatusCode, body, resp.Header.Get("Content-Length"))
		}
	}
}

// Expect: 100-continue: the client is told to send the body once it is
// being forwarded, and the app receives it.
func TestH1ExpectContinue(t *testing.T) {
	x := newFwd(t, echoApp())
	c, br := x.raw()
	fmt.Fprintf(c, "PUT /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue first, got %q %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "data")
	if _, body := readResp(t, br, "PUT"); body != "PUT /up host=svc len=4 body=data" {
		t.Fatalf("app saw %q", body)
	}
	fmt.Fprintf(c, "PUT /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nExpect: teapot\r\n\r\n")
	if resp, _ := readResp(t, br, "PUT"); resp.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("unknown expectation: %d", resp.StatusCode)
	}
}

// Large bodies in both framings arrive whole, and a chunked upload is
// re-framed for the app.
func TestH1LargeBodies(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(b))
	}))
	big := strings.Repeat("abcdefgh", 1<<17) // 1 MiB
	resp, err := http.Post("http://"+x.addr+"/cl", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != strings.ToUpper(big) {
		t.Fatalf("Content-Length body: got %d bytes", len(b))
	}
	resp, err = http.Post("http://"+x.addr+"/chunked", "text/plain", io.MultiReader(strings.NewReader(big))) // unknown length: chunked
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != strings.ToUpper(big) {
		t.Fatalf("chunked body: got %d bytes", len(b))
	}
}

// An upgrade (WebSocket's handshake) becomes a tunnel after the app's 101.
func TestH1Upgrade(t *testing.T) {
	x := newFwd(t, echoUpgradeApp())
	c, br := x.raw()
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	line, err := br.ReadString('\n')
	if line != "echo: hello\n" {
		t.Fatalf("through the tunnel: %q %v", line, err)
	}
}

// Malformed requests are answered and the connection closed; nothing
// reaches the app.
func TestH1RefusesMalformedRequests(t *testing.T) {
	var reached atomic.Int64
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"two Transfer-Encoding lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"header field with a bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400},
		{"HTTP/2 version on HTTP/1", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
		{"CONNECT", "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", maxHeaderBytes+8<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := x.raw()
			go io.WriteString(c, tc.req)
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != tc.code {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.code)
			}
			if !resp.Close {
				t.Fatal("connection left open after a malformed request")
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d malformed requests reached the app", n)
	}
}

// The app answering without reading an upload must never let the body be
// taken for a request. A small body has already been forwarded whole, so
// the connection goes on and its next request is the client's real one; a
// large one is cut short, so the connection closes after the answer.
func TestH1EarlyAnswerNeverParsesTheBody(t *testing.T) {
	var smuggled, reached atomic.Int64
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		switch r.URL.Path {
		case "/smuggled":
			smuggled.Add(1)
		case "/up":
			w.Header().Set("Connection", "close")
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, r.URL.Path)
	}))
	inner := "GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"

	t.Run("small body", func(t *testing.T) {
		c, br := x.raw()
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)
		if resp, _ := readResp(t, br, "POST"); resp.StatusCode != 413 {
			t.Fatalf("got %d, want the app's 413", resp.StatusCode)
		}
		io.WriteString(c, "GET /after HTTP/1.1\r\nHost: svc\r\n\r\n")
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "/after" {
			t.Fatalf("next request on the connection: %d %q, want 200 /after", resp.StatusCode, body)
		}
	})
	t.Run("large body", func(t *testing.T) {
		c, br := x.raw()
		body := strings.Repeat(inner, (8<<20)/len(inner)) // more than socket buffers hold
		go fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 413 && resp.StatusCode != 502 {
				t.Fatalf("got %d, want 413 (or 502 if the app closed during the upload)", resp.StatusCode)
			}
			if !resp.Close {
				t.Fatal("connection kept open with the body unread")
			}
			if _, err := http.ReadResponse(br, nil); err == nil {
				t.Fatal("a second response came back: the body was taken for a request")
			}
		}
	})
	if n := smuggled.Load(); n != 0 {
		t.Fatalf("a request hidden in a body reached the app %d times", n)
	}
}

// HTTP/1.0 clients get a response they can read and a closed connection.
func TestH1HTTP10Client(t *testing.T) {
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "streamed")
		w.(http.Flusher).Flush() // no Content-Length: chunked from the app
	}))
	c, br := x.raw()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 200 || body != "streamed" || !resp.Close || len(resp.TransferEncoding) != 0 {
		t.Fatalf("HTTP/1.0: %d %q close=%v te=%v", resp.StatusCode, body, resp.Close, resp.TransferEncoding)
	}
}

// An unreachable upstream is a 502 problem, and the client may go on.
func TestH1BadGateway(t *testing.T) {
	x := newFwd(t, echoApp())
	x.app.Close()
	c, br := x.raw()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, "upstream failed") {
		t.Fatalf("got %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// Draining: an idle client connection is closed at once, a request in
// flight completes (with Connection: close), and shutdown then returns.
func TestH1Drain(t *testing.T) {
	inFlight := make(chan struct{})
	release := make(chan struct{})
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(inFlight)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle, idleBr := x.raw()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	readResp(t, idleBr, "GET")
	busy, busyBr := x.raw()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
	<-inFlight
	drained := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		x.f.conns.shutdown(ctx)
		close(drained)
	}()
	if _, err := idleBr.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection during drain: %v, want EOF", err)
	}
	close(release)
	resp, body := readResp(t, busyBr, "GET")
	if body != "done" || !resp.Close {
		t.Fatalf("request in flight: %q close=%v", body, resp.Close)
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not return after the last request")
	}
}

// A client that closes after each request (Connection: close, HTTP/1.0)
// does not cost an upstream connection per request: the upstream one goes
// back to the pool. (It was closed with the client's, so every such request
// paid a new upstream handshake: mTLS between proxies.)
func TestH1ClientCloseKeepsUpstream(t *testing.T) {
	x := newFwd(t, echoApp())
	for i := range 5 {
		c, br := x.raw()
		fmt.Fprintf(c, "GET /n/%d HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n", i)
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 || !resp.Close {
			t.Fatalf("request %d: %d close=%v", i, resp.StatusCode, resp.Close)
		}
		c.Close()
		x.waitIdleUpstream(t)
	}
	if n := x.appConns.Load(); n != 1 {
		t.Fatalf("app saw %d connections for 5 closing clients, want 1", n)
	}
}

// HTTP/1.0 has no upgrade (RFC 9110 7.8): an Upgrade header from an
// HTTP/1.0 client is dropped, not passed on as an HTTP/1.1 upgrade.
func TestH1HTTP10UpgradeIgnored(t *testing.T) {
	x := newFwd(t, echoApp())
	c, br := x.raw()
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if got := "," + resp.Header.Get("X-Headers") + ","; resp.StatusCode != 200 || strings.Contains(got, ",Upgrade,") || strings.Contains(got, ",Connection,") {
		t.Fatalf("HTTP/1.0 upgrade: %d, app saw %s", resp.StatusCode, got)
	}
}

// A drain that runs out of time ends every request: one still waiting on
// an upstream that never answers is cut off when forwarding stops
// (pool.closeAll), not left to its 60 s response timeout.
func TestH1DrainTimeoutEndsRequestsWaitingOnTheUpstream(t *testing.T) {
	stuck := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	x := newFwd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(stuck)
		<-release
	}))
	c, br := x.raw()
	io.WriteString(c, "GET /never HTTP/1.1\r\nHost: svc\r\n\r\n")
	<-stuck
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	x.f.conns.shutdown(ctx) // returns at the timeout, the request still waiting
	x.f.pool.closeAll()     // what Run does next
	waitFor(t, "the request's goroutine to end", func() bool {
		x.f.conns.mu.Lock()
		defer x.f.conns.mu.Unlock()
		return len(x.f.conns.conns) == 0
	})
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the client got an answer from a closed upstream")
	}
}
