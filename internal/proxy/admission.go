package proxy

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/admission"
	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/upstream"
)

// Admission control (package admission; decision "inbound admission
// control"): when the proxy is CPU-starved, requests are refused as they
// arrive, with 503 and Retry-After, before the policy, the app or the peer
// spend anything on them, and new TLS handshakes give way to the
// connections already open.

// Admission configures admission control.
type Admission struct {
	// Delay is the controller's configuration: Target (the tolerated
	// queueing delay; negative: never shed for delay), Interval, MaxShed.
	Delay admission.Config
	// MaxInFlight caps the requests each listener has in flight (0: the
	// upstream's MaxConns + MaxPending, beyond which the pool refuses
	// anyway; negative: no cap).
	MaxInFlight int
	// MinInFlight: a listener with this many in flight or fewer never
	// sheds for delay (0: admission.DefaultMinInFlight).
	MinInFlight int
	// OverloadHandshakes is how many TLS handshakes the inbound listener
	// runs at once while overloaded; a connection beyond it is closed as
	// accepted, before any cryptography (0: DefaultOverloadHandshakes;
	// negative: no such bound).
	OverloadHandshakes int
}

// DefaultOverloadHandshakes: while overloaded, enough handshakes at once
// that a new caller still gets in, too few to take the CPU the open
// connections' requests need.
func DefaultOverloadHandshakes() int { return 2 * runtime.GOMAXPROCS(0) }

// shedRetryAfter: a shed is over when the CPU is free again, within the
// controller's interval; the smallest Retry-After there is.
const shedRetryAfter = "1"

func (a Admission) withDefaults(up upstream.Limits) Admission {
	a.Delay = a.Delay.WithDefaults()
	if a.MaxInFlight == 0 {
		a.MaxInFlight = up.MaxConns + up.MaxPending
	}
	if a.MaxInFlight < 0 {
		a.MaxInFlight = 0
	}
	if a.MinInFlight == 0 {
		a.MinInFlight = admission.DefaultMinInFlight
	}
	if a.OverloadHandshakes == 0 {
		a.OverloadHandshakes = DefaultOverloadHandshakes()
	}
	return a
}

// Validate says which bound is unusable.
func (a Admission) Validate() error {
	return a.Delay.WithDefaults().Validate()
}

// admissionMetrics are the metrics of admission control.
type admissionMetrics struct {
	requests *prometheus.CounterVec
	delay    prometheus.Histogram
	shed     prometheus.Gauge
}

func newAdmissionMetrics(reg *prometheus.Registry) *admissionMetrics {
	a := &admissionMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_proxy_admission_requests_total",
			Help: "Requests by admission result, direction and listener: admitted, or refused with 503 by reason (in_flight: the listener's --admission-max-in-flight were in flight; queue_delay: the proxy was overloaded and shed it).",
		}, []string{"direction", "listener", "result"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rampart_proxy_admission_queue_delay_seconds",
			Help:    "The proxy's queueing delay, one sample per tick: the median time its goroutines waited, runnable, for a CPU (the signal admission control sheds on).",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .02, .05, .1, .25, 1},
		}),
		shed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_proxy_admission_shed_ratio", Help: "The fraction of arriving requests shed now for queueing delay (0: not overloaded).",
		}),
	}
	if reg != nil {
		reg.MustRegister(a.requests, a.delay, a.shed)
	}
	return a
}

// startAdmission starts the controller's sampler (until ctx ends), or
// returns nil if shedding for delay is off.
func startAdmission(ctx context.Context, cfg Admission, am *admissionMetrics, run func(func())) *admission.Controller {
	if cfg.Delay.Target < 0 {
		return nil
	}
	c := admission.NewController(cfg.Delay)
	s := admission.NewSampler()
	run(func() {
		s.Run(ctx, c, admission.DefaultTick, func(d time.Duration) {
			am.delay.Observe(d.Seconds())
			am.shed.Set(c.State().Shed)
		})
	})
	return c
}

// listenerGate is one listener's gate and its counters.
type listenerGate struct {
	g                        *admission.Gate
	admitted, inFlight, shed prometheus.Counter
}

func newListenerGate(c *admission.Controller, cfg Admission, am *admissionMetrics, direction, listener string) *listenerGate {
	return &listenerGate{g: admission.NewGate(c, cfg.MaxInFlight, cfg.MinInFlight),
		admitted: am.requests.WithLabelValues(direction, listener, "admitted"),
		inFlight: am.requests.WithLabelValues(direction, listener, string(admission.ReasonInFlight)),
		shed:     am.requests.WithLabelValues(direction, listener, string(admission.ReasonQueueDelay))}
}

// admit decides for one request; a refusal says what to answer (503,
// Retry-After) and, inbound, is recorded as a decision by guard. ok: call
// done when the request is over.
func (l *listenerGate) admit(r *http.Request, guard *authz.Guard, peer spiffeid.ID) *authz.Refusal {
	if l == nil {
		return nil
	}
	ok, reason := l.g.Admit()
	if ok {
		l.admitted.Inc()
		return nil
	}
	detail := "this proxy is overloaded: retry later"
	if reason == admission.ReasonInFlight {
		l.inFlight.Inc()
		detail = "this proxy has its maximum of requests in flight: retry later"
	} else {
		l.shed.Inc()
	}
	if guard != nil {
		guard.Shed(r, peer, "shed: "+string(reason))
	}
	return &authz.Refusal{Status: http.StatusServiceUnavailable, RetryAfter: shedRetryAfter, Detail: detail}
}

func (l *listenerGate) done() {
	if l != nil {
		l.g.Done()
	}
}

// middleware admits net/http's requests (HTTP/2, gRPC) as the HTTP/1.1
// forwarder admits its own; guard nil: outbound, nothing recorded.
func (l *listenerGate) middleware(guard *authz.Guard, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var peer spiffeid.ID
		if guard != nil {
			peer, _ = mtls.PeerID(r.TLS)
		}
		if rf := l.admit(r, guard, peer); rf != nil {
			rf.Write(w)
			return
		}
		defer l.done()
		next.ServeHTTP(w, r)
	})
}
