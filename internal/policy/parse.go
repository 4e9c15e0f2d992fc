package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/yamlfields"
)

// Mode says whether a policy is enforced.
type Mode string

const (
	ModeEnforce Mode = "enforce"
	ModeDryRun  Mode = "dry-run"
)

// Action is what a matching rule does.
type Action string

const (
	ActionAllow Action = "allow"
	ActionDeny  Action = "deny"
)

// Policy is a parsed, validated policy.
type Policy struct {
	Service spiffeid.ID
	Mode    Mode
	Rules   []Rule
	// AppPorts are the TCP ports the protected application itself
	// listens on behind its proxy (network.app_ports): the network policy
	// (package netpol) keeps them reachable from the host's loopback only,
	// so that nothing calls around the proxy. Empty for a service that
	// serves through the SDK.
	AppPorts []uint16
	Version  string // first 12 hex digits of SHA-256 of the source
	Source   []byte
}

// Rule is one rule of a policy.
type Rule struct {
	Name    string
	Action  Action
	Callers []string
	Methods []string
	Paths   []string
	When    string
	Line    int // where the rule starts in the source
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	paramRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)

// Parse parses and validates one policy document.
func Parse(src []byte) (*Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("policy: %v", cleanYAMLError(err))
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("policy: empty document")
	}
	p, err := fromNode(doc.Content[0])
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(src)
	p.Version, p.Source = hex.EncodeToString(sum[:])[:12], bytes.Clone(src)
	return p, nil
}

// ParseAll parses a stream of policy documents separated by "---".
func ParseAll(src []byte) ([]*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var out []*Policy
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("policy: document %d: %v", len(out)+1, cleanYAMLError(err))
		}
		one, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, fmt.Errorf("policy: document %d: %w", len(out)+1, err)
		}
		p, err := fromNode(doc.Content[0])
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out)+1, err)
		}
		sum := sha256.Sum256(one)
		p.Version, p.Source = hex.EncodeToString(sum[:])[:12], one
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("policy: no documents")
	}
	return out, nil
}

// cleanYAMLError words yaml.v3's errors for people: no "yaml:" prefix, and
// an unknown field named as such rather than by the Go type it missed.
func cleanYAMLError(err error) string {
	return unknownFieldRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), `unknown field "$1"`)
}

var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

func errAt(n *yaml.Node, field, format string, a ...any) error {
	return fmt.Errorf("policy: line %d: %s: %s", n.Line, field, fmt.Sprintf(format, a...))
}

// fields checks that n is a mapping with only the allowed keys and returns
// key -> value nodes.
func fields(n *yaml.Node, where string, allowed ...string) (map[string]*yaml.Node, error) {
	m, err := yamlfields.Map(n, where, allowed...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", "policy", err)
	}
	return m, nil
}

func scalar(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, field, "want a string")
	}
	return n.Value, nil
}

func list(n *yaml.Node, field string) ([]string, []*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, nil, errAt(n, field, "want a list")
	}
	var out []string
	for i, c := range n.Content {
		s, err := scalar(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
	}
	return out, n.Content, nil
}

func fromNode(n *yaml.Node) (*Policy, error) {
	f, err := fields(n, "policy", "service", "mode", "network", "rules")
	if err != nil {
		return nil, err
	}
	p := &Policy{Mode: ModeEnforce}
	sn, ok := f["service"]
	if !ok {
		return nil, errAt(n, "service", "required (the SPIFFE ID of the protected service)")
	}
	s, err := scalar(sn, "service")
	if err != nil {
		return nil, err
	}
	if p.Service, err = spiffeid.FromString(s); err != nil {
		return nil, errAt(sn, "service", "%q: %v", s, err)
	}
	if mn, ok := f["mode"]; ok {
		m, err := scalar(mn, "mode")
		if err != nil {
			return nil, err
		}
		if m != string(ModeEnforce) && m != string(ModeDryRun) {
			return nil, errAt(mn, "mode", "%q: want enforce or dry-run", m)
		}
		p.Mode = Mode(m)
	}
	if nn, ok := f["network"]; ok {
		if p.AppPorts, err = networkFromNode(nn); err != nil {
			return nil, err
		}
	}
	rn, ok := f["rules"]
	if !ok || rn.Kind != yaml.SequenceNode || len(rn.Content) == 0 {
		at := n
		if ok {
			at = rn
		}
		return nil, errAt(at, "rules", "at least one rule is required")
	}
	names := map[string]bool{}
	for i, r := range rn.Content {
		rule, err := ruleFromNode(r, fmt.Sprintf("rules[%d]", i), p.Service.TrustDomain())
		if err != nil {
			return nil, err
		}
		if names[rule.Name] {
			return nil, errAt(r, fmt.Sprintf("rules[%d].name", i), "%q used twice", rule.Name)
		}
		names[rule.Name] = true
		p.Rules = append(p.Rules, rule)
	}
	return p, nil
}

