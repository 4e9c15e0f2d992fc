package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/admission"
	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/upstream"
	"github.com/rampartsec/rampart/sdk/decision"
)

// admittedInbound is an inbound listener wired as Run wires it (h1
// forwarder, net/http for HTTP/2, both behind one gate), with a guard that
// records its decisions.
type admittedInbound struct {
	addr   string
	client *x509svid.SVID
	cfg    *tls.Config // the client's, HTTP/1.1
	am     *admissionMetrics
	ctl    *admission.Controller

	mu     sync.Mutex
	events []decision.Event
}

func (x *admittedInbound) sheds() (n int, caller string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.events {
		if !e.Allowed && e.Reason != "" && e.Reason[:5] == "shed:" {
			n++
			caller = e.Caller
		}
	}
	return n, caller
}

func newAdmittedInbound(t *testing.T, app http.Handler, adm Admission) *admittedInbound {
	t.Helper()
	pki := newTestPKI(t)
	server := pki.svid(t, "/payments")
	x := &admittedInbound{client: pki.svid(t, "/orders")}
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.Compile(p)
	q := &mtls.Quarantine{Self: server.ID}
	guard := authz.NewGuard(authz.GuardConfig{Service: server.ID, Quarantine: q, Sink: decision.SinkFunc(func(_ context.Context, e decision.Event) {
		x.mu.Lock()
		x.events = append(x.events, e)
		x.mu.Unlock()
	})})
	guard.SetPolicy(eng)

	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: app}
	go appSrv.Serve(appLn)
	t.Cleanup(func() { appSrv.Close() })
	appAddr := appLn.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	m := newMetrics(prometheus.NewRegistry())
	x.am = newAdmissionMetrics(prometheus.NewRegistry())
	adm = adm.withDefaults(upstream.DefaultLimits())
	x.ctl = startAdmission(ctx, adm, x.am, func(f func()) { wg.Go(f) })
	gate := newListenerGate(x.ctl, adm, x.am, "inbound", "test")
	f := &h1Forwarder{guard: guard, gate: gate, m: m.forDirection("inbound"), log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		pool: newPool(func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", appAddr)
		}, upstream.Limits{}, nil),
		badGateway: func(err error) string { return err.Error() }}
	h2srv, err := newInboundServer(&Inbound{App: appAddr}, guard, gate, m, m.pool("inbound", "test"), upstream.Limits{}, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td), Quarantine: q})
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
		serveInbound(context.Background(), ln, tlsCfg, authz.NewConns(q), f, h2, m)
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
	x.cfg = mtls.ClientConfig(mtls.Options{SVID: x.client, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
	x.cfg.NextProtos = []string{"http/1.1"}
	return x
}

func (x *admittedInbound) httpClient(h2 bool) *http.Client {
	cfg := x.cfg.Clone()
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}
	if h2 {
		cfg.NextProtos = []string{"h2"}
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (code int, retryAfter string, took time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, "", time.Since(start)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)
}

// The attack: a caller holds requests open against a slow app (or the app
// is slow on its own) to take every slot of the listener. Beyond the cap,
// a request is answered 503 with Retry-After at once, over HTTP/1.1 and
// HTTP/2, without reaching the app, and recorded as a decision with the
// caller's identity; once the app answers, requests are served again.
func TestAdmissionCapsInFlightWithSlowApp(t *testing.T) {
	release := make(chan struct{})
	var reached atomic.Int64
	x := newAdmittedInbound(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}), Admission{Delay: admission.Config{Target: -1}, MaxInFlight: 2})
	h1, h2 := x.httpClient(false), x.httpClient(true)
	var slow sync.WaitGroup
	for range 2 {
		slow.Go(func() {
			if code, _, _ := get(t, h1, "https://"+x.addr+"/slow"); code != 200 {
				t.Errorf("slow request: %d", code)
			}
		})
	}
	waitFor(t, "two requests at the app", func() bool { return reached.Load() == 2 })
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h1", h1}, {"h2", h2}} {
		code, ra, took := get(t, c.client, "https://"+x.addr+"/fast")
		if code != http.StatusServiceUnavailable || ra != shedRetryAfter {
			t.Fatalf("%s: third request in flight: %d, Retry-After %q; want 503, %s", c.name, code, ra, shedRetryAfter)
		}
		if took > 2*time.Second {
			t.Errorf("%s: the refusal took %v", c.name, took)
		}
	}
	if n := reached.Load(); n != 2 {
		t.Fatalf("the app saw %d requests; the refused ones must not reach it", n)
	}
	if n, caller := x.sheds(); n != 2 || caller != x.client.ID.String() {
		t.Fatalf("%d sheds recorded (caller %q), want 2 by %s", n, caller, x.client.ID)
	}
	if v := testutil.ToFloat64(x.am.requests.WithLabelValues("inbound", "test", "in_flight")); v != 2 {
		t.Fatalf("in_flight refusals counted: %v, want 2", v)
	}
	close(release)
	slow.Wait()
	for _, c := range []*http.Client{h1, h2} {
		if code, _, _ := get(t, c, "https://"+x.addr+"/fast"); code != 200 {
			t.Fatalf("after the slow requests ended: %d, want 200", code)
		}
	}
}

