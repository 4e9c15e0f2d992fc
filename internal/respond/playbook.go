package respond

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/yamlfields"
)

// Playbook is a parsed, validated playbook.
type Playbook struct {
	Name        string
	Description string
	Trigger     Trigger
	// Vars binds variables to fields of the triggering alert: "rule",
	// "severity", "summary", "id", or a field of its group
	// (actor.spiffe_id, target, ...).
	Vars    map[string]string
	Steps   []Step
	Notices map[string]Notice
}

// Trigger names the alerts that start a playbook by themselves.
type Trigger struct {
	Rules    []string          // detection rule names (one of them)
	Severity string            // the lowest severity (""; any)
	Labels   map[string]string // group field -> value, or prefix ending in "*"
}

// Step is one action of a playbook.
type Step struct {
	Name    string
	Action  string
	With    map[string]string // arguments, ${var} substituted at run time
	Timeout time.Duration
	// OnFailure: "stop" (default) ends the run, "continue" goes on.
	OnFailure string
	// When: "" runs always; "failed" only if an earlier step failed.
	When string
	// Approval, if set, holds the step until an operator other than the
	// one who started the run approves it.
	Approval *Approval
	Line     int
}

// Approval is who must approve a step, and for how long the request
// stands (0: the server's default, DefaultApprovalTTL unless set).
type Approval struct {
	Role    permission.Role
	Expires time.Duration
}

// Notice is a pre-written message for one scenario and audience.
type Notice struct {
	Name     string
	Audience string
	Channel  string // smtp, webhook, slack
	From     string
	To       []string
	Addr     string // SMTP server host:port
	URL      string // webhook or Slack-compatible URL
	Subject  string
	Body     string // text/template over the incident's facts
}

// DefaultTimeout is a step's timeout when the playbook gives none.
const DefaultTimeout = 30 * time.Second

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
var varRE = regexp.MustCompile(`\$\{([a-z0-9_.]+)\}`)

// builtinVars are the variables every step may use.
var builtinVars = []string{"alert.id", "alert.rule", "alert.severity", "alert.summary", "alert.group", "incident.id", "run.id", "playbook"}

// Severities, lowest first.
var Severities = []string{"info", "low", "medium", "high", "critical"}

func errAt(n *yaml.Node, where, format string, a ...any) error {
	return fmt.Errorf("respond: %w", yamlfields.At(n, where, format, a...))
}

// Parse decodes and validates a playbook. knownRule says whether a
// detection rule exists (nil: any name is accepted). Every error names the
// line and the field.
func Parse(src []byte, knownRule func(string) bool) (*Playbook, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(src)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("respond: empty playbook")
		}
		return nil, fmt.Errorf("respond: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	root := doc.Content[0]
	f, err := yamlfields.Map(root, "playbook", "name", "description", "trigger", "vars", "steps", "notices")
	if err != nil {
		return nil, fmt.Errorf("respond: %w", err)
	}
	p := &Playbook{Vars: map[string]string{}, Notices: map[string]Notice{}}
	n, ok := f["name"]
	if !ok {
		return nil, errAt(root, "name", "required")
	}
	if p.Name, err = scalar(n, "name"); err != nil {
		return nil, err
	}
	if !nameRE.MatchString(p.Name) {
		return nil, errAt(n, "name", "%q: lower-case words and dashes", p.Name)
	}
	if n, ok := f["description"]; ok {
		if p.Description, err = scalar(n, "description"); err != nil {
			return nil, err
		}
	}
	if n, ok := f["trigger"]; ok {
		if err := parseTrigger(n, &p.Trigger, knownRule); err != nil {
			return nil, err
		}
	}
	if n, ok := f["vars"]; ok {
		m, err := stringMap(n, "vars")
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			if slices.Contains(builtinVars, k) || !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(k) {
				return nil, errAt(n, "vars."+k, "variable names are lower-case identifiers and not one of %s", strings.Join(builtinVars, ", "))
			}
			p.Vars[k] = v
		}
	}
	if n, ok := f["notices"]; ok {
		if n.Kind != yaml.MappingNode {
			return nil, errAt(n, "notices", "want a mapping of notice names")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			nt, err := parseNotice(n.Content[i+1], "notices."+name)
			if err != nil {
				return nil, err
			}
			nt.Name = name
			p.Notices[name] = nt
		}
	}
	sn, ok := f["steps"]
	if !ok {
		return nil, errAt(root, "steps", "required: at least one step")
	}
	if sn.Kind != yaml.SequenceNode || len(sn.Content) == 0 {
		return nil, errAt(sn, "steps", "want a list of at least one step")
	}
	names := map[string]bool{}
	for i, c := range sn.Content {
		where := fmt.Sprintf("steps[%d]", i)
		st, err := parseStep(c, where, p)
		if err != nil {
			return nil, err
		}
		if st.Name == "" {
			st.Name = fmt.Sprintf("%d-%s", i+1, strings.ReplaceAll(st.Action, "_", "-"))
		}
		if names[st.Name] {
			return nil, errAt(c, where+".name", "%q used twice", st.Name)
		}
		names[st.Name] = true
		if i > 0 {
			prev := p.Steps[i-1]
			if prev.Action == "stop" && prev.When == "" {
				return nil, errAt(c, where, "unreachable: step %q before it stops the playbook unconditionally", prev.Name)
			}
		}
		p.Steps = append(p.Steps, st)
	}
	return p, nil
}