func ruleFromNode(n *yaml.Node, where string, td spiffeid.TrustDomain) (Rule, error) {
	f, err := fields(n, where, "name", "action", "callers", "methods", "paths", "when")
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Action: ActionAllow, Line: n.Line}
	nn, ok := f["name"]
	if !ok {
		return Rule{}, errAt(n, where+".name", "required")
	}
	if r.Name, err = scalar(nn, where+".name"); err != nil {
		return Rule{}, err
	}
	if !nameRE.MatchString(r.Name) {
		return Rule{}, errAt(nn, where+".name", "%q: want letters, digits, '.', '_' or '-'", r.Name)
	}
	if an, ok := f["action"]; ok {
		a, err := scalar(an, where+".action")
		if err != nil {
			return Rule{}, err
		}
		if a != string(ActionAllow) && a != string(ActionDeny) {
			return Rule{}, errAt(an, where+".action", "%q: want allow or deny", a)
		}
		r.Action = Action(a)
	}
	cn, ok := f["callers"]
	if !ok {
		return Rule{}, errAt(n, where+".callers", "required (SPIFFE IDs, \"spiffe://TD/path/*\" patterns, or \"*\")")
	}
	var nodes []*yaml.Node
	if r.Callers, nodes, err = list(cn, where+".callers"); err != nil {
		return Rule{}, err
	}
	if len(r.Callers) == 0 {
		return Rule{}, errAt(cn, where+".callers", "at least one caller is required")
	}
	for i, c := range r.Callers {
		if err := checkCaller(c); err != nil {
			return Rule{}, errAt(nodes[i], fmt.Sprintf("%s.callers[%d]", where, i), "%v", err)
		}
	}
	if mn, ok := f["methods"]; ok {
		if r.Methods, nodes, err = list(mn, where+".methods"); err != nil {
			return Rule{}, err
		}
		for i, m := range r.Methods {
			if !slices.Contains(methods, m) {
				return Rule{}, errAt(nodes[i], fmt.Sprintf("%s.methods[%d]", where, i), "%q is not an HTTP method (want upper case, e.g. GET)", m)
			}
		}
	}
	if pn, ok := f["paths"]; ok {
		if r.Paths, nodes, err = list(pn, where+".paths"); err != nil {
			return Rule{}, err
		}
		for i, p := range r.Paths {
			if _, err := compilePath(p); err != nil {
				return Rule{}, errAt(nodes[i], fmt.Sprintf("%s.paths[%d]", where, i), "%v", err)
			}
		}
	}
	if wn, ok := f["when"]; ok {
		if r.When, err = scalar(wn, where+".when"); err != nil {
			return Rule{}, err
		}
		if _, err := compileCEL(r.When); err != nil {
			return Rule{}, errAt(wn, where+".when", "%v", err)
		}
	}
	return r, nil
}

func networkFromNode(n *yaml.Node) ([]uint16, error) {
	f, err := fields(n, "network", "app_ports")
	if err != nil {
		return nil, err
	}
	an, ok := f["app_ports"]
	if !ok {
		return nil, nil
	}
	ports, nodes, err := list(an, "network.app_ports")
	if err != nil {
		return nil, err
	}
	var out []uint16
	for i, s := range ports {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
			return nil, errAt(nodes[i], fmt.Sprintf("network.app_ports[%d]", i), "%q: want a TCP port, 1 to 65535", s)
		}
		if slices.Contains(out, uint16(n)) {
			return nil, errAt(nodes[i], fmt.Sprintf("network.app_ports[%d]", i), "%d listed twice", n)
		}
		out = append(out, uint16(n))
	}
	slices.Sort(out)
	return out, nil
}

func checkCaller(c string) error {
	if c == "*" {
		return nil
	}
	if prefix, ok := strings.CutSuffix(c, "/*"); ok {
		if _, err := spiffeid.FromString(prefix); err != nil {
			return fmt.Errorf("%q: pattern prefix is not a SPIFFE ID: %v", c, err)
		}
		return nil
	}
	if strings.Contains(c, "*") {
		return fmt.Errorf("%q: \"*\" is only allowed alone or as a final \"/*\"", c)
	}
	if _, err := spiffeid.FromString(c); err != nil {
		return fmt.Errorf("%q: %v", c, err)
	}
	return nil
}
