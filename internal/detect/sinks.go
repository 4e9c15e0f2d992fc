package detect

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/rampartsec/rampart/internal/mailsend"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/store"
)

// Notifier sends new alerts to the configured sinks. Each sink has its own
// queue and worker, so a slow or hanging sink (a webhook that takes
// seconds, a mail server that never answers) delays only itself. A
// sink's queue is one bounded queue per severity, served highest severity
// first, so a flood of low alerts cannot delay a critical one; and each
// rule may queue at most RuleBurst alerts to a sink, refilled one every
// RuleEvery, so one rule flooding cannot crowd out the others. What does
// not fit is dropped (the alert itself is already stored), and counted per
// sink, severity and reason: in a metric, in a log line, and in a
// detect.notifications_dropped audit entry (TakeDrops), never silently.
type Notifier struct {
	cfg     NotifierConfig
	workers []*sinkWorker
	stop    chan struct{}
	wg      sync.WaitGroup
	// smtpTimeout bounds one mail delivery, connection to QUIT: a mail
	// server that accepts and never answers must not hold up its queue.
	smtpTimeout time.Duration

	sent, failed, dropped *prometheus.CounterVec
	queued                *prometheus.GaugeVec

	dmu   sync.Mutex
	drops map[DropKey]int64 // since the last TakeDrops
}

// NotifierConfig is what a Notifier needs; only Sinks is required.
type NotifierConfig struct {
	Sinks []Sink
	// Client delivers webhooks (nil: a client with a 10 s timeout).
	Client   *http.Client
	Log      *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
	// QueueSize bounds each severity's queue of each sink (default 1,000).
	QueueSize int
	// RuleBurst and RuleEvery limit what one rule queues to one sink
	// (default 20, then one every 30 s).
	RuleBurst int
	RuleEvery time.Duration
	// Deliver sends an alert to a sink (nil: by the sink's type). Tests
	// give a fake.
	Deliver func(s Sink, a store.Alert) error
	// Retry is the wait before each retry of a failed delivery (default
	// 1 s, 2 s: three attempts).
	Retry []time.Duration
	// CloseGrace bounds how long Close waits for queued notifications
	// (default 15 s); what is left then is counted as dropped.
	CloseGrace time.Duration
}

// DropKey says which notifications were dropped: to which sink, of which
// severity, and why ("queue_full", "rate_limited", "shutdown").
type DropKey struct {
	Sink, Severity, Reason string
}

// sinkWorker is one sink's queues and the goroutine that serves them.
type sinkWorker struct {
	sink Sink
	wake chan struct{}

	mu      sync.Mutex
	queues  [5][]store.Alert // by SeverityRank: served highest first
	buckets map[string]*ruleBucket
}

type ruleBucket struct {
	tokens float64
	last   time.Time
}

// NewNotifier starts a worker per sink, delivering until Close.
func NewNotifier(cfg NotifierConfig) *Notifier {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1000
	}
	if cfg.RuleBurst <= 0 {
		cfg.RuleBurst = 20
	}
	if cfg.RuleEvery <= 0 {
		cfg.RuleEvery = 30 * time.Second
	}
	if cfg.Retry == nil {
		cfg.Retry = []time.Duration{time.Second, 2 * time.Second}
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 15 * time.Second
	}
	n := &Notifier{cfg: cfg, stop: make(chan struct{}), smtpTimeout: 30 * time.Second, drops: map[DropKey]int64{},
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notifications_total", Help: "Alert notifications delivered, by sink."}, []string{"sink"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notification_failures_total", Help: "Alert notifications that failed after retries, by sink."}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notifications_dropped_total", Help: "Alert notifications dropped (the alert is stored), by sink, severity and reason: queue_full, rate_limited (one rule past its share), shutdown."}, []string{"sink", "severity", "reason"}),
		queued:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rampart_detect_notifications_queued", Help: "Alert notifications waiting, by sink."}, []string{"sink"}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(n.sent, n.failed, n.dropped, n.queued)
	}
	if n.cfg.Deliver == nil {
		n.cfg.Deliver = n.deliver
	}
	for _, s := range cfg.Sinks {
		w := &sinkWorker{sink: s, wake: make(chan struct{}, 1), buckets: map[string]*ruleBucket{}}
		n.workers = append(n.workers, w)
		n.wg.Add(1)
		go n.run(w)
	}
	return n
}

