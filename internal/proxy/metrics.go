package proxy

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type metrics struct {
	requests          *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	handshakeFailures *prometheus.CounterVec
	upstreamErrors    *prometheus.CounterVec
	tcpConns          *prometheus.CounterVec
	exchanges         *prometheus.CounterVec
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
		reg: reg,
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.handshakeFailures, m.upstreamErrors, m.tcpConns, m.exchanges)
	}
	return m
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
