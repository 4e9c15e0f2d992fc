package policy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request is what a decision is about.
type Request struct {
	Caller  spiffeid.ID    // verified peer identity; the zero ID never matches
	Method  string         // "GET"...; "" for a raw TCP connection
	Path    string         // normalised (NormalizePath); "" for a raw TCP connection
	Headers http.Header    // used only by conditions
	User    map[string]any // verified end-user claims, nil without a user token
}

// Decision is the outcome.
type Decision struct {
	Allowed      bool   // effective outcome (dry-run: always true)
	Rule         string // the deciding rule; "" for default deny
	Version      string // the policy's version; show this, never the rules
	DryRunDenied bool   // dry-run policy that would have denied
}

type compiledRule struct {
	name    string
	deny    bool
	methods uint16 // 0: any
	paths   []pathPattern
	prog    *condition // nil without a when
	when    string
	line    int
}

// group is a list of rule indices in file order, for one caller key.
type group []int

type index struct {
	exact    map[string]group
	patterns []patternGroup
	any      group // "*": any caller of the policy's trust domain
}

type patternGroup struct {
	prefix string // "spiffe://td/batch/"
	rules  group
}

// Engine is a compiled policy. It is immutable and safe for concurrent use.
type Engine struct {
	service spiffeid.ID
	version string
	dryRun  bool
	rules   []compiledRule
	deny    index
	allow   index
}

// Compile builds the decision index for p.
func Compile(p *Policy) (*Engine, error) {
	e := &Engine{service: p.Service, version: p.Version, dryRun: p.Mode == ModeDryRun,
		deny: index{exact: map[string]group{}}, allow: index{exact: map[string]group{}}}
	for i, r := range p.Rules {
		cr := compiledRule{name: r.Name, deny: r.Action == ActionDeny, when: r.When, line: r.Line}
		for _, m := range r.Methods {
			cr.methods |= methodBit(m)
			if m == "GET" {
				// HEAD is GET without the body (RFC 9110 9.3.2), and
				// frameworks run the GET handler for it: a rule about GET,
				// allow or deny, is about HEAD too.
				cr.methods |= methodBit("HEAD")
			}
		}
		for _, ps := range r.Paths {
			pp, err := compilePath(ps)
			if err != nil {
				return nil, fmt.Errorf("policy: rule %s: %w", r.Name, err)
			}
			cr.paths = append(cr.paths, pp)
		}
		if r.When != "" {
			prg, err := compileCEL(r.When)
			if err != nil {
				return nil, fmt.Errorf("policy: rule %s: %w", r.Name, err)
			}
			cr.prog = prg
		}
		e.rules = append(e.rules, cr)
		idx := &e.allow
		if cr.deny {
			idx = &e.deny
		}
		for _, c := range r.Callers {
			switch {
			case c == "*":
				idx.any = appendOnce(idx.any, i)
			case strings.HasSuffix(c, "/*"):
				prefix := strings.TrimSuffix(c, "*")
				found := false
				for k := range idx.patterns {
					if idx.patterns[k].prefix == prefix {
						idx.patterns[k].rules = appendOnce(idx.patterns[k].rules, i)
						found = true
					}
				}
				if !found {
					idx.patterns = append(idx.patterns, patternGroup{prefix: prefix, rules: group{i}})
				}
			default:
				idx.exact[c] = appendOnce(idx.exact[c], i)
			}
		}
	}
	return e, nil
}

func appendOnce(g group, i int) group {
	if len(g) > 0 && g[len(g)-1] == i {
		return g
	}
	return append(g, i)
}

// Version is the policy's version.
func (e *Engine) Version() string { return e.version }

// Service is the protected service.
func (e *Engine) Service() spiffeid.ID { return e.service }

// Conditions reports how many rules have a `when` condition, which a
// program built without CEL cannot evaluate (see CEL).
func (e *Engine) Conditions() int {
	n := 0
	for i := range e.rules {
		if e.rules[i].prog != nil {
			n++
		}
	}
	return n
}

