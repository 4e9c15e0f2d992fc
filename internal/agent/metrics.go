package agent

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
)

type metrics struct {
	rotations  *prometheus.CounterVec
	syncErrors prometheus.Counter
	serverUp   prometheus.Gauge
	calls      *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, a *Agent) *metrics {
	m := &metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_agent_svid_rotations_total", Help: "SVIDs obtained, by kind (agent, workload).",
		}, []string{"kind"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_agent_sync_errors_total", Help: "Failed syncs with the server.",
		}),
		serverUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_agent_server_reachable", Help: "1 if the last sync with the server succeeded.",
		}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_agent_workload_api_calls_total", Help: "Workload API calls, by method and gRPC code.",
		}, []string{"method", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.rotations, m.syncErrors, m.serverUp, m.calls, expiryCollector{a},
			collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// Call implements workload.Metrics.
func (m *metrics) Call(method string, code codes.Code) {
	m.calls.WithLabelValues(method, strings.ToLower(code.String())).Inc()
}

var expiryDesc = prometheus.NewDesc("rampart_agent_svid_not_after_timestamp_seconds",
	"Expiry (Unix time) of each SVID the agent holds.", []string{"kind", "spiffe_id", "entry_id"}, nil)

type expiryCollector struct{ a *Agent }

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	if c.a.svid != nil {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(c.a.svid.Chain[0].NotAfter.Unix()), "agent", c.a.svid.ID.String(), "")
	}
	for entryID, h := range c.a.workloads {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(h.Chain[0].NotAfter.Unix()), "workload", h.ID.String(), entryID)
	}
}
