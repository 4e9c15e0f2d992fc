package detect

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/yamlfields"
)

// Severities, lowest first.
var severities = []string{"info", "low", "medium", "high", "critical"}

// SeverityRank orders severities (info 0 ... critical 4; -1 if unknown).
func SeverityRank(s string) int { return slices.Index(severities, s) }

// Rule is one compiled detection rule.
type Rule struct {
	Name        string
	Description string
	Severity    string
	Actions     []string // empty: every action
	Condition   string   // CEL source; "" is true
	GroupBy     []string
	Window      time.Duration
	Threshold   int
	NewTerms    []string
	Baseline    time.Duration
	Dedup       time.Duration // firings within this span merge into one alert

	prg *condition
}

// Sink says where alerts go.
type Sink struct {
	Name        string
	Type        string // webhook, slack, smtp
	URL         string // webhook, slack
	Addr        string // smtp: host:port
	From        string // smtp
	To          []string
	MinSeverity string
}

// RuleSet is a parsed rules file.
type RuleSet struct {
	Rules []*Rule
	Sinks []Sink
}

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// fieldRE: entry paths usable in group_by and new_terms.
var fieldRE = regexp.MustCompile(`^(action|target|outcome|reason|request_id|source|stream|actor\.spiffe_id|actor\.user|details\.[A-Za-z0-9_.-]+)$`)

func errAt(n *yaml.Node, where, format string, a ...any) error {
	return fmt.Errorf("detect: line %d: %s: %s", n.Line, where, fmt.Sprintf(format, a...))
}

// Parse reads a rules file strictly: unknown fields, bad durations, CEL that
// does not compile or is not boolean, and contradictory options are errors
// naming the line and field.
func Parse(src []byte) (*RuleSet, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("detect: empty rules file")
		}
		return nil, fmt.Errorf("detect: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("detect: empty rules file")
	}
	top, err := fields(doc.Content[0], "rules file", "rules", "sinks")
	if err != nil {
		return nil, err
	}
	rs := &RuleSet{}
	rn, ok := top["rules"]
	if !ok || rn.Kind != yaml.SequenceNode || len(rn.Content) == 0 {
		return nil, errAt(doc.Content[0], "rules", "want a non-empty list of rules")
	}
	env, err := celEnv()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, n := range rn.Content {
		r, err := parseRule(n, fmt.Sprintf("rules[%d]", i), env)
		if err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, errAt(n, fmt.Sprintf("rules[%d].name", i), "rule %q defined twice", r.Name)
		}
		seen[r.Name] = true
		rs.Rules = append(rs.Rules, r)
	}
	if sn, ok := top["sinks"]; ok {
		if sn.Kind != yaml.SequenceNode {
			return nil, errAt(sn, "sinks", "want a list")
		}
		for i, n := range sn.Content {
			s, err := parseSink(n, fmt.Sprintf("sinks[%d]", i))
			if err != nil {
				return nil, err
			}
			rs.Sinks = append(rs.Sinks, s)
		}
	}
	return rs, nil
}

