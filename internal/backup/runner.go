package backup

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/audit"
)

// Runner makes backups and drills on a schedule and records each in the
// audit log and in metrics. The server constructs it and calls Run.
//
// Absence is recorded too: when no drill has succeeded within DrillMaxAge
// (counted from the last success, or from the runner's first start), the
// runner writes a backup.drill_overdue entry (again each day it stays
// so), and backup.overdue when no backup was made within twice Every; the
// default detection rules raise alerts on them. The clock is injected, so
// tests drive the schedule by calling Step.
type Runner struct {
	Backuper  *Backuper
	Every     time.Duration // between backups (0: none scheduled)
	Retention Retention
	// DrillEvery is the time between drills (0: none); DrillMaxAge the
	// longest time without a successful drill before it is overdue
	// (default DrillEvery plus a half).
	DrillEvery  time.Duration
	DrillMaxAge time.Duration
	Drill       func(ctx context.Context) *DrillReport
	// Record appends an entry to the audit log.
	Record func(ctx context.Context, e *audit.Entry)
	Actor  audit.Actor
	// Operator names who asked for a backup or drill through the API
	// (default: the admin).
	Operator func(*http.Request) audit.Actor
	Now      func() time.Time
	// Tick is how often Run looks at the schedule (default a minute).
	Tick     time.Duration
	Log      *slog.Logger
	Registry prometheus.Registerer

	mu      sync.Mutex // one backup or drill at a time
	once    sync.Once
	metrics *runnerMetrics
}

type runnerMetrics struct {
	lastBackup, backupDuration, backupBytes  prometheus.Gauge
	backupFailures                           prometheus.Counter
	lastDrill, drillDuration, drillBackupAge prometheus.Gauge
	drillFailures                            prometheus.Counter
}

func (r *Runner) init() {
	r.once.Do(func() {
		if r.Now == nil {
			r.Now = time.Now
		}
		if r.Log == nil {
			r.Log = slog.New(slog.DiscardHandler)
		}
		if r.Tick == 0 {
			r.Tick = time.Minute
		}
		if r.DrillMaxAge == 0 {
			r.DrillMaxAge = r.DrillEvery + r.DrillEvery/2
		}
		g := func(name, help string) prometheus.Gauge {
			return prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_backup_" + name, Help: help})
		}
		c := func(name, help string) prometheus.Counter {
			return prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_backup_" + name, Help: help})
		}
		m := &runnerMetrics{
			lastBackup:     g("last_success_timestamp_seconds", "When the last backup every destination holds was made."),
			backupDuration: g("last_duration_seconds", "How long the last backup took."),
			backupBytes:    g("last_bytes", "Bytes (before compression) in the last backup."),
			backupFailures: c("failures_total", "Backups that failed or that not every destination holds."),
			lastDrill:      g("drill_last_success_timestamp_seconds", "When the last successful restore drill ended."),
			drillDuration:  g("drill_last_duration_seconds", "How long the last restore drill took."),
			drillBackupAge: g("drill_last_backup_age_seconds", "Age of the backup the last drill restored."),
			drillFailures:  c("drill_failures_total", "Restore drills that failed."),
		}
		if r.Registry != nil {
			for _, col := range []prometheus.Collector{m.lastBackup, m.backupDuration, m.backupBytes, m.backupFailures, m.lastDrill, m.drillDuration, m.drillBackupAge, m.drillFailures} {
				r.Registry.Register(col)
			}
		}
		r.metrics = m
	})
}

// Run runs the schedule until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	r.init()
	t := time.NewTicker(r.Tick)
	defer t.Stop()
	r.Step(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Step(ctx)
		}
	}
}

