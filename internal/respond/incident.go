package respond

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// Incident statuses, in the order an incident moves through them.
var Statuses = []string{"open", "contained", "resolved"}

func validStatus(s string) bool   { return slices.Contains(Statuses, s) }
func validSeverity(s string) bool { return slices.Contains(Severities, s) }

// Incident is an incident as operators see it.
type Incident struct {
	ID         string       `json:"id"`
	Title      string       `json:"title"`
	Status     string       `json:"status"`
	Severity   string       `json:"severity"`
	Owner      string       `json:"owner,omitempty"`
	OpenedAt   time.Time    `json:"opened_at"`
	OpenedBy   string       `json:"opened_by"`
	UpdatedAt  time.Time    `json:"updated_at"`
	Identities []string     `json:"identities,omitempty"` // the identities it is about
	Alerts     []AlertFacts `json:"alerts,omitempty"`
	Scope      *Scope       `json:"scope,omitempty"` // the last breach scope attached
}

type incidentData struct {
	Identities []string     `json:"identities,omitempty"`
	Alerts     []AlertFacts `json:"alerts,omitempty"`
	Scope      *Scope       `json:"scope,omitempty"`
}

func fromStore(si store.Incident) (*Incident, error) {
	in := &Incident{ID: si.ID, Title: si.Title, Status: si.Status, Severity: si.Severity, Owner: si.Owner, OpenedAt: si.OpenedAt,
		OpenedBy: si.OpenedBy, UpdatedAt: si.UpdatedAt}
	if len(si.Data) > 0 {
		var d incidentData
		if err := json.Unmarshal(si.Data, &d); err != nil {
			return nil, fmt.Errorf("respond: incident %s: %w", si.ID, err)
		}
		in.Identities, in.Alerts, in.Scope = d.Identities, d.Alerts, d.Scope
	}
	return in, nil
}

func (in *Incident) toStore() (store.Incident, error) {
	b, err := json.Marshal(incidentData{Identities: in.Identities, Alerts: in.Alerts, Scope: in.Scope})
	return store.Incident{ID: in.ID, Title: in.Title, Status: in.Status, Severity: in.Severity, Owner: in.Owner, OpenedAt: in.OpenedAt,
		OpenedBy: in.OpenedBy, UpdatedAt: in.UpdatedAt, Data: b}, err
}

// OpenOptions describe a new incident.
type OpenOptions struct {
	Title, Severity, Owner string
	Identities             []string
	Alert                  *AlertFacts
}

// Open opens an incident.
func (s *Service) Open(ctx context.Context, o OpenOptions, by audit.Actor) (*Incident, error) {
	if strings.TrimSpace(o.Title) == "" {
		return nil, errors.New("respond: an incident needs a title")
	}
	if o.Severity == "" {
		o.Severity = "medium"
	}
	if !validSeverity(o.Severity) {
		return nil, fmt.Errorf("respond: severity %q: want one of %s", o.Severity, strings.Join(Severities, ", "))
	}
	now := s.cfg.Now()
	in := &Incident{ID: "inc-" + now.UTC().Format("20060102") + "-" + newID("")[:8], Title: o.Title, Status: "open", Severity: o.Severity, Owner: o.Owner,
		OpenedAt: now, OpenedBy: actorString(by), UpdatedAt: now, Identities: o.Identities}
	if o.Alert != nil && o.Alert.ID != "" {
		in.Alerts = append(in.Alerts, *o.Alert)
	}
	si, err := in.toStore()
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.CreateIncident(ctx, si); err != nil {
		return nil, err
	}
	s.record(ctx, by, "incident.open", in.ID, audit.OutcomeSuccess, in.Title, map[string]string{"severity": in.Severity, "identities": strings.Join(in.Identities, " ")})
	s.event(ctx, in.ID, "open", by, "opened: "+in.Title)
	return in, nil
}

// GetIncident returns an incident.
func (s *Service) GetIncident(ctx context.Context, id string) (*Incident, error) {
	si, err := s.cfg.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	return fromStore(si)
}

