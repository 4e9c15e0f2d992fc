package policy

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// MayCall reports whether some request of caller could be let through by
// p: a dry-run policy lets everything through; otherwise an allow rule
// must name the caller, and no deny rule that names it may deny every
// request (one with no methods, paths or condition). It is what a network
// policy derived from p must leave open (package netpol): closing less
// would let a caller reach a port the proxy would refuse anyway, closing
// more would break a call the policy allows.
//
// A caller of another trust domain is never let through by "*" (see
// Format), and this says so too.
func (p *Policy) MayCall(caller spiffeid.ID) bool {
	if caller.IsZero() {
		return false
	}
	if p.Mode == ModeDryRun {
		return true
	}
	td := p.Service.TrustDomain()
	allowed := false
	for _, r := range p.Rules {
		if !r.namesCaller(caller, td) {
			continue
		}
		if r.Action == ActionDeny && r.denies() {
			return false
		}
		if r.Action == ActionAllow {
			allowed = true
		}
	}
	return allowed
}

func (r Rule) namesCaller(caller spiffeid.ID, td spiffeid.TrustDomain) bool {
	for _, c := range r.Callers {
		if callerMatches(c, caller, td) {
			return true
		}
	}
	return false
}

// denies reports whether a deny rule matches every request of its callers.
func (r Rule) denies() bool {
	return len(r.Methods) == 0 && len(r.Paths) == 0 && r.When == ""
}
