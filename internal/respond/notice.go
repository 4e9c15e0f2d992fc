package respond

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"text/template"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// NoticeFacts is what a notice's subject and body may name:
// {{.Incident.ID}}, {{.Incident.Title}}, {{.Alert.Summary}}, {{.Vars.service}}...
type NoticeFacts struct {
	Incident *Incident
	Alert    AlertFacts
	Run      *Run
	Vars     map[string]string
	Now      time.Time
}

func parseTemplate(src string) (*template.Template, error) {
	return template.New("notice").Option("missingkey=error").Parse(src)
}

func render(src string, f NoticeFacts) (string, error) {
	t, err := parseTemplate(src)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, f); err != nil {
		return "", err
	}
	return b.String(), nil
}

// sendNotice fills the playbook's notice with the incident's facts and
// sends it on its channel. The step that sends it must have been approved
// (Parse refuses a notice step without an approval).
func (s *Service) sendNotice(ctx context.Context, r *Run, name string) (string, error) {
	_, p, err := s.Playbook(ctx, r.Playbook, r.Version)
	if err != nil {
		return "", err
	}
	nt := p.Notices[name]
	f := NoticeFacts{Alert: r.Alert, Run: r, Vars: r.Vars, Now: s.cfg.Now()}
	if r.Incident != "" {
		if f.Incident, err = s.GetIncident(ctx, r.Incident); err != nil {
			return "", err
		}
	} else {
		f.Incident = &Incident{Title: "playbook " + r.Playbook}
	}
	subject, err := render(nt.Subject, f)
	if err != nil {
		return "", fmt.Errorf("subject: %w", err)
	}
	body, err := render(nt.Body, f)
	if err != nil {
		return "", fmt.Errorf("body: %w", err)
	}
	switch nt.Channel {
	case "smtp":
		msg := "From: " + nt.From + "\r\nTo: " + strings.Join(nt.To, ", ") + "\r\nSubject: " + headerSafe(subject) +
			"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n") + "\r\n"
		err = sendMail(ctx, nt.Addr, nt.From, nt.To, []byte(msg), s.cfg.SMTPTimeout)
	case "webhook":
		var b []byte
		b, err = json.Marshal(map[string]string{"notice": name, "audience": nt.Audience, "incident": r.Incident, "subject": subject, "text": body})
		if err == nil {
			_, err = postJSON(ctx, s.client(), nt.URL, b)
		}
	case "slack":
		// Slack's incoming-webhook format (Mattermost, Rocket.Chat and
		// Discord's /slack endpoints read it too).
		var b []byte
		b, err = json.Marshal(map[string]string{"text": "*" + slackEscape(subject) + "*\n" + slackEscape(body)})
		if err == nil {
			_, err = postJSON(ctx, s.client(), nt.URL, b)
		}
	default:
		err = fmt.Errorf("unknown channel %q", nt.Channel)
	}
	details := map[string]string{"run": r.ID, "notice": name, "channel": nt.Channel, "audience": nt.Audience}
	if err != nil {
		s.record(ctx, Actor, "respond.notice", r.Incident, audit.OutcomeFailure, err.Error(), details)
		return "", fmt.Errorf("notice %s: %w", name, err)
	}
	s.record(ctx, Actor, "respond.notice", r.Incident, audit.OutcomeSuccess, subject, details)
	if r.Incident != "" {
		s.event(ctx, r.Incident, "notice", Actor, "notice "+name+" sent to "+nt.Audience+" by "+nt.Channel+": "+subject)
	}
	return "sent notice " + name + " (" + nt.Channel + ") to " + orDefault(nt.Audience, strings.Join(nt.To, ", ")), nil
}

// sendMail is smtp.SendMail (STARTTLS when offered, no auth) bounded by
// one deadline over the whole exchange.
func sendMail(ctx context.Context, addr, from string, to []string, msg []byte, timeout time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
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

// slackEscape escapes what Slack's message format reads as markup: alert
// text an attacker influenced must not ping <!channel> or show a link of
// its choosing under another label.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
