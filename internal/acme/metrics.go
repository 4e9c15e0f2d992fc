package acme

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	orders            *prometheus.CounterVec
	challenges        *prometheus.CounterVec
	challengeFailures *prometheus.CounterVec
	refused           *prometheus.CounterVec
	issued            prometheus.Counter
	revoked           prometheus.Counter
	issuance          prometheus.Histogram
	orderDuration     prometheus.Histogram
	certsValid        prometheus.Gauge
	certsNearExpiry   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_acme_orders_total", Help: "ACME orders, by event: created, refused (name policy, profile, replaces), valid (certificate issued), failed.",
		}, []string{"event"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_acme_challenges_total", Help: "ACME challenge validations started, by type.",
		}, []string{"type"}),
		challengeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_acme_challenge_failures_total", Help: "ACME challenge validations that failed, by type and ACME error type (connection, dns, tls, incorrectResponse, unauthorized).",
		}, []string{"type", "error"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_acme_problems_total", Help: "ACME requests answered with a problem document, by ACME error type.",
		}, []string{"error"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_acme_certificates_issued_total", Help: "Certificates issued through ACME.",
		}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_acme_certificates_revoked_total", Help: "ACME certificates revoked (by their account, their key, or an operator).",
		}),
		issuance: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rampart_acme_issuance_duration_seconds", Help: "Time to answer a finalize request that issued a certificate (CSR checks, signing, storing).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
		orderDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rampart_acme_order_duration_seconds", Help: "Time from a new order to its certificate (includes the client's challenge setup).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		certsValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_acme_certificates_valid", Help: "Unexpired, unrevoked certificates issued through ACME.",
		}),
		certsNearExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rampart_acme_certificates_near_expiry", Help: "Valid ACME certificates in the last quarter of their life that no order has replaced (a client that stopped renewing).",
		}),
	}
	for _, c := range []prometheus.Collector{m.orders, m.challenges, m.challengeFailures, m.refused, m.issued, m.revoked, m.issuance, m.orderDuration, m.certsValid, m.certsNearExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("acme: metrics: %w", err)
		}
	}
	return m, nil
}
