package kms

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// DefaultMaintainEvery is how often a Maintainer applies the schedules.
const DefaultMaintainEvery = 30 * time.Second

// Maintainer applies the key store's schedules (rotation periods, ends of
// destruction grace periods) and records each scheduled action in the
// audit log, named as the key store's (ServiceID).
type Maintainer struct {
	Service *Service
	Actor   audit.Actor // the key store: ServiceID(td)
	// Record appends audit entries; Changed tells the other replicas and
	// waiting clients that keys changed.
	Record  func(ctx context.Context, es ...*audit.Entry)
	Changed func(ctx context.Context)
	Every   time.Duration // default DefaultMaintainEvery
	Now     func() time.Time
	Log     *slog.Logger
}

// Run applies the schedules every Every until ctx is done.
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

// Step applies the schedules once and audits what they did.
func (m *Maintainer) Step(ctx context.Context) {
	events, err := m.Service.Maintain(ctx)
	if err != nil && m.Log != nil {
		m.Log.Error("key store maintenance failed", "err", err)
	}
	for _, ev := range events {
		e := &audit.Entry{V: audit.SchemaVersion, Time: m.Now(), Action: ev.Action, Target: "kms:" + ev.Key, Outcome: audit.OutcomeSuccess,
			Source: "server", Actor: m.Actor,
			Details: map[string]string{"key": ev.Key, "version": strconv.Itoa(ev.Version), "trigger": "schedule"}}
		m.Record(ctx, e)
	}
	if len(events) > 0 {
		m.Changed(ctx)
	}
}
