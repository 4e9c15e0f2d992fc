package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/upstream"
)

// tlsPair is an outbound HTTP/1.1 forwarder whose pool opens mTLS
// connections (real TLS 1.3 on loopback, sessions resumed) to a peer that
// serves app over HTTP/1.1, as an outbound proxy does to its peer.
type tlsPair struct {
	*fwd
	peer       *http.Server
	peerConns  atomic.Int64 // TCP connections the peer accepted
	handshakes struct{ full, resumed atomic.Int64 }
	metrics    *metrics
	timers     chan *fakeTimer // the queue deadlines started, for the test to fire
}

func newTLSPair(t *testing.T, l upstream.Limits, app http.Handler) *tlsPair {
	t.Helper()
	pki := newTestPKI(t)
	server, client := pki.svid(t, "/payments"), pki.svid(t, "/orders")
	x := &tlsPair{fwd: &fwd{t: t}, timers: make(chan *fakeTimer, 64)}
	peerTLS := mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td),
		OnHandshake: func(resumed bool) {
			if resumed {
				x.handshakes.resumed.Add(1)
			} else {
				x.handshakes.full.Add(1)
			}
		}})
	peerTLS.NextProtos = []string{"http/1.1"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.peer = &http.Server{Handler: app, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			x.peerConns.Add(1)
		}
	}}
	go x.peer.Serve(tls.NewListener(ln, peerTLS))
	t.Cleanup(func() { x.peer.Close() })
	clientCfg := mtls.ClientConfig(mtls.Options{SVID: client, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
	clientCfg.NextProtos = []string{"http/1.1"}
	dialer := &mtls.Dialer{Config: clientCfg}
	addr := ln.Addr().String()
	x.metrics = newMetrics(prometheus.NewRegistry())
	pm := x.metrics.pool("outbound", "test")
	x.f = &h1Forwarder{m: x.metrics.forDirection("outbound"), log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		pool:       newPool(func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }, l, pm),
		badGateway: func(err error) string { return "upstream failed: " + err.Error() }}
	x.f.pool.newTimer = func(time.Duration) (<-chan time.Time, func() bool) {
		ft := &fakeTimer{c: make(chan time.Time)}
		x.timers <- ft
		return ft.c, func() bool { ft.stopped.Store(true); return true }
	}
	t.Cleanup(x.f.pool.closeAll)
	x.serveOn(t, func(ln net.Listener) { serveOutbound(context.Background(), ln, x.f, newConnListener(ln.Addr())) })
	return x
}

// fakeTimer is a queue deadline that passes when the test says.
type fakeTimer struct {
	c       chan time.Time
	stopped atomic.Bool // the request got its connection
}

// fireTimers ends the queue deadlines of the n requests still waiting.
func (x *tlsPair) fireTimers(t *testing.T, n int) {
	t.Helper()
	for n > 0 {
		select {
		case ft := <-x.timers:
			if !ft.stopped.Load() {
				close(ft.c)
				n--
			}
		case <-time.After(10 * time.Second):
			t.Fatal("fewer requests waiting than expected")
		}
	}
}

type answer struct {
	code       int
	retryAfter string
	ctype      string
	detail     string
	err        error
}

// send makes one request on a new connection.
func (x *tlsPair) send(path string) answer {
	c, err := net.Dial("tcp", x.addr)
	if err != nil {
		return answer{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: payments\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return answer{err: err}
	}
	b, _ := io.ReadAll(resp.Body)
	var p struct{ Detail string }
	json.Unmarshal(b, &p)
	return answer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), ctype: resp.Header.Get("Content-Type"), detail: p.Detail}
}

// slowApp answers /slow once release is closed, and counts the requests it
// holds at once.
type slowApp struct {
	release        chan struct{}
	inFlight, most atomic.Int64
	served         atomic.Int64
	paths          sync.Map // path -> count
}

func newSlowApp() *slowApp { return &slowApp{release: make(chan struct{})} }

