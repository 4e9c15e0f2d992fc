package policy

import "slices"

// Naive returns a rule-by-rule evaluator of p written without the index, as
// the reference the compiled Engine is tested against.
func Naive(p *Policy) func(*Request) Decision {
	eng, err := Compile(p) // for compiled paths and conditions only
	if err != nil {
		panic(err)
	}
	td := p.Service.TrustDomain()
	ruleMatches := func(i int, r *Request) bool {
		rule := p.Rules[i]
		if !slices.ContainsFunc(rule.Callers, func(c string) bool { return callerMatches(c, r.Caller, td) }) {
			return false
		}
		if len(rule.Methods) > 0 && !slices.Contains(rule.Methods, r.Method) &&
			!(r.Method == "HEAD" && slices.Contains(rule.Methods, "GET")) {
			return false
		}
		return eng.pathAndCondition(i, r)
	}
	return func(r *Request) Decision {
		d := Decision{Version: p.Version}
		for pass := 0; pass < 2 && d.Rule == ""; pass++ {
			for i, rule := range p.Rules {
				if (rule.Action == ActionDeny) != (pass == 0) {
					continue
				}
				if ruleMatches(i, r) {
					d.Rule, d.Allowed = rule.Name, pass == 1
					break
				}
			}
		}
		if p.Mode == ModeDryRun && !d.Allowed {
			d.Allowed, d.DryRunDenied = true, true
		}
		return d
	}
}