func parseTrigger(n *yaml.Node, t *Trigger, knownRule func(string) bool) error {
	f, err := yamlfields.Map(n, "trigger", "rules", "severity", "labels")
	if err != nil {
		return fmt.Errorf("respond: %w", err)
	}
	rn, ok := f["rules"]
	if !ok {
		return errAt(n, "trigger.rules", "required: the detection rules that start this playbook")
	}
	rules, nodes, err := list(rn, "trigger.rules")
	if err != nil {
		return err
	}
	if len(rules) == 0 {
		return errAt(rn, "trigger.rules", "at least one rule")
	}
	for i, r := range rules {
		if knownRule != nil && !knownRule(r) {
			return errAt(nodes[i], fmt.Sprintf("trigger.rules[%d]", i), "unknown detection rule %q (rampart detect rules lists them)", r)
		}
	}
	t.Rules = rules
	if sv, ok := f["severity"]; ok {
		if t.Severity, err = scalar(sv, "trigger.severity"); err != nil {
			return err
		}
		if !slices.Contains(Severities, t.Severity) {
			return errAt(sv, "trigger.severity", "%q: want one of %s", t.Severity, strings.Join(Severities, ", "))
		}
	}
	if ln, ok := f["labels"]; ok {
		if t.Labels, err = stringMap(ln, "trigger.labels"); err != nil {
			return err
		}
	}
	return nil
}

func parseNotice(n *yaml.Node, where string) (Notice, error) {
	f, err := yamlfields.Map(n, where, "audience", "channel", "from", "to", "addr", "url", "subject", "body")
	if err != nil {
		return Notice{}, fmt.Errorf("respond: %w", err)
	}
	var nt Notice
	get := func(k string, dst *string) error {
		if v, ok := f[k]; ok {
			s, err := scalar(v, where+"."+k)
			*dst = s
			return err
		}
		return nil
	}
	for k, dst := range map[string]*string{"audience": &nt.Audience, "channel": &nt.Channel, "from": &nt.From, "addr": &nt.Addr, "url": &nt.URL, "subject": &nt.Subject, "body": &nt.Body} {
		if err := get(k, dst); err != nil {
			return nt, err
		}
	}
	if tn, ok := f["to"]; ok {
		if nt.To, _, err = list(tn, where+".to"); err != nil {
			return nt, err
		}
	}
	if nt.Body == "" {
		return nt, errAt(n, where+".body", "required: the pre-written text")
	}
	if _, err := parseTemplate(nt.Body); err != nil {
		return nt, errAt(f["body"], where+".body", "%v", err)
	}
	switch nt.Channel {
	case "smtp":
		if nt.Addr == "" || nt.From == "" || len(nt.To) == 0 {
			return nt, errAt(n, where, "an smtp notice needs addr, from and to")
		}
		for _, s := range append([]string{nt.From, nt.Subject}, nt.To...) {
			if strings.ContainsAny(s, "\r\n") {
				return nt, errAt(n, where, "line breaks in a mail header")
			}
		}
	case "webhook", "slack":
		if !strings.HasPrefix(nt.URL, "https://") && !strings.HasPrefix(nt.URL, "http://") {
			return nt, errAt(n, where+".url", "a %s notice needs an http(s) url", nt.Channel)
		}
	default:
		return nt, errAt(n, where+".channel", "%q: want smtp, webhook or slack", nt.Channel)
	}
	return nt, nil
}

