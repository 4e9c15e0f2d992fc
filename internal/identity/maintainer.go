package identity

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/store"
)

// DefaultMaintainEvery is how often a Maintainer applies the rotation
// schedule.
const DefaultMaintainEvery = 30 * time.Second

// Maintainer applies the CA's rotation schedule (CA.Maintain) on a timer,
// and warns in the log about every root and intermediate close to expiry:
// expired trust anchors are the most common outage of service meshes, so
// they are shouted about long before.
type Maintainer struct {
	CA *CA
	// Changed is called when the trust bundle changed (a root prepared
	// or retired), so that agents and replicas learn of it at once.
	Changed  func(ctx context.Context)
	Every    time.Duration // default DefaultMaintainEvery
	Now      func() time.Time
	Log      *slog.Logger
	Registry prometheus.Registerer

	once     sync.Once
	failures prometheus.Counter
}

// Run applies the schedule every Every until ctx is done.
func (m *Maintainer) Run(ctx context.Context) error {
	every := m.Every
	if every <= 0 {
		every = DefaultMaintainEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.Step(ctx)
		}
	}
}

// Step applies the schedule once.
func (m *Maintainer) Step(ctx context.Context) {
	m.once.Do(func() {
		m.failures = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rampart_server_ca_maintenance_failures_total", Help: "Failed runs of the CA rotation schedule.",
		})
		if m.Registry != nil {
			m.Registry.MustRegister(m.failures)
		}
	})
	before := string(EncodePEM(m.CA.X509Bundle()))
	if err := m.CA.Maintain(ctx); err != nil {
		m.Log.Error("CA maintenance failed", "err", err)
		m.failures.Inc()
	}
	m.warnExpiry()
	if string(EncodePEM(m.CA.X509Bundle())) != before {
		m.Changed(ctx)
	}
}

// warnExpiry logs a warning for any root or intermediate close to expiry:
// in its last quarter of life, or a root within 30 days.
func (m *Maintainer) warnExpiry() {
	now := m.Now()
	for _, k := range m.CA.Status() {
		left := k.NotAfter.Sub(now)
		life := k.NotAfter.Sub(k.NotBefore)
		if k.State == store.StateRetired || k.Kind == store.KindJWT {
			continue
		}
		if left < life/4 || (k.Kind == store.KindRoot && left < 30*24*time.Hour) {
			m.Log.Warn("CA certificate expires soon", "kind", k.Kind, "id", k.ID, "not_after", k.NotAfter, "left", left.Round(time.Minute).String())
		}
	}
}

// ExpiryCollector exports the expiry of every CA key at scrape time, so an
// alert such as
//
//	rampart_ca_not_after_timestamp_seconds{kind="root",state="active"} - time() < 30*86400
//
// fires long before a trust anchor expires.
type ExpiryCollector struct{ CA *CA }

var caExpiryDesc = prometheus.NewDesc("rampart_ca_not_after_timestamp_seconds",
	"Expiry (Unix time) of each root, intermediate and JWT signing key.", []string{"kind", "id", "state"}, nil)

// Describe implements prometheus.Collector.
func (c ExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- caExpiryDesc }

// Collect implements prometheus.Collector.
func (c ExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range c.CA.Status() {
		ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, float64(k.NotAfter.Unix()),
			string(k.Kind), k.ID, string(k.State))
	}
}
