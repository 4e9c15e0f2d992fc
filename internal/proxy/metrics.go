package proxy

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/upstream"
)

type metrics struct {
	requests          *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	handshakeFailures *prometheus.CounterVec
	upstreamErrors    *prometheus.CounterVec
	tcpConns          *prometheus.CounterVec
	exchanges         *prometheus.CounterVec
	overloads         *prometheus.CounterVec
	dials             *prometheus.CounterVec
	handshakes        *prometheus.CounterVec
	sessionsDeclined  *prometheus.CounterVec
	outboundRefused   *prometheus.CounterVec
	connsRefused      *prometheus.CounterVec
	connsOpen         *prometheus.GaugeVec
	pools             *poolCollector
	reg               *prometheus.Registry
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_requests_total", Help: "HTTP requests, by direction and status code.",
		}, []string{"direction", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rampart_proxy_request_duration_seconds", Help: "Time from the request head read to the response fully sent (streamed bodies: to their end; upgrades: to the 101), by direction.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"direction"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_handshake_failures_total", Help: "mTLS handshakes refused, by reason.",
		}, []string{"reason"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_upstream_errors_total", Help: "Requests that could not be forwarded, by direction.",
		}, []string{"direction"}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tcp_connections_total", Help: "Raw TCP connections, by direction and outcome.",
		}, []string{"direction", "outcome"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_token_exchanges_total", Help: "Outbound user tokens exchanged for the upstream (RFC 8693), by result: exchanged, cached, refused, error.",
		}, []string{"result"}),
		overloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_upstream_overload_total", Help: "Requests refused with 503 because every connection to the upstream was busy, by direction, listener and reason (queue_full: too many already waiting; queue_timeout: none came free in time).",
		}, []string{"direction", "listener", "reason"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_upstream_dials_total", Help: "New connections opened to the upstream (mTLS handshake included outbound), by direction, listener and result (ok, error).",
		}, []string{"direction", "listener", "result"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tls_handshakes_total", Help: "mTLS handshakes whose peer was verified, by side (server: inbound; client: to upstreams) and whether they resumed an earlier session.",
		}, []string{"side", "resumed"}),
		sessionsDeclined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_tls_sessions_declined_total", Help: "Session tickets the inbound listener declined (a full handshake instead), by reason: stale (the client certificate is due for rotation), revoked, foreign.",
		}, []string{"reason"}),
		outboundRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_outbound_callers_refused_total", Help: "Connections to a unix-socket outbound refused because the caller's uid is not allowed (or could not be read), by listener.",
		}, []string{"listener"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_connections_refused_total", Help: "Connections a listener closed to stay within its bounds, by direction, listener and reason: max_conns (closed as accepted: --inbound-max-conns or --outbound-max-conns open already), handshake_evicted (the oldest unfinished TLS handshake, cut for a new one beyond --inbound-max-handshakes), overload (closed as accepted while the proxy sheds load and --admission-overload-handshakes are under way).",
		}, []string{"direction", "listener", "reason"}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rampart_proxy_connections", Help: "Connections a listener holds, by direction, listener and state: open (all, handshakes included), handshake (TLS handshake not finished).",
		}, []string{"direction", "listener", "state"}),
		pools: &poolCollector{},
		reg:   reg,
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.handshakeFailures, m.upstreamErrors, m.tcpConns, m.exchanges,
			m.overloads, m.dials, m.handshakes, m.sessionsDeclined, m.outboundRefused, m.connsRefused, m.connsOpen, m.pools)
	}
	return m
}

// handshake counts a verified mTLS handshake (mtls.Options.OnHandshake).
func (m *metrics) handshake(side string) func(resumed bool) {
	full, resumed := m.handshakes.WithLabelValues(side, "false"), m.handshakes.WithLabelValues(side, "true")
	return func(r bool) {
		if r {
			resumed.Inc()
		} else {
			full.Inc()
		}
	}
}

// poolMetrics are the metrics of one listener's upstream connections.
type poolMetrics struct {
	direction, listener string
	full, timeout       prometheus.Counter
	dialOK, dialErr     prometheus.Counter
	pools               *poolCollector
}

func (m *metrics) pool(direction, listener string) *poolMetrics {
	return &poolMetrics{direction: direction, listener: listener, pools: m.pools,
		full:    m.overloads.WithLabelValues(direction, listener, upstream.ReasonQueueFull),
		timeout: m.overloads.WithLabelValues(direction, listener, upstream.ReasonQueueTimeout),
		dialOK:  m.dials.WithLabelValues(direction, listener, "ok"),
		dialErr: m.dials.WithLabelValues(direction, listener, "error")}
}

func (pm *poolMetrics) overload(reason string) {
	if pm == nil {
		return
	}
	if reason == upstream.ReasonQueueFull {
		pm.full.Inc()
	} else {
		pm.timeout.Inc()
	}
}

