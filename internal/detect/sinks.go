package detect

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/smtp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/store"
)

// Notifier sends new alerts to the configured sinks from a bounded queue,
// retrying each delivery a few times; a full queue drops the notification
// (the alert itself is already stored) and counts it.
type Notifier struct {
	sinks  []Sink
	client *http.Client
	log    *slog.Logger
	queue  chan store.Alert
	done   chan struct{}
	// smtpTimeout bounds one mail delivery, connection to QUIT: a mail
	// server that accepts and never answers must not hold up the queue.
	smtpTimeout time.Duration

	sent, failed, dropped *prometheus.CounterVec
}

// NewNotifier starts delivering to sinks until Close. client is used for
// webhooks (nil: a client with a 10 s timeout).
func NewNotifier(sinks []Sink, client *http.Client, log *slog.Logger, reg *prometheus.Registry) *Notifier {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{sinks: sinks, client: client, log: log, queue: make(chan store.Alert, 1000), done: make(chan struct{}), smtpTimeout: 30 * time.Second,
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notifications_total", Help: "Alert notifications delivered, by sink."}, []string{"sink"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notification_failures_total", Help: "Alert notifications that failed after retries, by sink."}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_detect_notifications_dropped_total", Help: "Alert notifications dropped because the queue was full."}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(n.sent, n.failed, n.dropped)
	}
	go n.run()
	return n
}

// Notify queues a for every sink whose minimum severity it reaches.
func (n *Notifier) Notify(_ context.Context, a store.Alert) {
	select {
	case n.queue <- a:
	default:
		for _, s := range n.sinks {
			n.dropped.WithLabelValues(s.Name).Inc()
		}
		n.log.Error("alert notification queue full; dropped (the alert is stored)", "alert", a.ID)
	}
}

// Close delivers what is queued and stops.
func (n *Notifier) Close() {
	close(n.queue)
	<-n.done
}

func (n *Notifier) run() {
	defer close(n.done)
	for a := range n.queue {
		for _, s := range n.sinks {
			if SeverityRank(a.Severity) < SeverityRank(s.MinSeverity) {
				continue
			}
			var err error
			for attempt := range 3 {
				if attempt > 0 {
					time.Sleep(time.Duration(attempt) * time.Second)
				}
				if err = n.deliver(s, a); err == nil {
					break
				}
			}
			if err != nil {
				n.failed.WithLabelValues(s.Name).Inc()
				n.log.Error("alert notification failed", "sink", s.Name, "alert", a.ID, "err", err)
				continue
			}
			n.sent.WithLabelValues(s.Name).Inc()
		}
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
		msg := "From: " + s.From + "\r\nTo: " + strings.Join(s.To, ", ") + "\r\nSubject: " + headerSafe(fmt.Sprintf("[rampart %s] %s", a.Severity, a.Rule)) +
			"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + a.Summary + "\r\n\r\nalert " + a.ID + ", first seen " + a.FirstSeen.UTC().Format(time.RFC3339) +
			fmt.Sprintf(", audit entry %d\r\n", a.FirstIndex)
		return sendMail(s.Addr, s.From, s.To, []byte(msg), n.smtpTimeout)
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
	resp, err := n.client.Do(req)
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

// sendMail is smtp.SendMail (STARTTLS when offered, no auth) with one
// deadline over the whole exchange, which smtp.SendMail does not have.
func sendMail(addr, from string, to []string, msg []byte, timeout time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// headerSafe keeps a mail header on one line.
func headerSafe(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
