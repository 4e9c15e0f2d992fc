package detect

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// AlertStore keeps alerts; store.Store implements it.
type AlertStore interface {
	UpsertAlert(ctx context.Context, a store.Alert) (created bool, err error)
}

// LagRule names the built-in alert raised when detection falls behind.
const LagRule = "detection-lag"

// Tailer follows an audit log directory and runs an engine over every entry,
// in order, from the first. Alerts go to the store; new ones to OnAlert.
type Tailer struct {
	Dir     string // the audit log directory
	Engine  *Engine
	Store   AlertStore
	OnAlert func(ctx context.Context, a store.Alert) // new alerts only; may be nil
	Log     *slog.Logger
	Now     func() time.Time
	// MaxLag is how long entries may wait for detection before that wait is
	// itself an alert (default 1 minute).
	MaxLag time.Duration
	// Interval between looks at the log (default 1 s); Wake looks at once.
	Interval time.Duration
	Registry *prometheus.Registry

	cursor   int64
	unsaved  []store.Alert // raised but not yet stored (the store failed)
	wake     chan struct{}
	lagOpen  bool
	pending  time.Time // when entries were first seen waiting, zero if none
	lagAlert int64
	entries  prometheus.Counter
	alerts   *prometheus.CounterVec
	lag      prometheus.Gauge
	overflow *prometheus.CounterVec
}

func (t *Tailer) init() {
	if t.Log == nil {
		t.Log = slog.New(slog.DiscardHandler)
	}
	if t.Now == nil {
		t.Now = time.Now
	}
	if t.MaxLag <= 0 {
		t.MaxLag = time.Minute
	}
	if t.Interval <= 0 {
		t.Interval = time.Second
	}
	t.wake = make(chan struct{}, 1)
	t.entries = prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_detect_entries_total", Help: "Audit entries run through the detection rules."})
	t.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_alerts_total", Help: "New alerts, by rule and severity."}, []string{"rule", "severity"})
	t.lag = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_detect_lag_entries", Help: "Audit entries not yet run through detection."})
	t.overflow = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_group_overflow_total",
		Help: "Matches of a rule counted in its overflow group: more distinct groups than the rule keeps apart (forged actors?)."}, []string{"rule"})
	if t.Registry != nil {
		t.Registry.MustRegister(t.entries, t.alerts, t.lag, t.overflow)
	}
	if t.Engine.OnOverflow == nil {
		t.Engine.OnOverflow = func(rule string, n int64) {
			t.overflow.WithLabelValues(rule).Inc()
			if n&(n-1) == 0 { // 1, 2, 4, ...: a flood logs a few lines, not one a match
				t.Log.Warn("detection rule has more groups than it keeps apart; counting the rest as one group", "rule", rule,
					"max_groups", t.Engine.maxGroups(), "overflowed", n)
			}
		}
	}
}

// Wake makes Run look at the log now.
func (t *Tailer) Wake() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Run follows the log until ctx is done.
func (t *Tailer) Run(ctx context.Context) {
	t.init()
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		if err := t.Step(ctx); err != nil && ctx.Err() == nil {
			t.Log.Error("detection pass failed; retrying", "err", err, "at_index", t.cursor)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.wake:
		}
	}
}

// Step runs the engine over the entries appended since the last step.
func (t *Tailer) Step(ctx context.Context) error {
	if t.wake == nil {
		t.init()
	}
	n, err := audit.Count(t.Dir)
	if err != nil {
		return err
	}
	t.lag.Set(float64(n - t.cursor))
	if n > t.cursor && t.pending.IsZero() {
		t.pending = t.Now()
	}
	t.checkLag(ctx, n)
	// Alerts raised in an earlier pass that could not be stored go first;
	// their entries are not run through the engine twice.
	if err := t.flush(ctx); err != nil {
		return err
	}
	err = audit.Scan(t.Dir, t.cursor, func(i int64, raw []byte) error {
		var en audit.Entry
		if err := json.Unmarshal(raw, &en); err != nil {
			// audit verify reports damage; detection keeps going.
			t.Log.Warn("detection skipped an unreadable audit entry", "index", i, "err", err)
		} else {
			t.unsaved = append(t.unsaved, t.Engine.Process(i, &en)...)
		}
		t.cursor = i + 1
		if err := t.flush(ctx); err != nil {
			return err
		}
		t.entries.Inc()
		if i%4096 == 0 {
			t.checkLag(ctx, n)
		}
		return ctx.Err()
	})
	if t.cursor >= n && len(t.unsaved) == 0 {
		t.pending = time.Time{}
		t.lagOpen = false
	}
	t.lag.Set(float64(n - t.cursor))
	return err
}

// checkLag raises the lag alert once per episode of falling behind.
func (t *Tailer) checkLag(ctx context.Context, n int64) {
	if t.pending.IsZero() || t.lagOpen {
		return
	}
	waited := t.Now().Sub(t.pending)
	if waited <= t.MaxLag {
		return
	}
	t.lagOpen = true
	t.lagAlert++
	now := t.Now()
	a := store.Alert{ID: fmt.Sprintf("alr_lag_%d_%d", now.UnixNano(), t.lagAlert), Rule: LagRule, Severity: "high", Group: "",
		Summary:   fmt.Sprintf("%s: detection is %d entries behind the audit log and has been behind for %s; alerts for them are late, none are skipped", LagRule, n-t.cursor, waited.Round(time.Second)),
		FirstSeen: now, LastSeen: now, Count: 1, FirstIndex: t.cursor, LastIndex: n - 1, Status: store.AlertOpen, CreatedAt: now}
	if err := t.store(ctx, a); err != nil {
		t.Log.Error("could not store the detection-lag alert", "err", err)
	}
}

func (t *Tailer) flush(ctx context.Context) error {
	for len(t.unsaved) > 0 {
		if err := t.store(ctx, t.unsaved[0]); err != nil {
			return err
		}
		t.unsaved = t.unsaved[1:]
	}
	return nil
}

func (t *Tailer) store(ctx context.Context, a store.Alert) error {
	created, err := t.Store.UpsertAlert(ctx, a)
	if err != nil {
		return err
	}
	if created {
		t.alerts.WithLabelValues(a.Rule, a.Severity).Inc()
		t.Log.Warn("alert", "rule", a.Rule, "severity", a.Severity, "summary", a.Summary, "id", a.ID)
		if t.OnAlert != nil {
			t.OnAlert(ctx, a)
		}
	}
	return nil
}
