package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rampartsec/rampart/internal/upstream"
)

// FuzzH1Forwarding sends arbitrary bytes as a client connection through
// the HTTP/1.1 forwarder to a real net/http app and checks the property
// request smuggling would break: the app receives exactly the requests the
// forwarder parsed and forwarded, never one hidden in a body, a header or
// the framing. The app answers every request 203. Every 203 the forwarder
// passed on came from one app request, and every other request it started
// to forward failed upstream (counted: a body cut short by the client, say),
// so the app's count must lie between the two. A smuggled request would
// exceed it. (No panic and no hang are checked on the way.)
func FuzzH1Forwarding(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", // body cut short
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Rampart-Caller: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"GET / HTTP/1.1\r\nHost: a\r\n X-Folded: 1\r\n\r\n",
		"GET http://other/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	var appSaw, appOpen atomic.Int64
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appSaw.Add(1)
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNonAuthoritativeInfo)
	}))
	app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			appOpen.Add(1)
		case http.StateClosed, http.StateHijacked:
			appOpen.Add(-1)
		}
	}
	app.Start()
	defer app.Close()
	appAddr := app.Listener.Addr().String()
	dm := newMetrics(prometheus.NewRegistry()).forDirection("outbound")
	fw := &h1Forwarder{m: dm, log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		headerTimeout: time.Second, idleTimeout: time.Second,
		pool: newPool(func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", appAddr)
		}, upstream.Limits{MaxIdle: 8}, nil),
		badGateway: func(err error) string { return err.Error() }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		serveOutbound(context.Background(), ln, fw, newConnListener(ln.Addr()))
		close(done)
	}()
	defer func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fw.conns.shutdown(ctx)
		<-done
	}()
	answered := func() int64 {
		c, ok := dm.codes.Load(http.StatusNonAuthoritativeInfo)
		if !ok {
			return 0
		}
		return int64(testutil.ToFloat64(c.(prometheus.Counter)))
	}
	failed := func() int64 { return int64(testutil.ToFloat64(dm.upstreamErrors)) }

	f.Fuzz(func(t *testing.T, data []byte) {
		before, beforeOK, beforeFailed := appSaw.Load(), answered(), failed()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		// The forwarder closes the connection after its last answer, and
		// counts each answer before: at EOF both counts are final.
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the forwarder neither answered nor closed within 10 s")
			}
		}
		// The forwarder may give up on an app connection (a body cut
		// short) before the app's handler has even started: the counts are
		// final only once the app has closed every connection. The client's
		// EOF may come from a lingering half-close, before the forwarder
		// has finished with the connection: it is waited for, then the
		// pool's idle connections are closed and the app is waited for.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			fw.conns.mu.Lock()
			n := len(fw.conns.conns)
			fw.conns.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the forwarder still serves %d client connections 10 s after the client closed", n)
			}
		}
		fw.pool.mu.Lock()
		idle := fw.pool.idle
		fw.pool.idle = nil
		fw.pool.mu.Unlock()
		for _, u := range idle {
			u.close()
		}
		for deadline := time.Now().Add(10 * time.Second); appOpen.Load() != 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the app still has %d connections open 10 s after the client's", appOpen.Load())
			}
		}
		saw, ok, bad := appSaw.Load()-before, answered()-beforeOK, failed()-beforeFailed
		if saw < ok || saw > ok+bad {
			t.Fatalf("the app received %d requests; the forwarder passed on %d answers and %d requests failed upstream: input %q", saw, ok, bad, data)
		}
	})
}