func (pm *poolMetrics) dialed(err error) {
	if pm == nil {
		return
	}
	if err != nil {
		pm.dialErr.Inc()
	} else {
		pm.dialOK.Inc()
	}
}

// watch exports p's connections and queue.
func (pm *poolMetrics) watch(p *pool) {
	pm.pools.add(poolSource{direction: pm.direction, listener: pm.listener, stats: p.stats})
}

// watchPending exports the queue of a net/http Transport (upstream.Bound),
// whose connections are not counted.
func (pm *poolMetrics) watchPending(n *atomic.Int64) {
	pm.pools.add(poolSource{direction: pm.direction, listener: pm.listener, stats: func() poolStats { return poolStats{waiting: int(n.Load())} }})
}

// poolCollector reads every pool's state at scrape time; the pools of one
// listener (its HTTP/1.1 pool, its net/http Transport) are summed.
type poolCollector struct {
	mu      sync.Mutex
	sources []poolSource
}

type poolSource struct {
	direction, listener string
	stats               func() poolStats
}

var (
	poolConnsDesc = prometheus.NewDesc("rampart_proxy_upstream_connections",
		"Connections to the upstream by state: open (in use or idle; at most --upstream-max-conns), idle, dialing. HTTP/1.1 pools only.",
		[]string{"direction", "listener", "state"}, nil)
	poolPendingDesc = prometheus.NewDesc("rampart_proxy_upstream_pending",
		"Requests waiting for a connection to the upstream (at most --upstream-max-pending).",
		[]string{"direction", "listener"}, nil)
)

func (c *poolCollector) add(s poolSource) {
	c.mu.Lock()
	c.sources = append(c.sources, s)
	c.mu.Unlock()
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConnsDesc
	ch <- poolPendingDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := append([]poolSource(nil), c.sources...)
	c.mu.Unlock()
	type key struct{ direction, listener string }
	sums := map[key]poolStats{}
	var order []key
	for _, s := range sources {
		k := key{s.direction, s.listener}
		st, seen := sums[k]
		if !seen {
			order = append(order, k)
		}
		x := s.stats()
		st.open, st.idle, st.dialing, st.waiting = st.open+x.open, st.idle+x.idle, st.dialing+x.dialing, st.waiting+x.waiting
		sums[k] = st
	}
	for _, k := range order {
		st := sums[k]
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.open), k.direction, k.listener, "open")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.idle), k.direction, k.listener, "idle")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.dialing), k.direction, k.listener, "dialing")
		ch <- prometheus.MustNewConstMetric(poolPendingDesc, prometheus.GaugeValue, float64(st.waiting), k.direction, k.listener)
	}
}

// watchSVID exports the expiry of the current SVID, read at scrape time so
// it follows rotations.
func (m *metrics) watchSVID(src *workloadapi.X509Source) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rampart_proxy_svid_not_after_timestamp_seconds", Help: "Expiry (Unix time) of the proxy's current SVID.",
	}, func() float64 {
		sv, err := src.GetX509SVID()
		if err != nil {
			return 0
		}
		return float64(sv.Certificates[0].NotAfter.Unix())
	}))
}

// directionMetrics are one direction's request metrics, looked up once
// rather than hashed from their labels on every request.
type directionMetrics struct {
	direction      string // "inbound" or "outbound"
	latency        prometheus.Observer
	upstreamErrors prometheus.Counter
	requests       *prometheus.CounterVec
	codes          sync.Map // status code (int) -> prometheus.Counter
}

func (m *metrics) forDirection(direction string) *directionMetrics {
	return &directionMetrics{direction: direction, requests: m.requests,
		latency:        m.latency.WithLabelValues(direction),
		upstreamErrors: m.upstreamErrors.WithLabelValues(direction)}
}

// request counts one answered request and the time since start.
func (d *directionMetrics) request(code int, start time.Time) {
	c, ok := d.codes.Load(code)
	if !ok {
		c, _ = d.codes.LoadOrStore(code, d.requests.WithLabelValues(d.direction, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
	d.latency.Observe(time.Since(start).Seconds())
}

type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(c int) {
	// Informational answers (103 Early Hints relayed by ReverseProxy) come
	// before the final one, which is what is counted; 101 is final.
	if w.code == 0 && (c >= 200 || c == http.StatusSwitchingProtocols) {
		w.code = c
	}
	w.ResponseWriter.WriteHeader(c)
}

func (w *codeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (trailers, deadlines).
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts the requests net/http serves (HTTP/2, gRPC) as the
// HTTP/1.1 forwarder counts its own.
func (m *metrics) instrument(direction string, h http.Handler) http.Handler {
	d := m.forDirection(direction)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &codeWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		if cw.code == 0 {
			cw.code = http.StatusOK
		}
		d.request(cw.code, start)
	})
}