// Step does what is due now: a backup (then the retention), a drill, and
// the overdue checks.
func (r *Runner) Step(ctx context.Context) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := loadState(r.Backuper.cfg.DataDir)
	if err != nil {
		r.Log.Error("backup state unreadable", "err", err)
		return
	}
	now := r.Now()
	if st.Since.IsZero() {
		st.Since = now
		r.save(st)
	}
	if r.Every > 0 && now.Sub(st.Made) >= r.Every && now.Sub(st.LastAttempt) >= max(r.Every/10, time.Minute) {
		st.LastAttempt = now
		r.save(st)
		if _, err := r.create(ctx); err == nil && (r.Retention.Daily > 0 || r.Retention.Weekly > 0) {
			r.prune(ctx)
		}
	}
	if r.Drill != nil && r.DrillEvery > 0 {
		st, _ = loadState(r.Backuper.cfg.DataDir)
		if now.Sub(st.LastDrill) >= r.DrillEvery {
			r.drill(ctx)
		}
	}
	r.overdue(now)
}

func (r *Runner) save(st *state) {
	if err := saveState(r.Backuper.cfg.DataDir, st); err != nil {
		r.Log.Error("backup state not saved", "err", err)
	}
}

// overdue records the absence of a drill (or a backup) for too long.
func (r *Runner) overdue(now time.Time) {
	st, err := loadState(r.Backuper.cfg.DataDir)
	if err != nil {
		return
	}
	if r.Drill != nil && r.DrillEvery > 0 {
		since := st.LastDrillOK
		if since.IsZero() {
			since = st.Since
		}
		if now.Sub(since) > r.DrillMaxAge && now.Sub(st.LastOverdue) >= 24*time.Hour {
			st.LastOverdue = now
			r.save(st)
			r.record(r.entry("backup.drill_overdue", audit.OutcomeFailure,
				fmt.Sprintf("no successful restore drill for %s (at most %s)", now.Sub(since).Round(time.Minute), r.DrillMaxAge),
				"last_success", stamp(st.LastDrillOK), "max_age", r.DrillMaxAge.String()))
		}
	}
	if r.Every > 0 {
		since := st.Made
		if since.IsZero() {
			since = st.Since
		}
		if now.Sub(since) > 2*r.Every && now.Sub(st.LastBOverdue) >= 24*time.Hour {
			st.LastBOverdue = now
			r.save(st)
			r.record(r.entry("backup.overdue", audit.OutcomeFailure,
				fmt.Sprintf("no backup held by every destination for %s (one every %s)", now.Sub(since).Round(time.Minute), r.Every),
				"last_success", stamp(st.Made)))
		}
	}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// CreateNow makes a backup now (an operator asked), with its audit entry.
func (r *Runner) CreateNow(ctx context.Context, actor audit.Actor) (*Result, error) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.createAs(ctx, actor)
}

func (r *Runner) create(ctx context.Context) (*Result, error) { return r.createAs(ctx, r.Actor) }

func (r *Runner) createAs(ctx context.Context, actor audit.Actor) (*Result, error) {
	res, err := r.Backuper.Create(ctx)
	dests := make([]string, len(r.Backuper.cfg.Destinations))
	for i, d := range r.Backuper.cfg.Destinations {
		dests[i] = d.String()
	}
	kv := []string{"destinations", strings.Join(dests, " ")}
	if res != nil {
		kv = append(kv, "seq", strconv.FormatInt(res.Seq, 10), "manifest_sha256", res.Hash, "bytes", strconv.FormatInt(res.Bytes, 10),
			"stored", strconv.FormatInt(res.Stored, 10), "reused", strconv.Itoa(res.Reused), "duration_ms", strconv.FormatInt(res.Duration.Milliseconds(), 10))
		if len(res.Warnings) > 0 {
			kv = append(kv, "warnings", strings.Join(res.Warnings, "; "))
		}
	}
	if err != nil {
		r.metrics.backupFailures.Inc()
		r.Log.Error("BACKUP FAILED", "err", err)
		r.record(r.entryAs(actor, "backup.create", audit.OutcomeFailure, err.Error(), kv...))
		return res, err
	}
	r.metrics.lastBackup.Set(float64(res.Created.Unix()))
	r.metrics.backupDuration.Set(res.Duration.Seconds())
	r.metrics.backupBytes.Set(float64(res.Bytes))
	r.Log.Info("backup made", "seq", res.Seq, "bytes", res.Bytes, "stored", res.Stored, "duration", res.Duration)
	r.record(r.entryAs(actor, "backup.create", audit.OutcomeSuccess, "", kv...))
	for _, w := range res.Warnings {
		r.Log.Warn("backup destination lost backups", "warning", w)
		r.record(r.entryAs(actor, "backup.destination_lost", audit.OutcomeFailure, w))
	}
	return res, nil
}