// Decide decides r. It allocates nothing unless a candidate rule has a condition.
func (e *Engine) Decide(r *Request) Decision {
	d := Decision{Version: e.version}
	if i := e.first(&e.deny, r); i >= 0 {
		d.Rule = e.rules[i].name
	} else if i := e.first(&e.allow, r); i >= 0 {
		d.Rule, d.Allowed = e.rules[i].name, true
	}
	if e.dryRun && !d.Allowed {
		d.Allowed, d.DryRunDenied = true, true
	}
	return d
}

// first returns the lowest rule index in idx that matches r, or -1.
func (e *Engine) first(idx *index, r *Request) int {
	if r.Caller.IsZero() {
		return -1
	}
	caller := r.Caller.String()
	best := -1
	scan := func(g group) {
		for _, i := range g {
			if best >= 0 && i >= best {
				return
			}
			if e.matches(i, r) {
				best = i
				return
			}
		}
	}
	scan(idx.exact[caller])
	for k := range idx.patterns {
		if p := idx.patterns[k].prefix; len(caller) > len(p) && strings.HasPrefix(caller, p) {
			scan(idx.patterns[k].rules)
		}
	}
	if len(idx.any) > 0 && r.Caller.MemberOf(e.service.TrustDomain()) {
		scan(idx.any)
	}
	return best
}

// matches checks method, path and condition of rule i (the caller already
// matched). A condition error counts as a match for deny rules (fail closed)
// and as no match for allow rules.
func (e *Engine) matches(i int, r *Request) bool {
	cr := &e.rules[i]
	if cr.methods != 0 && cr.methods&methodBit(r.Method) == 0 {
		return false
	}
	// The path loop is written out here rather than calling matchPath:
	// this is the hot path, and the call halves the decision rate.
	var pp *pathPattern
	if len(cr.paths) > 0 {
		for k := range cr.paths {
			if cr.paths[k].match(r.Path, nil) {
				pp = &cr.paths[k]
				break
			}
		}
		if pp == nil {
			return false
		}
	}
	if cr.prog == nil {
		return true
	}
	return e.condition(i, r, pp)
}

// matchPath returns the first of rule i's path patterns that matches, or
// nil; ok is true when the rule has no paths or one matched.
func (e *Engine) matchPath(i int, path string) (pp *pathPattern, ok bool) {
	cr := &e.rules[i]
	for k := range cr.paths {
		if cr.paths[k].match(path, nil) {
			return &cr.paths[k], true
		}
	}
	return nil, len(cr.paths) == 0
}

// pathAndCondition checks rule i's paths and condition. A condition error
// counts as a match for deny rules (fail closed) and as none for allow rules.
func (e *Engine) pathAndCondition(i int, r *Request) bool {
	pp, ok := e.matchPath(i, r.Path)
	if !ok {
		return false
	}
	if e.rules[i].prog == nil {
		return true
	}
	return e.condition(i, r, pp)
}

// condition evaluates rule i's condition; pp is the path pattern that matched.
func (e *Engine) condition(i int, r *Request, pp *pathPattern) bool {
	cr := &e.rules[i]
	res, err := evalCEL(cr.prog, r, bindParams(pp, r.Path))
	if err != nil {
		return cr.deny
	}
	return res
}

func bindParams(pp *pathPattern, path string) map[string]string {
	if pp == nil || pp.paramsCount == 0 {
		return nil
	}
	params := make(map[string]string, pp.paramsCount)
	pp.match(path, func(k, v string) { params[k] = v })
	return params
}

// callerMatches is the plain definition of the caller rules, for Naive and Explain.
func callerMatches(pattern string, caller spiffeid.ID, td spiffeid.TrustDomain) bool {
	if caller.IsZero() {
		return false
	}
	switch {
	case pattern == "*":
		return caller.MemberOf(td)
	case strings.HasSuffix(pattern, "/*"):
		prefix := strings.TrimSuffix(pattern, "*")
		s := caller.String()
		return len(s) > len(prefix) && strings.HasPrefix(s, prefix)
	}
	return caller.String() == pattern
}
