package detect

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store/storetest"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	return storetest.SQLite(t, t.TempDir())
}

func TestTailerStoresAlertsOnceAcrossReplays(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	burst := repeat(25, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") })
	if _, err := l.AppendEntries(ctx, burst...); err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	var notified []store.Alert
	tl := &Tailer{Dir: dir, Engine: NewEngine(Default()), Store: st, OnAlert: func(_ context.Context, a store.Alert) { notified = append(notified, a) }}
	if err := tl.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if len(notified) != 1 || notified[0].Rule != "denied-burst" || notified[0].FirstIndex != 19 {
		t.Fatalf("alerts after the burst: %+v", notified)
	}
	// More entries: the tailer continues where it stopped.
	l.AppendEntries(ctx, ev(time.Minute, "audit.ingest.gap", "failure", "entries 4 to 5 never arrived", audit.Actor{SpiffeID: orders}, nil))
	tl.Step(ctx)
	if len(notified) != 2 || notified[1].Rule != "audit-ingestion-gap" {
		t.Fatalf("alerts after the gap: %+v", notified)
	}
	// A restarted server replays the log from the start: nothing new.
	notified = nil
	tl2 := &Tailer{Dir: dir, Engine: NewEngine(Default()), Store: st, OnAlert: func(_ context.Context, a store.Alert) { notified = append(notified, a) }}
	if err := tl2.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if len(notified) != 0 {
		t.Fatalf("a replay raised %d alerts again", len(notified))
	}
	all, _ := st.ListAlerts(ctx, store.AlertFilter{})
	if len(all) != 2 {
		t.Fatalf("%d alerts stored, want 2", len(all))
	}
}

// failingStore refuses every alert but the lag alert, as a store that is
// down would: the tailer cannot get past the entry that fires.
type failingStore struct {
	store.Store
	failing bool
}

func (f *failingStore) UpsertAlert(ctx context.Context, a store.Alert) (bool, error) {
	if f.failing && a.Rule != LagRule {
		return false, errors.New("store unavailable")
	}
	return f.Store.UpsertAlert(ctx, a)
}

func TestFallingBehindIsAnAlert(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	l.AppendEntries(ctx, repeat(30, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") })...)
	st := &failingStore{Store: openStore(t), failing: true}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tl := &Tailer{Dir: dir, Engine: NewEngine(Default()), Store: st, Now: func() time.Time { return now }, MaxLag: time.Minute}
	if err := tl.Step(ctx); err == nil {
		t.Fatal("a pass with the store down succeeded")
	}
	now = now.Add(30 * time.Second)
	tl.Step(ctx)
	lagAlerts := func() []store.Alert {
		all, _ := st.ListAlerts(ctx, store.AlertFilter{Rule: LagRule})
		return all
	}
	if n := len(lagAlerts()); n != 0 {
		t.Fatalf("%d lag alerts within MaxLag", n)
	}
	now = now.Add(time.Minute)
	tl.Step(ctx)
	if all := lagAlerts(); len(all) != 1 || !strings.Contains(all[0].Summary, "10 entries behind") {
		t.Fatalf("lag alerts: %+v", all)
	}
	// Still behind: the same episode, no second alert. Then the store
	// recovers, detection catches up, and the burst alert is not lost.
	now = now.Add(time.Minute)
	tl.Step(ctx)
	st.failing = false
	if err := tl.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(lagAlerts()); n != 1 {
		t.Fatalf("%d lag alerts, want 1", n)
	}
	if all, _ := st.ListAlerts(ctx, store.AlertFilter{Rule: "denied-burst"}); len(all) != 1 {
		t.Fatalf("burst alerts after recovery: %+v", all)
	}
}

// smtpServer speaks enough SMTP (RFC 5321) for net/smtp and keeps messages.
func smtpServer(t *testing.T) (string, func() []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var msgs []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				io.WriteString(c, "220 test ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
					case "EHLO", "HELO":
						io.WriteString(c, "250 test\r\n")
					case "DATA":
						io.WriteString(c, "354 go on\r\n")
						var b strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil || l == ".\r\n" {
								break
							}
							b.WriteString(l)
						}
						mu.Lock()
						msgs = append(msgs, b.String())
						mu.Unlock()
						io.WriteString(c, "250 queued\r\n")
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), msgs...) }
}

func TestSinks(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[r.URL.Path] = b
		mu.Unlock()
	}))
	defer srv.Close()
	smtpAddr, mails := smtpServer(t)
	rs, err := Parse([]byte(`rules:
  - name: a
sinks:
  - name: hook
    type: webhook
    url: ` + srv.URL + `/hook
  - name: chat
    type: slack
    url: ` + srv.URL + `/slack
    min_severity: critical
  - name: mail
    type: smtp
    addr: ` + smtpAddr + `
    from: rampart@example.org
    to: [oncall@example.org]
`))
	if err != nil {
		t.Fatal(err)
	}
	n := NewNotifier(rs.Sinks, nil, nil, nil)
	a := store.Alert{ID: "alr_1", Rule: "denied-burst", Severity: "high", Summary: "denied-burst: 20 matching entries\r\nBcc: evil@example.org", FirstIndex: 7, FirstSeen: t0}
	n.Notify(context.Background(), a)
	n.Close()
	var hook WebhookPayload
	if err := json.Unmarshal(bodies["/hook"], &hook); err != nil || hook.ID != "alr_1" || hook.Rule != "denied-burst" || hook.FirstIndex != 7 {
		t.Fatalf("webhook got %s (%v)", bodies["/hook"], err)
	}
	if _, ok := bodies["/slack"]; ok {
		t.Fatal("a high alert went to a sink that wants critical ones only")
	}
	m := mails()
	if len(m) != 1 || !strings.Contains(m[0], "Subject: [rampart high] denied-burst") || !strings.Contains(m[0], "To: oncall@example.org") {
		t.Fatalf("mail: %q", m)
	}
	// The summary goes in the body, never into headers.
	head, _, _ := strings.Cut(m[0], "\r\n\r\n")
	if strings.Contains(head, "Bcc") {
		t.Fatalf("alert text injected a mail header: %q", head)
	}

	n = NewNotifier(rs.Sinks, nil, nil, nil)
	a.Severity = "critical"
	n.Notify(context.Background(), a)
	n.Close()
	var slack map[string]string
	if err := json.Unmarshal(bodies["/slack"], &slack); err != nil || !strings.Contains(slack["text"], "[CRITICAL] denied-burst") {
		t.Fatalf("slack got %s", bodies["/slack"])
	}
}

// Issue 26 item 9: the SMTP sink had no timeout; a mail server that
// accepts and never answers held the notifier forever.
func TestSMTPSinkTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	n := NewNotifier(nil, nil, nil, nil)
	defer n.Close()
	n.smtpTimeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		done <- n.deliver(Sink{Type: "smtp", Addr: ln.Addr().String(), From: "a@example.org", To: []string{"b@example.org"}}, store.Alert{ID: "x"})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("delivery to a silent server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delivery to a silent server still waiting after 10 s")
	}
}
