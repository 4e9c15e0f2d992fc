package policy

import (
	"fmt"
	"slices"
	"strings"
)

// RuleTrace says how one rule fared.
type RuleTrace struct {
	Rule    string
	Action  Action
	Line    int
	Matched bool
	Reason  string // why not, when it did not match
}

// Explanation is a decision with the reasons behind it.
type Explanation struct {
	Decision Decision
	Request  Request
	Rules    []RuleTrace
	Mode     Mode
}

// Explain decides r and says, for every rule, whether it matched and if not
// the first reason why. For operators: never show it to a caller.
func (e *Engine) Explain(r *Request) Explanation {
	ex := Explanation{Decision: e.Decide(r), Request: *r, Mode: ModeEnforce}
	if e.dryRun {
		ex.Mode = ModeDryRun
	}
	for i := range e.rules {
		cr := &e.rules[i]
		tr := RuleTrace{Rule: cr.name, Action: ActionAllow, Line: cr.line}
		if cr.deny {
			tr.Action = ActionDeny
		}
		tr.Matched, tr.Reason = e.why(i, r)
		ex.Rules = append(ex.Rules, tr)
	}
	return ex
}

func (e *Engine) why(i int, r *Request) (bool, string) {
	cr := &e.rules[i]
	inIdx := func(idx *index) bool {
		if r.Caller.IsZero() {
			return false
		}
		if slices.Contains(idx.exact[r.Caller.String()], i) {
			return true
		}
		for _, p := range idx.patterns {
			if slices.Contains(p.rules, i) && callerMatches(p.prefix+"*", r.Caller, e.service.TrustDomain()) {
				return true
			}
		}
		return slices.Contains(idx.any, i) && r.Caller.MemberOf(e.service.TrustDomain())
	}
	idx := &e.allow
	if cr.deny {
		idx = &e.deny
	}
	if !inIdx(idx) {
		return false, "caller " + r.Caller.String() + " is not listed"
	}
	if cr.methods != 0 && cr.methods&methodBit(r.Method) == 0 {
		return false, "method " + r.Method + " is not allowed"
	}
	pp, ok := e.matchPath(i, r.Path)
	if !ok {
		return false, "path " + r.Path + " does not match"
	}
	if cr.prog != nil {
		ok, err := evalCEL(cr.prog, r, bindParams(pp, r.Path))
		if err != nil {
			if cr.deny {
				return true, "condition error (deny rules fail closed): " + err.Error()
			}
			return false, "condition error: " + err.Error()
		}
		if !ok {
			return false, "condition is false"
		}
	}
	return true, ""
}

// String renders the explanation for a terminal.
func (x Explanation) String() string {
	var b strings.Builder
	outcome := "DENY"
	if x.Decision.Allowed && !x.Decision.DryRunDenied {
		outcome = "ALLOW"
	}
	fmt.Fprintf(&b, "%s %s from %s: %s", x.Request.Method, x.Request.Path, x.Request.Caller, outcome)
	switch {
	case x.Decision.DryRunDenied:
		b.WriteString(" (dry-run: let through)")
	case x.Decision.Rule != "":
		fmt.Fprintf(&b, " by rule %q", x.Decision.Rule)
	default:
		b.WriteString(" (no rule matched: default deny)")
	}
	fmt.Fprintf(&b, "\npolicy version %s, mode %s\n", x.Decision.Version, x.Mode)
	for _, r := range x.Rules {
		mark := "  no "
		if r.Matched {
			mark = "  YES"
		}
		fmt.Fprintf(&b, "%s %-5s %s (line %d)", mark, r.Action, r.Rule, r.Line)
		if r.Reason != "" {
			fmt.Fprintf(&b, ": %s", r.Reason)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