// Notify queues a for every sink whose minimum severity it reaches. It
// never blocks.
func (n *Notifier) Notify(_ context.Context, a store.Alert) {
	rank := SeverityRank(a.Severity)
	if rank < 0 {
		rank = 0
	}
	now := n.cfg.Now()
	for _, w := range n.workers {
		if rank < SeverityRank(w.sink.MinSeverity) {
			continue
		}
		if reason := n.enqueue(w, a, rank, now); reason != "" {
			n.drop(w.sink.Name, a, reason, 1)
			continue
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// enqueue queues a for w, or says why not.
func (n *Notifier) enqueue(w *sinkWorker, a store.Alert, rank int, now time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buckets[a.Rule]
	if b == nil {
		if len(w.buckets) >= 4096 { // rules are few; forget the idle ones
			for r, old := range w.buckets {
				if n.refill(old, now); old.tokens >= float64(n.cfg.RuleBurst) {
					delete(w.buckets, r)
				}
			}
		}
		b = &ruleBucket{tokens: float64(n.cfg.RuleBurst), last: now}
		w.buckets[a.Rule] = b
	}
	n.refill(b, now)
	if b.tokens < 1 {
		return "rate_limited"
	}
	if len(w.queues[rank]) >= n.cfg.QueueSize {
		return "queue_full"
	}
	b.tokens--
	w.queues[rank] = append(w.queues[rank], a)
	n.queued.WithLabelValues(w.sink.Name).Inc()
	return ""
}

func (n *Notifier) refill(b *ruleBucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(n.cfg.RuleBurst), b.tokens+float64(el)/float64(n.cfg.RuleEvery))
		b.last = now
	}
}

// next takes the oldest alert of the highest severity queued for w.
func (w *sinkWorker) next() (store.Alert, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for r := len(w.queues) - 1; r >= 0; r-- {
		if q := w.queues[r]; len(q) > 0 {
			a := q[0]
			q[0] = store.Alert{}
			w.queues[r] = q[1:]
			if len(w.queues[r]) == 0 {
				w.queues[r] = nil // let the backing array go
			}
			return a, true
		}
	}
	return store.Alert{}, false
}

func (n *Notifier) drop(sink string, a store.Alert, reason string, count int64) {
	n.dropped.WithLabelValues(sink, a.Severity, reason).Add(float64(count))
	k := DropKey{Sink: sink, Severity: a.Severity, Reason: reason}
	n.dmu.Lock()
	first := n.drops[k] == 0
	n.drops[k] += count
	n.dmu.Unlock()
	if first { // once per kind until TakeDrops; the audit entry has the count
		n.cfg.Log.Error("alert notification dropped (the alert is stored)", "sink", sink, "severity", a.Severity, "reason", reason, "alert", a.ID)
	}
}

// TakeDrops returns the notifications dropped since the last call, by
// sink, severity and reason, and starts counting anew.
func (n *Notifier) TakeDrops() map[DropKey]int64 {
	n.dmu.Lock()
	defer n.dmu.Unlock()
	if len(n.drops) == 0 {
		return nil
	}
	out := n.drops
	n.drops = map[DropKey]int64{}
	return out
}

// Close delivers what is queued and stops, waiting at most CloseGrace (a
// hanging sink is not waited for longer; what it still holds is counted
// as dropped).
func (n *Notifier) Close() {
	close(n.stop)
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(n.cfg.CloseGrace):
		for _, w := range n.workers {
			for {
				a, ok := w.next()
				if !ok {
					break
				}
				n.queued.WithLabelValues(w.sink.Name).Dec()
				n.drop(w.sink.Name, a, "shutdown", 1)
			}
		}
	}
}

func (n *Notifier) run(w *sinkWorker) {
	defer n.wg.Done()
	for {
		a, ok := w.next()
		if !ok {
			select {
			case <-w.wake:
				continue
			case <-n.stop:
				if a, ok = w.next(); !ok {
					return
				}
			}
		}
		n.queued.WithLabelValues(w.sink.Name).Dec()
		err := n.cfg.Deliver(w.sink, a)
		for _, wait := range n.cfg.Retry {
			if err == nil {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-n.stop: // shutting down: one more try, no more waiting
				t.Stop()
			}
			err = n.cfg.Deliver(w.sink, a)
		}
		if err != nil {
			n.failed.WithLabelValues(w.sink.Name).Inc()
			n.cfg.Log.Error("alert notification failed", "sink", w.sink.Name, "alert", a.ID, "err", err)
			continue
		}
		n.sent.WithLabelValues(w.sink.Name).Inc()
	}
}

// WebhookPayload is the JSON body a webhook sink receives.
type WebhookPayload struct {
	ID         string    `json:"id"`
	Rule       string    `json:"rule"`
	Severity   string    `json:"severity"`
	Group      string    `json:"group,omitempty"`
	Summary    string    `json:"summary"`
	FirstSeen  time.Time `json:"first_seen"`
	FirstIndex int64     `json:"first_index"`
}

func (n *Notifier) deliver(s Sink, a store.Alert) error {
	switch s.Type {
	case "webhook":
		return n.post(s.URL, WebhookPayload{ID: a.ID, Rule: a.Rule, Severity: a.Severity, Group: a.Group, Summary: a.Summary, FirstSeen: a.FirstSeen, FirstIndex: a.FirstIndex})
	case "slack":
		// Slack's incoming-webhook format, also understood by Mattermost,
		// Rocket.Chat and Discord's /slack endpoints.
		return n.post(s.URL, map[string]string{"text": fmt.Sprintf("*[%s] %s*\n%s\nalert %s, audit entry %d", strings.ToUpper(a.Severity), a.Rule, a.Summary, a.ID, a.FirstIndex)})
	case "smtp":
		msg := "From: " + s.From + "\r\nTo: " + strings.Join(s.To, ", ") + "\r\nSubject: " + mailsend.HeaderSafe(fmt.Sprintf("[rampart %s] %s", a.Severity, a.Rule)) +
			"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + a.Summary + "\r\n\r\nalert " + a.ID + ", first seen " + a.FirstSeen.UTC().Format(time.RFC3339) +
			fmt.Sprintf(", audit entry %d\r\n", a.FirstIndex)
		return mailsend.Send(context.Background(), s.Addr, s.From, s.To, []byte(msg), n.smtpTimeout)
	}
	return fmt.Errorf("unknown sink type %q", s.Type)
}

func (n *Notifier) post(url string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
