package respond

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/rampartsec/rampart/internal/mailsend"
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
		msg := "From: " + nt.From + "\r\nTo: " + strings.Join(nt.To, ", ") + "\r\nSubject: " + mailsend.HeaderSafe(subject) +
			"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n") + "\r\n"
		err = mailsend.Send(ctx, nt.Addr, nt.From, nt.To, []byte(msg), s.cfg.SMTPTimeout)
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

// slackEscape escapes what Slack's message format reads as markup: alert
// text an attacker influenced must not ping <!channel> or show a link of
// its choosing under another label.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