func parseStep(n *yaml.Node, where string, p *Playbook) (Step, error) {
	f, err := yamlfields.Map(n, where, "name", "action", "with", "timeout", "on_failure", "when", "approval")
	if err != nil {
		return Step{}, fmt.Errorf("respond: %w", err)
	}
	st := Step{Timeout: DefaultTimeout, OnFailure: "stop", Line: n.Line, With: map[string]string{}}
	if v, ok := f["name"]; ok {
		if st.Name, err = scalar(v, where+".name"); err != nil {
			return st, err
		}
		if !nameRE.MatchString(st.Name) {
			return st, errAt(v, where+".name", "%q: lower-case words and dashes", st.Name)
		}
	}
	an, ok := f["action"]
	if !ok {
		return st, errAt(n, where+".action", "required (one of %s)", strings.Join(ActionNames(), ", "))
	}
	if st.Action, err = scalar(an, where+".action"); err != nil {
		return st, err
	}
	spec, ok := actions[st.Action]
	if !ok {
		return st, errAt(an, where+".action", "unknown action %q (want one of %s)", st.Action, strings.Join(ActionNames(), ", "))
	}
	if wn, ok := f["with"]; ok {
		if st.With, err = stringMap(wn, where+".with"); err != nil {
			return st, err
		}
	}
	wn := f["with"]
	if wn == nil {
		wn = n
	}
	for _, k := range spec.Required {
		if _, ok := st.With[k]; !ok {
			return st, errAt(wn, where+".with."+k, "required by action %s", st.Action)
		}
	}
	for k, v := range st.With {
		if !slices.Contains(spec.Required, k) && !slices.Contains(spec.Optional, k) {
			return st, errAt(wn, where+".with."+k, "unknown argument of action %s (want %s)", st.Action, strings.Join(append(append([]string{}, spec.Required...), spec.Optional...), ", "))
		}
		for _, m := range varRE.FindAllStringSubmatch(v, -1) {
			if _, ok := p.Vars[m[1]]; !ok && !slices.Contains(builtinVars, m[1]) {
				return st, errAt(wn, where+".with."+k, "unknown variable ${%s} (declare it under vars, or use one of %s)", m[1], strings.Join(builtinVars, ", "))
			}
		}
	}
	if spec.Check != nil {
		if err := spec.Check(st.With, p); err != nil {
			return st, errAt(wn, where+".with", "%v", err)
		}
	}
	if v, ok := f["timeout"]; ok {
		s, err := scalar(v, where+".timeout")
		if err != nil {
			return st, err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > time.Hour {
			return st, errAt(v, where+".timeout", "%q: want a duration between 1ms and 1h", s)
		}
		st.Timeout = d
	}
	if v, ok := f["on_failure"]; ok {
		if st.OnFailure, err = scalar(v, where+".on_failure"); err != nil {
			return st, err
		}
		if st.OnFailure != "stop" && st.OnFailure != "continue" {
			return st, errAt(v, where+".on_failure", "%q: want stop or continue", st.OnFailure)
		}
	}
	if v, ok := f["when"]; ok {
		if st.When, err = scalar(v, where+".when"); err != nil {
			return st, err
		}
		if st.When != "failed" {
			return st, errAt(v, where+".when", "%q: want failed (run only after a step failed), or leave it out", st.When)
		}
	}
	if v, ok := f["approval"]; ok {
		af, err := yamlfields.Map(v, where+".approval", "role", "expires")
		if err != nil {
			return st, fmt.Errorf("respond: %w", err)
		}
		rn, ok := af["role"]
		if !ok {
			return st, errAt(v, where+".approval.role", "required: the role of the operator who must approve (e.g. %s)", permission.Approver)
		}
		s, err := scalar(rn, where+".approval.role")
		if err != nil {
			return st, err
		}
		role, err := permission.ParseRole(s)
		if err != nil {
			return st, errAt(rn, where+".approval.role", "%v", err)
		}
		if !role.Allows(permission.ApprovalGrant) {
			return st, errAt(rn, where+".approval.role", "role %s cannot approve (it does not hold %s)", role, permission.ApprovalGrant)
		}
		st.Approval = &Approval{Role: role}
		if en, ok := af["expires"]; ok {
			s, err := scalar(en, where+".approval.expires")
			if err != nil {
				return st, err
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < time.Minute || d > 7*24*time.Hour {
				return st, errAt(en, where+".approval.expires", "%q: want a duration between 1m and 168h", s)
			}
			st.Approval.Expires = d
		}
	}
	if st.Action == "notice" && st.Approval == nil {
		return st, errAt(n, where+".approval", "required: a notice goes out only after an operator approves it (approval: {role: %s})", permission.Approver)
	}
	return st, nil
}

func scalar(n *yaml.Node, where string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, where, "want a string")
	}
	return n.Value, nil
}

func list(n *yaml.Node, where string) ([]string, []*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}, []*yaml.Node{n}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, nil, errAt(n, where, "want a list")
	}
	var out []string
	for i, c := range n.Content {
		s, err := scalar(c, fmt.Sprintf("%s[%d]", where, i))
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
	}
	return out, n.Content, nil
}

func stringMap(n *yaml.Node, where string) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errAt(n, where, "want a mapping")
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if _, dup := out[k]; dup {
			return nil, errAt(n.Content[i], where+"."+k, "given twice")
		}
		v, err := scalar(n.Content[i+1], where+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// ActionNames lists the actions, sorted.
func ActionNames() []string {
	var out []string
	for k := range actions {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Matches says whether alert a starts p by itself.
func (p *Playbook) Matches(a AlertFacts) bool {
	if len(p.Trigger.Rules) == 0 || !slices.Contains(p.Trigger.Rules, a.Rule) {
		return false
	}
	if p.Trigger.Severity != "" && slices.Index(Severities, a.Severity) < slices.Index(Severities, p.Trigger.Severity) {
		return false
	}
	labels := a.Labels()
	for k, want := range p.Trigger.Labels {
		got, ok := labels[k]
		if !ok {
			return false
		}
		if prefix, isPrefix := strings.CutSuffix(want, "*"); isPrefix {
			if !strings.HasPrefix(got, prefix) {
				return false
			}
		} else if got != want {
			return false
		}
	}
	return true
}