// A CPU-starved proxy (goroutines that keep every CPU busy, so a request's
// goroutine waits tens of milliseconds each time it wakes) sheds arriving
// requests with 503 and Retry-After after the controller's interval,
// recording each as a decision; once the CPU is free again it stops
// shedding within a fraction of a second and serves every request.
func TestAdmissionShedsWhenCPUStarvedAndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("spins the CPU")
	}
	x := newAdmittedInbound(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		Admission{Delay: admission.Config{Target: 10 * time.Millisecond, Interval: 50 * time.Millisecond}, MinInFlight: 1})
	h1 := x.httpClient(false)
	var ok, shed, other atomic.Int64
	var shedSlow atomic.Int64
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopLoad) }); load.Wait() }
	defer stop()
	for range 8 {
		load.Go(func() {
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				code, ra, took := get(t, h1, "https://"+x.addr+"/")
				switch {
				case code == 200:
					ok.Add(1)
				case code == 503 && ra == shedRetryAfter:
					shed.Add(1)
					if took > time.Second {
						shedSlow.Add(1)
					}
				default:
					other.Add(1)
				}
			}
		})
	}
	// Starve the CPU until the controller sheds (bounded).
	spin, stopSpin := context.WithCancel(context.Background())
	var spinners sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		spinners.Go(func() {
			for spin.Err() == nil {
				for i := 0; i < 1e6; i++ {
				}
			}
		})
	}
	deadline := time.Now().Add(15 * time.Second)
	for shed.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopSpin()
	spinners.Wait()
	if shed.Load() == 0 {
		t.Fatalf("no request shed under starvation (%d served; controller %+v)", ok.Load(), x.ctl.State())
	}
	// Recovery: once the CPU is free (and the test's own load stops: on a
	// loaded machine it could keep the proxy starved), the controller
	// leaves overload and requests are served again.
	stopped := time.Now()
	stop()
	waitFor(t, "the controller to leave overload", func() bool { return !x.ctl.Overloaded() })
	recovered := time.Since(stopped)
	for i := range 20 {
		if code, _, _ := get(t, h1, "https://"+x.addr+"/"); code != 200 {
			t.Fatalf("request %d after recovery: %d", i, code)
		}
	}
	if other.Load() != 0 {
		t.Fatalf("%d answers neither 200 nor 503 with Retry-After", other.Load())
	}
	if shedSlow.Load() > shed.Load()/10 {
		t.Fatalf("%d of %d sheds took over a second", shedSlow.Load(), shed.Load())
	}
	n, caller := x.sheds()
	if int64(n) != shed.Load() || caller != x.client.ID.String() {
		t.Fatalf("%d sheds recorded as decisions (caller %q); %d answered", n, caller, shed.Load())
	}
	if v := testutil.ToFloat64(x.am.requests.WithLabelValues("inbound", "test", "queue_delay")); int64(v) != shed.Load() {
		t.Fatalf("queue_delay refusals counted %v, answered %d", v, shed.Load())
	}
	t.Logf("%d served, %d shed; overload ended %v after the CPU was freed", ok.Load(), shed.Load(), recovered)
}

