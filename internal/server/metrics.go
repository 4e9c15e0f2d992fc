package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rampartsec/rampart/internal/identity"
)

type metrics struct {
	svidsIssued       *prometheus.CounterVec
	issueFailures     *prometheus.CounterVec
	attestations      *prometheus.CounterVec
	renewals          prometheus.Counter
	handshakeFailures *prometheus.CounterVec
	adminAuthFailures prometheus.Counter
	revocations       prometheus.Gauge
	auditFailures     prometheus.Counter
	requests          *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	downstreamCAs     *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, ca *identity.CA) *metrics {
	m := &metrics{
		downstreamCAs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_downstream_cas_total", Help: "Downstream CA requests (POST /v1/ca/downstream), by outcome (minted, refused, failed).",
		}, []string{"outcome"}),
		svidsIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_svids_issued_total", Help: "SVIDs signed, by kind (workload, agent, jwt, server).",
		}, []string{"kind"}),
		issueFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_svid_issue_failures_total", Help: "SVID requests refused or failed, by reason.",
		}, []string{"reason"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_agent_attestations_total", Help: "Agent attestations with a join token, by outcome.",
		}, []string{"outcome"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_server_agent_renewals_total", Help: "Agent SVID renewals.",
		}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_client_cert_failures_total", Help: "Client certificates refused at the TLS handshake, by reason.",
		}, []string{"reason"}),
		adminAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_server_admin_auth_failures_total", Help: "Admin calls refused for a missing or wrong token.",
		}),
		revocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_server_revoked_certificates", Help: "Revoked certificates not yet expired.",
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_server_audit_write_failures_total", Help: "Audit entries that could not be written (alert on any).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_server_http_requests_total", Help: "API requests, by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rampart_server_http_request_duration_seconds", Help: "API request latency, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}, []string{"route"}),
	}
	reg.MustRegister(m.svidsIssued, m.issueFailures, m.attestations, m.renewals, m.handshakeFailures,
		m.adminAuthFailures, m.downstreamCAs, m.revocations, m.auditFailures, m.requests, m.latency,
		identity.ExpiryCollector{CA: ca}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