func parseRule(n *yaml.Node, where string, env *cel.Env) (*Rule, error) {
	f, err := fields(n, where, "name", "description", "severity", "actions", "condition", "group_by", "window", "threshold", "new_terms", "dedup")
	if err != nil {
		return nil, err
	}
	r := &Rule{Severity: "medium"}
	str := func(key string, dst *string) error {
		if v, ok := f[key]; ok {
			if v.Kind != yaml.ScalarNode {
				return errAt(v, where+"."+key, "want a string")
			}
			*dst = v.Value
		}
		return nil
	}
	dur := func(key string, dst *time.Duration) error {
		var s string
		if err := str(key, &s); err != nil || s == "" {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errAt(f[key], where+"."+key, "%q: want a positive duration such as 30s, 5m, 24h", s)
		}
		*dst = d
		return nil
	}
	var thr string
	for _, e := range []error{str("name", &r.Name), str("description", &r.Description), str("severity", &r.Severity),
		str("condition", &r.Condition), dur("window", &r.Window), dur("dedup", &r.Dedup), str("threshold", &thr)} {
		if e != nil {
			return nil, e
		}
	}
	if !nameRE.MatchString(r.Name) {
		return nil, errAt(n, where+".name", "%q: want lower-case words joined by dashes, e.g. denied-burst", r.Name)
	}
	where = fmt.Sprintf("%s (%s)", where, r.Name)
	if SeverityRank(r.Severity) < 0 {
		return nil, errAt(f["severity"], where+".severity", "%q: want one of %s", r.Severity, strings.Join(severities, ", "))
	}
	if r.Actions, err = strList(f, "actions", where); err != nil {
		return nil, err
	}
	if r.GroupBy, err = strList(f, "group_by", where); err != nil {
		return nil, err
	}
	for _, g := range r.GroupBy {
		if !fieldRE.MatchString(g) {
			return nil, errAt(f["group_by"], where+".group_by", "%q is not an entry field (actor.spiffe_id, actor.user, action, target, outcome, reason, source, details.NAME)", g)
		}
	}
	if thr != "" {
		if r.Threshold, err = strconv.Atoi(thr); err != nil || r.Threshold < 1 || r.Threshold > 1_000_000 {
			return nil, errAt(f["threshold"], where+".threshold", "%q: want a whole number from 1 to 1000000", thr)
		}
	}
	if nt, ok := f["new_terms"]; ok {
		nf, err := fields(nt, where+".new_terms", "fields", "baseline")
		if err != nil {
			return nil, err
		}
		if r.NewTerms, err = strList(nf, "fields", where+".new_terms"); err != nil {
			return nil, err
		}
		if len(r.NewTerms) == 0 {
			return nil, errAt(nt, where+".new_terms.fields", "want at least one field")
		}
		for _, g := range r.NewTerms {
			if !fieldRE.MatchString(g) {
				return nil, errAt(nt, where+".new_terms.fields", "%q is not an entry field", g)
			}
		}
		b, ok := nf["baseline"]
		if !ok {
			return nil, errAt(nt, where+".new_terms.baseline", "required: how long to learn before alerting, e.g. 24h")
		}
		if r.Baseline, err = time.ParseDuration(b.Value); err != nil || r.Baseline < 0 {
			return nil, errAt(b, where+".new_terms.baseline", "%q: want a duration such as 24h", b.Value)
		}
	}
	switch {
	case r.Threshold > 0 && r.NewTerms != nil:
		return nil, errAt(n, where, "threshold and new_terms cannot be combined; write two rules")
	case r.Threshold > 0 && r.Window == 0:
		return nil, errAt(f["threshold"], where+".window", "a threshold needs a window, e.g. window: 1m")
	case r.Window > 0 && r.Threshold == 0:
		return nil, errAt(f["window"], where+".threshold", "a window needs a threshold")
	}
	if r.Dedup == 0 {
		r.Dedup = max(r.Window, time.Hour)
	}
	if r.Condition != "" {
		if r.prg, err = compile(env, r.Condition); err != nil {
			return nil, errAt(f["condition"], where+".condition", "%v", err)
		}
	}
	return r, nil
}

func parseSink(n *yaml.Node, where string) (Sink, error) {
	f, err := fields(n, where, "name", "type", "url", "addr", "from", "to", "min_severity")
	if err != nil {
		return Sink{}, err
	}
	var s Sink
	for k, dst := range map[string]*string{"name": &s.Name, "type": &s.Type, "url": &s.URL, "addr": &s.Addr, "from": &s.From, "min_severity": &s.MinSeverity} {
		if v, ok := f[k]; ok {
			if v.Kind != yaml.ScalarNode {
				return Sink{}, errAt(v, where+"."+k, "want a string")
			}
			*dst = v.Value
		}
	}
	if s.To, err = strList(f, "to", where); err != nil {
		return Sink{}, err
	}
	if s.MinSeverity == "" {
		s.MinSeverity = "low"
	}
	if SeverityRank(s.MinSeverity) < 0 {
		return Sink{}, errAt(n, where+".min_severity", "%q: want one of %s", s.MinSeverity, strings.Join(severities, ", "))
	}
	switch s.Type {
	case "webhook", "slack":
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return Sink{}, errAt(n, where+".url", "%q: want an http(s) URL", s.URL)
		}
	case "smtp":
		if s.Addr == "" || s.From == "" || len(s.To) == 0 {
			return Sink{}, errAt(n, where, "an smtp sink needs addr (host:port), from and to")
		}
	default:
		return Sink{}, errAt(n, where+".type", "%q: want webhook, slack or smtp", s.Type)
	}
	if s.Name == "" {
		s.Name = s.Type
	}
	return s, nil
}

func fields(n *yaml.Node, where string, allowed ...string) (map[string]*yaml.Node, error) {
	m, err := yamlfields.Map(n, where, allowed...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", "detect", err)
	}
	return m, nil
}

func strList(f map[string]*yaml.Node, key, where string) ([]string, error) {
	n, ok := f[key]
	if !ok {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, where+"."+key, "want a list")
	}
	out := []string{}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.Value == "" {
			return nil, errAt(c, where+"."+key, "want non-empty strings")
		}
		out = append(out, c.Value)
	}
	return out, nil
}