// Incidents lists incidents (status "": all), newest first.
func (s *Service) Incidents(ctx context.Context, status string) ([]*Incident, error) {
	sis, err := s.cfg.Store.ListIncidents(ctx, status)
	if err != nil {
		return nil, err
	}
	out := make([]*Incident, 0, len(sis))
	for _, si := range sis {
		in, err := fromStore(si)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

func (s *Service) saveIncident(ctx context.Context, in *Incident) error {
	in.UpdatedAt = s.cfg.Now()
	si, err := in.toStore()
	if err != nil {
		return err
	}
	return s.cfg.Store.UpdateIncident(ctx, si)
}

// Note adds a note to the timeline.
func (s *Service) Note(ctx context.Context, id, text string, by audit.Actor) error {
	if strings.TrimSpace(text) == "" {
		return errors.New("respond: an empty note")
	}
	if _, err := s.GetIncident(ctx, id); err != nil {
		return err
	}
	s.record(ctx, by, "incident.note", id, audit.OutcomeSuccess, "", nil)
	return s.event(ctx, id, "note", by, text)
}

// Update changes an incident's status, severity or owner ("": unchanged).
func (s *Service) Update(ctx context.Context, id, status, severity, owner, reason string, by audit.Actor) (*Incident, error) {
	in, err := s.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	var changed []string
	if status != "" && status != in.Status {
		if !validStatus(status) {
			return nil, fmt.Errorf("respond: status %q: want one of %s", status, strings.Join(Statuses, ", "))
		}
		changed = append(changed, "status "+in.Status+" → "+status)
		in.Status = status
	}
	if severity != "" && severity != in.Severity {
		if !validSeverity(severity) {
			return nil, fmt.Errorf("respond: severity %q: want one of %s", severity, strings.Join(Severities, ", "))
		}
		changed = append(changed, "severity "+in.Severity+" → "+severity)
		in.Severity = severity
	}
	if owner != "" && owner != in.Owner {
		changed = append(changed, "owner "+orDefault(in.Owner, "none")+" → "+owner)
		in.Owner = owner
	}
	if len(changed) == 0 {
		return in, nil
	}
	if err := s.saveIncident(ctx, in); err != nil {
		return nil, err
	}
	text := strings.Join(changed, ", ")
	if reason != "" {
		text += ": " + reason
	}
	s.record(ctx, by, "incident.update", id, audit.OutcomeSuccess, reason, map[string]string{"changes": strings.Join(changed, "; ")})
	return in, s.event(ctx, id, "status", by, text)
}

func (s *Service) event(ctx context.Context, incident, kind string, by audit.Actor, text string) error {
	_, err := s.cfg.Store.AppendIncidentEvent(context.WithoutCancel(ctx), store.IncidentEvent{Incident: incident, Time: s.cfg.Now(), Kind: kind,
		Actor: actorString(by), Text: text})
	if err != nil {
		s.cfg.Log.Error("respond: timeline event lost", "incident", incident, "kind", kind, "err", err)
	}
	return err
}

// incidentStep opens the run's incident, or updates it.
func (s *Service) incidentStep(ctx context.Context, r *Run, args map[string]string) (string, error) {
	if r.Incident == "" {
		o := OpenOptions{Title: orDefault(args["title"], "playbook "+r.Playbook), Severity: orDefault(args["severity"], r.Alert.Severity), Owner: args["owner"]}
		if !validSeverity(o.Severity) {
			o.Severity = "high"
		}
		if id := args["identity"]; id != "" {
			o.Identities = []string{id}
		}
		if r.Alert.ID != "" {
			a := r.Alert
			o.Alert = &a
		}
		in, err := s.Open(ctx, o, Actor)
		if err != nil {
			return "", err
		}
		r.Incident = in.ID
		// The steps before this one belong to the incident too.
		s.event(ctx, in.ID, "run", Actor, "playbook "+r.Playbook+" run "+r.ID+" (started by "+actorString(r.StartedBy)+") opened it")
		if args["status"] != "" && args["status"] != "open" {
			if _, err := s.Update(ctx, in.ID, args["status"], "", "", "playbook "+r.Playbook, Actor); err != nil {
				return "", err
			}
		}
		return "opened incident " + in.ID, nil
	}
	in, err := s.Update(ctx, r.Incident, args["status"], args["severity"], args["owner"], "playbook "+r.Playbook, Actor)
	if err != nil {
		return "", err
	}
	return "updated incident " + in.ID + " (" + in.Status + ")", nil
}

// TimelineEntry is one line of an incident's timeline.
type TimelineEntry struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"` // alert, open, run, step, approval_requested, approved, note, status, quarantine, lift, notice, scope
	Actor string    `json:"actor,omitempty"`
	Text  string    `json:"text"`
}

// Timeline builds the incident's timeline from its alerts, the steps and
// approvals of its runs, and its events (notes, status changes,
// quarantines, notices), in time order.
func (s *Service) Timeline(ctx context.Context, id string) (*Incident, []TimelineEntry, []*Run, error) {
	in, err := s.GetIncident(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	var tl []TimelineEntry
	for _, a := range in.Alerts {
		tl = append(tl, TimelineEntry{Time: a.FirstSeen, Kind: "alert", Actor: DetectActor.User, Text: fmt.Sprintf("alert %s (%s, %s): %s", a.ID, a.Rule, a.Severity, a.Summary)})
	}
	evs, err := s.cfg.Store.IncidentEvents(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, e := range evs {
		tl = append(tl, TimelineEntry{Time: e.Time, Kind: e.Kind, Actor: e.Actor, Text: e.Text})
	}
	runs, err := s.Runs(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, r := range runs {
		for _, st := range r.Steps {
			if st.Approval != nil {
				tl = append(tl, TimelineEntry{Time: st.Approval.RequestedAt, Kind: "approval_requested", Actor: Actor.User,
					Text: "step " + st.Name + " waits for approval by a " + st.Approval.Role})
				if !st.Approval.GrantedAt.IsZero() {
					tl = append(tl, TimelineEntry{Time: st.Approval.GrantedAt, Kind: "approved", Actor: actorString(st.Approval.GrantedBy),
						Text: "approved step " + st.Name})
				}
			}
			if st.Started.IsZero() {
				continue
			}
			text := "step " + st.Name + " (" + st.Action + ") " + st.State
			if st.Result != "" {
				text += ": " + st.Result
			}
			if st.Error != "" {
				text += ": " + st.Error + " (on failure: " + st.OnFailure + ")"
			}
			tl = append(tl, TimelineEntry{Time: st.Ended, Kind: "step", Actor: Actor.User, Text: text})
		}
	}
	sort.SliceStable(tl, func(i, j int) bool { return tl[i].Time.Before(tl[j].Time) })
	return in, tl, runs, nil
}

// Report is the incident's post-mortem in Markdown: the facts filled in
// from the timeline and the breach scope, the analysis left for people.
func (s *Service) Report(ctx context.Context, id string) (string, error) {
	in, tl, runs, err := s.Timeline(ctx, id)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Post-mortem: %s\n\n", in.Title)
	fmt.Fprintf(&b, "| | |\n|---|---|\n| Incident | %s |\n| Status | %s |\n| Severity | %s |\n| Owner | %s |\n| Opened | %s by %s |\n",
		in.ID, in.Status, in.Severity, orDefault(in.Owner, "_to assign_"), in.OpenedAt.UTC().Format(time.RFC3339), in.OpenedBy)
	if len(in.Identities) > 0 {
		fmt.Fprintf(&b, "| Identities | %s |\n", strings.Join(in.Identities, ", "))
	}
	b.WriteString("\n## Summary\n\n_What happened, in two sentences, for someone who was not there._\n\n")
	b.WriteString("## Detection\n\n")
	if len(in.Alerts) == 0 {
		b.WriteString("Opened by hand; no alert is attached.\n\n")
	}
	for _, a := range in.Alerts {
		fmt.Fprintf(&b, "- %s: alert `%s` from rule `%s` (%s): %s\n", a.FirstSeen.UTC().Format(time.RFC3339), a.ID, a.Rule, a.Severity, a.Summary)
	}
	b.WriteString("\n## Response\n\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "Playbook `%s` v%d, run `%s`, started by %s at %s: %s.", r.Playbook, r.Version, r.ID, actorString(r.StartedBy), r.StartedAt.UTC().Format(time.RFC3339), r.State)
		if !r.ContainedAt.IsZero() && !r.Alert.FirstSeen.IsZero() {
			fmt.Fprintf(&b, " Alert to containment: %s.", r.ContainedAt.Sub(r.Alert.FirstSeen).Round(time.Millisecond))
		}
		b.WriteString("\n\n| Step | Action | Result |\n|---|---|---|\n")
		for _, st := range r.Steps {
			res := st.State
			if st.Result != "" {
				res += ": " + st.Result
			}
			if st.Error != "" {
				res += ": " + st.Error
			}
			if st.Approval != nil && !st.Approval.GrantedAt.IsZero() {
				res += " (approved by " + actorString(st.Approval.GrantedBy) + ")"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", st.Name, st.Action, mdCell(res))
		}
		b.WriteString("\n")
	}
	b.WriteString("## Timeline\n\n")
	for _, e := range tl {
		fmt.Fprintf(&b, "- %s **%s** %s: %s\n", e.Time.UTC().Format(time.RFC3339), e.Kind, orDefault(e.Actor, "-"), e.Text)
	}
	b.WriteString("\n## What was reached (breach scope)\n\n")
	if in.Scope == nil {
		b.WriteString("_Not computed yet: `rampart incident scope " + in.ID + " --identity ID --since T`._\n\n")
	} else {
		b.WriteString(in.Scope.Markdown())
	}
	b.WriteString("## Root cause\n\n_Why it was possible._\n\n## What went well, what did not\n\n_..._\n\n## Actions\n\n| Action | Owner | Due |\n|---|---|---|\n| | | |\n")
	return b.String(), nil
}

func mdCell(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }

// AttachScope stores a breach-scope report with the incident.
func (s *Service) AttachScope(ctx context.Context, id string, sc *Scope, by audit.Actor) error {
	in, err := s.GetIncident(ctx, id)
	if err != nil {
		return err
	}
	in.Scope = sc
	if !slices.Contains(in.Identities, sc.Identity) {
		in.Identities = append(in.Identities, sc.Identity)
	}
	if err := s.saveIncident(ctx, in); err != nil {
		return err
	}
	s.record(ctx, by, "incident.scope", id, audit.OutcomeSuccess, "", map[string]string{"identity": sc.Identity, "since": sc.Since.UTC().Format(time.RFC3339)})
	return s.event(ctx, id, "scope", by, fmt.Sprintf("breach scope of %s attached: %d services reached, %d refused", sc.Identity, len(sc.Reached), len(sc.Refused)))
}