func (a *slowApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.served.Add(1)
	v, _ := a.paths.LoadOrStore(r.URL.Path, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for m := a.most.Load(); n > m && !a.most.CompareAndSwap(m, n); m = a.most.Load() {
	}
	if strings.HasPrefix(r.URL.Path, "/slow") {
		<-a.release
	}
	io.WriteString(w, "ok")
}

func (a *slowApp) count(path string) int64 {
	v, ok := a.paths.Load(path)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// Under a slow upstream, the pool keeps to its cap: the requests beyond it
// wait in the queue, and are refused with a 503 (Retry-After, problem+json)
// when their deadline passes, or at once when the queue is full; none of
// them reaches the upstream, and no connection beyond the cap is opened.
// Once the upstream answers again, requests pass on the same connections.
func TestPoolCapQueueDeadlineAnd503UnderSlowUpstream(t *testing.T) {
	app := newSlowApp()
	x := newTLSPair(t, upstream.Limits{MaxConns: 2, MaxPending: 3, MaxDialing: 2, QueueTimeout: 1500 * time.Millisecond}, app)
	results := make(chan answer, 16)
	for i := range 2 {
		go func() { results <- x.send(fmt.Sprintf("/slow/%d", i)) }()
	}
	waitFor(t, "two requests held by the upstream", func() bool { return app.inFlight.Load() == 2 })
	for i := range 3 {
		go func() { results <- x.send(fmt.Sprintf("/queued/%d", i)) }()
	}
	waitFor(t, "three requests in the queue", func() bool { return x.f.pool.stats().waiting == 3 })

	full := x.send("/full")
	if full.code != http.StatusServiceUnavailable || full.retryAfter != "2" || full.ctype != "application/problem+json" ||
		!strings.Contains(full.detail, "too many requests waiting") {
		t.Fatalf("with the queue full: %+v, want 503, Retry-After 2, a problem naming the queue", full)
	}
	x.fireTimers(t, 3)
	for range 3 {
		a := <-results
		if a.code != http.StatusServiceUnavailable || a.retryAfter != "2" || a.ctype != "application/problem+json" ||
			!strings.Contains(a.detail, "all 2 connections stayed busy") {
			t.Fatalf("past the queue deadline: %+v, want 503, Retry-After 2, a problem naming the busy connections", a)
		}
	}
	if n := app.served.Load(); n != 2 {
		t.Fatalf("the upstream saw %d requests, want only the 2 it holds", n)
	}
	if n := x.peerConns.Load(); n != 2 {
		t.Fatalf("%d connections opened to the upstream, cap 2", n)
	}

	close(app.release)
	for range 2 {
		if a := <-results; a.code != 200 {
			t.Fatalf("held request: %+v", a)
		}
	}
	// As many at once as the queue holds: all served. (Not the queue plus
	// the connections: a client's next request can arrive before the pool
	// has taken its previous connection back, and on a loaded machine it
	// does, so the queue must hold every client.)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			for j := range 4 {
				if a := x.send(fmt.Sprintf("/after/%d/%d", i, j)); a.code != 200 {
					t.Errorf("after the slowdown: %+v", a)
				}
			}
		})
	}
	wg.Wait()
	if n, most := x.peerConns.Load(), app.most.Load(); n != 2 || most > 2 {
		t.Fatalf("%d connections to the upstream, %d requests at once; cap 2", n, most)
	}
	for reason, want := range map[string]float64{upstream.ReasonQueueFull: 1, upstream.ReasonQueueTimeout: 3} {
		if got := testutil.ToFloat64(x.metrics.overloads.WithLabelValues("outbound", "test", reason)); got != want {
			t.Errorf("overloads %s: %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(x.metrics.requests.WithLabelValues("outbound", "503")); got != 4 {
		t.Errorf("503s counted: %v, want 4", got)
	}
}

// The handshake storm of issue 27: when the upstream slows down, requests
// that find no idle connection must not each open one. Fifty concurrent
// clients over a cap of four: four mTLS connections are opened (the first
// in full, the others resuming its session), each request takes a
// connection another gave back, and all are answered.
func TestPoolWaitersTakeReleasedConnectionsNotNewHandshakes(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // a slow upstream
		io.WriteString(w, "ok")
	})
	// The queue stands all along here (50 clients, 4 connections): with
	// the standing queue's short deadline some would be refused, which is
	// TestPoolStandingQueueWaitsTarget's subject, not this test's.
	x := newTLSPair(t, upstream.Limits{MaxConns: 4, MaxDialing: 1, QueueTimeout: time.Minute, QueueTarget: time.Minute}, app)
	x.f.pool.newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		tm := time.NewTimer(d)
		return tm.C, tm.Stop
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 50 {
		wg.Go(func() {
			for j := range 4 {
				if a := x.send(fmt.Sprintf("/r/%d/%d", i, j)); a.code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 200 requests failed", failed.Load())
	}
	full, resumed := x.handshakes.full.Load(), x.handshakes.resumed.Load()
	if x.peerConns.Load() > 4 || full+resumed > 4 {
		t.Fatalf("%d connections, %d full and %d resumed handshakes for 200 requests over a cap of 4", x.peerConns.Load(), full, resumed)
	}
	// Whether a second dial resumes depends on the first connection having
	// read its session ticket by then (mtls tests resumption itself).
	t.Logf("%d full and %d resumed handshakes", full, resumed)
}

// A request whose client left while it waited is not forwarded: the
// connection it would have used goes to the next request.
func TestPoolDropsRequestsOfClientsThatLeft(t *testing.T) {
	app := newSlowApp()
	x := newTLSPair(t, upstream.Limits{MaxConns: 1, QueueTimeout: time.Minute}, app)
	held := make(chan answer, 1)
	go func() { held <- x.send("/slow") }()
	waitFor(t, "the request held by the upstream", func() bool { return app.inFlight.Load() == 1 })
	c, err := net.Dial("tcp", x.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /abandoned HTTP/1.1\r\nHost: payments\r\n\r\n")
	waitFor(t, "the request in the queue", func() bool { return x.f.pool.stats().waiting == 1 })
	c.Close() // its timeout passed: the client goes
	close(app.release)
	if a := <-held; a.code != 200 {
		t.Fatalf("held request: %+v", a)
	}
	if a := x.send("/next"); a.code != 200 {
		t.Fatalf("next request: %+v", a)
	}
	if n := app.count("/abandoned"); n != 0 {
		t.Fatalf("the request of a client that left reached the upstream (%d times)", n)
	}
}

// The dial rate: a burst of MaxDialing, then DialRate a second (the pool's
// clock is a test clock: no waiting).
func TestPoolDialRate(t *testing.T) {
	var dials atomic.Int64
	gate := make(chan struct{})
	p := newPool(func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		<-gate
		return nil, errors.New("refused")
	}, upstream.Limits{MaxConns: 100, MaxDialing: 3, DialRate: 2, QueueTimeout: time.Minute}, nil)
	defer p.closeAll()
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	p.bucket = upstream.NewBucket(2, 3, now)
	for range 10 {
		go p.get(context.Background())
	}
	waitFor(t, "ten requests waiting", func() bool { return p.stats().waiting == 10 })
	waitFor(t, "the burst of 3 dials", func() bool { return dials.Load() == 3 })
	// The burst spent, the dials in flight failing one by one: no new dial
	// until the clock gives a token.
	p.mu.Lock()
	p.dialing = 0 // as if the three had ended
	p.dialLocked()
	p.mu.Unlock()
	if n := dials.Load(); n != 3 {
		t.Fatalf("%d dials with no token left, want 3", n)
	}
	now = now.Add(500 * time.Millisecond)
	p.mu.Lock()
	p.dialLocked()
	started := p.dialing
	p.dialLocked()
	p.mu.Unlock()
	if started != 1 || p.stats().dialing != 1 {
		t.Fatalf("%d dials started half a second later at 2/s, want 1", started)
	}
	waitFor(t, "the fourth dial", func() bool { return dials.Load() == 4 })
	close(gate)
}

// An unreachable upstream fails the waiting requests at once with the
// reason (a 502), not at their queue deadline.
func TestPoolUnreachableUpstreamFailsFast(t *testing.T) {
	p := newPool(func(ctx context.Context) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}, upstream.Limits{QueueTimeout: time.Hour}, nil)
	defer p.closeAll()
	done := make(chan error, 5)
	for range 5 {
		go func() {
			_, _, err := p.get(context.Background())
			done <- err
		}()
	}
	for range 5 {
		select {
		case err := <-done:
			if err == nil || errors.Is(err, upstream.ErrOverloaded) || !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("got %v, want the dial's error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request waited for an unreachable upstream")
		}
	}
}

// Warm connections: the pool opens MinIdle before any request, and keeps
// that many after some age out.
func TestPoolKeepsMinIdleWarm(t *testing.T) {
	app := newSlowApp()
	x := newTLSPair(t, upstream.Limits{MaxConns: 8, MinIdle: 2, QueueTimeout: time.Minute}, app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go x.f.pool.reap(ctx, time.Hour)
	waitFor(t, "two warm connections", func() bool { return x.f.pool.stats().idle == 2 })
	if n := app.served.Load(); n != 0 {
		t.Fatalf("warming sent %d requests", n)
	}
	u, _, err := x.f.pool.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u.close() // the peer closed it, say
	waitFor(t, "the warm connection replaced", func() bool { s := x.f.pool.stats(); return s.idle == 2 && s.open == 2 })
}

// A request joining a queue that has stood (never emptied) for
// QueueInterval with every connection open and busy waits QueueTarget, not
// QueueTimeout: overload is refused at once, while a burst (a queue younger
// than the interval, or one that emptied since) and a queue waiting for
// connections still being opened wait the full timeout.
func TestPoolStandingQueueWaitsTarget(t *testing.T) {
	l := upstream.Limits{MaxConns: 1, MaxDialing: 1, QueueTimeout: time.Minute, QueueTarget: 10 * time.Millisecond, QueueInterval: 100 * time.Millisecond}

	t.Run("every connection busy", func(t *testing.T) {
		// The first dial opens the one connection allowed; no other is
		// dialled while it is open.
		var dials atomic.Int32
		c := clockedPool(t, l, func(ctx context.Context) (net.Conn, error) {
			if dials.Add(1) == 1 {
				return pipeConn(t), nil
			}
			return hangingDial(ctx)
		})
		c.join() // gets the dialled connection, and holds it
		if r := <-c.results; r.err != nil {
			t.Fatalf("the first request: %v", r.err)
		}
		var waiting []deadline
		for _, step := range []struct {
			after time.Duration // since the previous request joined
			want  time.Duration
			why   string
		}{
			{0, time.Minute, "first in an empty queue"},
			{50 * time.Millisecond, time.Minute, "the queue has stood 50 ms"},
			{49 * time.Millisecond, time.Minute, "the queue has stood 99 ms"},
			{time.Millisecond, l.QueueTarget, "the queue has stood 100 ms"},
			{time.Second, l.QueueTarget, "the queue has stood 1.1 s"},
		} {
			c.advance(step.after)
			dl := c.join()
			if dl.d != step.want {
				t.Fatalf("%s: waits %v, want %v", step.why, dl.d, step.want)
			}
			waiting = append(waiting, dl)
		}
		for _, dl := range waiting {
			c.release(dl)
			if r := <-c.results; !errors.Is(r.err, upstream.ErrOverloaded) {
				t.Fatalf("a request past its deadline: %v, want an overload refusal", r.err)
			}
		}
		if st := c.p.stats(); st.waiting != 0 {
			t.Fatalf("%d still waiting", st.waiting)
		}
		// Emptied, the queue starts over: the next request is a burst's.
		c.advance(time.Second)
		if dl := c.join(); dl.d != time.Minute {
			t.Fatalf("first request after the queue emptied waits %v, want %v", dl.d, time.Minute)
		} else {
			c.release(dl)
			<-c.results
		}
		if n := dials.Load(); n != 1 {
			t.Fatalf("%d dials, want 1", n)
		}
	})

	t.Run("connections still being opened", func(t *testing.T) {
		// The upstream never answers a dial: the queue stands because the
		// pool, below its cap of 2, waits for its one dial at a time (a
		// cold pool), which is not overload.
		l := l
		l.MaxConns = 2
		c := clockedPool(t, l, hangingDial)
		first := c.join()
		c.advance(time.Second)
		if dl := c.join(); dl.d != time.Minute {
			t.Fatalf("a request joining a queue that stood 1 s waiting for a dial waits %v, want %v", dl.d, time.Minute)
		} else {
			c.release(dl)
			<-c.results
		}
		c.release(first)
		<-c.results
	})

	t.Run("the one connection being replaced", func(t *testing.T) {
		// At the cap, a connection that closes is replaced by a dial; the
		// queue that stood meanwhile is still overload, or every
		// reconnection would let a queue of one-minute waits build.
		var dials atomic.Int32
		c := clockedPool(t, l, func(ctx context.Context) (net.Conn, error) {
			if dials.Add(1) == 1 {
				return pipeConn(t), nil
			}
			return hangingDial(ctx)
		})
		c.join()
		held := <-c.results
		if held.err != nil {
			t.Fatalf("the first request: %v", held.err)
		}
		waiter := c.join() // the queue starts standing
		c.advance(time.Second)
		held.u.close() // the pool dials its replacement for the waiter
		waitFor(t, "the replacement dial", func() bool { return dials.Load() == 2 })
		if dl := c.join(); dl.d != l.QueueTarget {
			t.Fatalf("a request joining a queue that stood 1 s while the one connection was replaced waits %v, want %v", dl.d, l.QueueTarget)
		} else {
			c.release(dl)
			<-c.results
		}
		c.release(waiter)
		<-c.results
	})
}

// hangingDial is an upstream that never answers a dial.
func hangingDial(ctx context.Context) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// pipeConn is one end of a connection nothing answers on, closed with the test.
func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	return a
}

// deadline is one request's queue deadline as the pool started it.
type deadline struct {
	d    time.Duration
	fire chan time.Time
}

// clocked is a pool whose clock and queue deadlines the test drives.
type clocked struct {
	t       *testing.T
	p       *pool
	mu      sync.Mutex
	now     time.Time
	started chan deadline
	results chan waitResult
}

func clockedPool(t *testing.T, l upstream.Limits, dial func(context.Context) (net.Conn, error)) *clocked {
	c := &clocked{t: t, now: time.Now(), started: make(chan deadline, 8), results: make(chan waitResult, 8)}
	c.p = newPool(dial, l, nil)
	t.Cleanup(c.p.closeAll)
	c.p.now = func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.now
	}
	c.p.newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		ch := make(chan time.Time)
		c.started <- deadline{d, ch}
		return ch, func() bool { return true }
	}
	return c
}

func (c *clocked) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// join sends a request to the pool and returns its queue deadline; its
// result (the connection it got, which it keeps, or the error) comes on
// results.
func (c *clocked) join() deadline {
	c.t.Helper()
	go func() {
		u, _, err := c.p.get(context.Background())
		c.results <- waitResult{u, err}
	}()
	select {
	case dl := <-c.started:
		return dl
	case <-time.After(10 * time.Second):
		c.t.Fatal("the request did not join the queue")
		return deadline{}
	}
}

// release ends dl's wait (its deadline passes, unless it already has a
// connection).
func (c *clocked) release(dl deadline) { close(dl.fire) }