func (r *Runner) prune(ctx context.Context) {
	res, err := r.Backuper.Prune(ctx, r.Retention)
	if err != nil {
		r.Log.Error("backup retention failed", "err", err)
		r.record(r.entry("backup.prune", audit.OutcomeFailure, err.Error()))
		return
	}
	if len(res.Deleted) > 0 || res.Objects > 0 {
		var seqs []string
		for _, s := range res.Deleted {
			seqs = append(seqs, strconv.FormatInt(s, 10))
		}
		r.record(r.entry("backup.prune", audit.OutcomeSuccess, "", "deleted", strings.Join(seqs, " "), "objects", strconv.Itoa(res.Objects)))
	}
}

// DrillNow runs a drill now, with its audit entry and metrics.
func (r *Runner) DrillNow(ctx context.Context, actor audit.Actor) *DrillReport {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.drillAs(ctx, actor)
}

func (r *Runner) drill(ctx context.Context) *DrillReport { return r.drillAs(ctx, r.Actor) }

func (r *Runner) drillAs(ctx context.Context, actor audit.Actor) *DrillReport {
	if r.Drill == nil {
		return &DrillReport{Error: "backup: no drill configured (a decryption identity for drills is needed)"}
	}
	rep := r.Drill(ctx)
	now := r.Now()
	if st, err := loadState(r.Backuper.cfg.DataDir); err == nil {
		st.LastDrill = now
		if rep.OK {
			st.LastDrillOK = now
		}
		r.save(st)
	}
	var checks []string
	for _, c := range rep.Checks {
		mark := "ok"
		if !c.OK {
			mark = "FAILED"
		}
		checks = append(checks, c.Name+"="+mark)
	}
	kv := []string{"seq", strconv.FormatInt(rep.Seq, 10), "manifest_sha256", rep.Hash, "duration_ms", strconv.FormatInt(rep.Duration.Milliseconds(), 10),
		"backup_age_s", strconv.FormatInt(int64(rep.BackupAge.Seconds()), 10), "checks", strings.Join(checks, " ")}
	r.metrics.drillDuration.Set(rep.Duration.Seconds())
	r.metrics.drillBackupAge.Set(rep.BackupAge.Seconds())
	if rep.OK {
		r.metrics.lastDrill.Set(float64(now.Unix()))
		r.Log.Info("restore drill succeeded", "seq", rep.Seq, "duration", rep.Duration, "backup_age", rep.BackupAge)
		r.record(r.entryAs(actor, "backup.drill", audit.OutcomeSuccess, "", kv...))
	} else {
		r.metrics.drillFailures.Inc()
		r.Log.Error("RESTORE DRILL FAILED", "seq", rep.Seq, "err", rep.Error)
		r.record(r.entryAs(actor, "backup.drill", audit.OutcomeFailure, rep.Error, kv...))
	}
	return rep
}

func (r *Runner) entry(action, outcome, reason string, kv ...string) *audit.Entry {
	return r.entryAs(r.Actor, action, outcome, reason, kv...)
}

func (r *Runner) entryAs(actor audit.Actor, action, outcome, reason string, kv ...string) *audit.Entry {
	if actor == (audit.Actor{}) {
		actor = audit.Actor{User: "rampart-backup"}
	}
	e := &audit.Entry{V: audit.SchemaVersion, Time: r.Now(), Actor: actor, Action: action, Target: "backup", Outcome: outcome,
		Reason: reason, Source: "server", Details: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		e.Details[kv[i]] = kv[i+1]
	}
	return e
}

func (r *Runner) record(e *audit.Entry) {
	if r.Record != nil {
		r.Record(context.Background(), e)
	}
}