// While overloaded, the inbound listener runs at most so many handshakes
// at once: a new connection beyond them is closed as accepted, before any
// cryptography, and counted; connections already open are not touched.
func TestConnLimitOverloadHandshakes(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	l := newConnLimit(100, 50, m, "inbound", "test")
	var over atomic.Bool
	now := time.Unix(1_700_000_000, 0)
	l.overloaded, l.overloadHandshakes, l.now = over.Load, 2, func() time.Time { return now }
	pipe := func() net.Conn { a, b := net.Pipe(); t.Cleanup(func() { a.Close(); b.Close() }); return a }
	var in []*limitedConn
	for range 3 {
		lc, victim := l.admit(pipe())
		if lc == nil || victim != nil {
			t.Fatal("refused while not overloaded")
		}
		in = append(in, lc)
	}
	over.Store(true)
	if lc, _ := l.admit(pipe()); lc != nil {
		t.Fatal("a 4th handshake admitted while overloaded with 3 under way (bound 2)")
	}
	endHandshake(in[0])
	endHandshake(in[1])
	if lc, _ := l.admit(pipe()); lc == nil {
		t.Fatal("refused with 1 handshake under way (bound 2)")
	}
	if lc, _ := l.admit(pipe()); lc != nil {
		t.Fatal("admitted a 3rd handshake at once while overloaded")
	}
	if v := testutil.ToFloat64(m.connsRefused.WithLabelValues("inbound", "test", "overload")); v != 2 {
		t.Fatalf("overload refusals counted: %v, want 2", v)
	}
	if l.open != 4 {
		t.Fatalf("%d connections open, want 4 (the refused ones are not counted)", l.open)
	}
	over.Store(false)
	if lc, _ := l.admit(pipe()); lc == nil {
		t.Fatal("refused after the overload ended")
	}
}

// The attack: while the proxy is overloaded, a caller opens a few TCP
// connections and never finishes their handshakes, to hold the few places
// overload leaves and shut every new caller out for the handshake timeout.
// A handshake older than stalledHandshake gives its place to a new one.
func TestConnLimitOverloadStalledHandshakesGiveWay(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	l := newConnLimit(100, 50, m, "inbound", "test")
	now := time.Unix(1_700_000_000, 0)
	l.overloaded, l.overloadHandshakes, l.now = func() bool { return true }, 2, func() time.Time { return now }
	pipe := func() net.Conn { a, b := net.Pipe(); t.Cleanup(func() { a.Close(); b.Close() }); return a }
	stalled := []*limitedConn{}
	for range 2 {
		lc, _ := l.admit(pipe())
		if lc == nil {
			t.Fatal("refused under the bound")
		}
		stalled = append(stalled, lc)
	}
	now = now.Add(stalledHandshake / 2)
	if lc, _ := l.admit(pipe()); lc != nil {
		t.Fatal("a young handshake gave way")
	}
	now = now.Add(stalledHandshake)
	lc, victim := l.admit(pipe())
	if lc == nil || victim != stalled[0] {
		t.Fatalf("a new caller was shut out by handshakes stalled for %v (admitted %v, victim %p, want %p)", 3*stalledHandshake/2, lc != nil, victim, stalled[0])
	}
	victim.Close()
	if v := testutil.ToFloat64(m.connsRefused.WithLabelValues("inbound", "test", "handshake_evicted")); v != 1 {
		t.Fatalf("evictions counted: %v, want 1", v)
	}
	if l.handshakes.Len() != 2 {
		t.Fatalf("%d handshakes under way, want 2", l.handshakes.Len())
	}
}
