package detect

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// DetectorConfig is what a Detector needs.
type DetectorConfig struct {
	// Rules is a rules file (nil: DefaultRules).
	Rules []byte
	// Dir is the audit log directory the detector follows.
	Dir   string
	Store AlertStore
	// Append writes the detect.alert entry of each new alert to the log.
	Append func(ctx context.Context, es ...*audit.Entry) error
	// OnAlert, if set, is told of each new alert after its sinks (the
	// server starts the playbooks it triggers: package respond).
	OnAlert  func(ctx context.Context, a store.Alert)
	Now      func() time.Time
	Log      *slog.Logger
	Registry *prometheus.Registry
	// Client delivers webhooks (nil: a default client).
	Client *http.Client
}

// Detector follows the deployment's audit log with the rules, and sends
// each new alert to the rules' sinks and to the log itself (detect.alert,
// actor rampart-detect), so that an alert is evidence like the entries
// that raised it.
type Detector struct {
	tailer   *Tailer
	notifier *Notifier
	cfg      DetectorConfig
}

// NewDetector parses the rules and prepares the tailer and the notifier;
// Run follows the log.
func NewDetector(cfg DetectorConfig) (*Detector, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	src := cfg.Rules
	if src == nil {
		src = DefaultRules()
	}
	rs, err := Parse(src)
	if err != nil {
		return nil, err
	}
	var reg prometheus.Registerer
	if cfg.Registry != nil {
		reg = cfg.Registry
	}
	d := &Detector{cfg: cfg, notifier: NewNotifier(NotifierConfig{Sinks: rs.Sinks, Client: cfg.Client, Log: cfg.Log, Registry: reg, Now: cfg.Now})}
	d.tailer = &Tailer{Dir: cfg.Dir, Engine: NewEngine(rs), Store: cfg.Store, Log: cfg.Log, Now: cfg.Now, Registry: cfg.Registry, OnAlert: d.onAlert}
	cfg.Log.Info("detection rules loaded", "rules", len(rs.Rules), "sinks", len(rs.Sinks))
	return d, nil
}

// DropReportInterval is how often dropped notifications are recorded in
// the audit log (detect.notifications_dropped), when there were any.
const DropReportInterval = time.Minute

// Run follows the log until ctx is done, and records dropped
// notifications every DropReportInterval.
func (d *Detector) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(DropReportInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				d.ReportDrops(context.WithoutCancel(ctx))
				return
			case <-t.C:
				d.ReportDrops(ctx)
			}
		}
	}()
	d.tailer.Run(ctx)
	<-done
	return nil
}

// ReportDrops records the notifications dropped since the last report as
// one detect.notifications_dropped entry (nothing when none were).
func (d *Detector) ReportDrops(ctx context.Context) {
	drops := d.notifier.TakeDrops()
	if len(drops) == 0 {
		return
	}
	var total int64
	details := map[string]string{}
	for k, n := range drops {
		total += n
		details[k.Sink+"."+k.Severity+"."+k.Reason] = strconv.FormatInt(n, 10)
	}
	details["total"] = strconv.FormatInt(total, 10)
	e := &audit.Entry{V: audit.SchemaVersion, Time: d.cfg.Now(), Actor: audit.Actor{User: "rampart-detect"}, Action: "detect.notifications_dropped",
		Target: "notifications", Outcome: audit.OutcomeFailure, Source: "server",
		Reason:  fmt.Sprintf("%d alert notifications dropped since the last report (the alerts are stored: rampart alert list); details: sink.severity.reason", total),
		Details: details}
	d.cfg.Append(ctx, e)
}

// Close delivers the notifications still queued and stops.
func (d *Detector) Close() { d.notifier.Close() }

// onAlert notifies the sinks and records the alert in the audit log.
func (d *Detector) onAlert(ctx context.Context, a store.Alert) {
	d.notifier.Notify(ctx, a)
	e := &audit.Entry{V: audit.SchemaVersion, Time: d.cfg.Now(), Actor: audit.Actor{User: "rampart-detect"}, Action: "detect.alert",
		Target: a.Group, Outcome: audit.OutcomeSuccess, Reason: a.Summary, Source: "server",
		Details: map[string]string{"alert_id": a.ID, "rule": a.Rule, "severity": a.Severity, "first_index": strconv.FormatInt(a.FirstIndex, 10)}}
	d.cfg.Append(ctx, e) // a failure is logged and counted by Append; the tailer has logged the alert
	if d.cfg.OnAlert != nil {
		d.cfg.OnAlert(ctx, a)
	}
}
