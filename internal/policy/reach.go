package policy

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

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

// Candidates are the callers a view considers, indexed once for many
// policies' MayCallers.
type Candidates struct {
	ids   []spiffeid.ID
	strs  []string
	index map[string]int
}

// NewCandidates indexes known.
func NewCandidates(known []spiffeid.ID) *Candidates {
	c := &Candidates{ids: known, strs: make([]string, len(known)), index: make(map[string]int, len(known))}
	for i, k := range known {
		c.strs[i] = k.String()
		if !k.IsZero() {
			c.index[c.strs[i]] = i
		}
	}
	return c
}

// MayCallers returns the members of known that MayCall, in known's order.
func (p *Policy) MayCallers(known []spiffeid.ID) []spiffeid.ID {
	return p.MayCallersOf(NewCandidates(known))
}

// MayCallersOf is MayCallers over indexed candidates, in one pass over
// the rules (a caller pattern is matched against the candidates once, not
// once per candidate): what a network view of many services needs.
func (p *Policy) MayCallersOf(c *Candidates) []spiffeid.ID {
	var out []spiffeid.ID
	if p.Mode == ModeDryRun {
		for _, k := range c.ids {
			if !k.IsZero() {
				out = append(out, k)
			}
		}
		return out
	}
	td := p.Service.TrustDomain()
	allowed := make([]bool, len(c.ids))
	denied := make([]bool, len(c.ids))
	for _, r := range p.Rules {
		var mark []bool
		switch {
		case r.Action == ActionAllow:
			mark = allowed
		case r.denies():
			mark = denied
		default:
			continue // a deny of some requests leaves the others
		}
		for _, pat := range r.Callers {
			switch {
			case pat == "*":
				for i, k := range c.ids {
					if !k.IsZero() && k.MemberOf(td) {
						mark[i] = true
					}
				}
			case strings.HasSuffix(pat, "/*"):
				prefix := strings.TrimSuffix(pat, "*")
				for i, s := range c.strs {
					if len(s) > len(prefix) && strings.HasPrefix(s, prefix) {
						mark[i] = true
					}
				}
			default:
				if i, ok := c.index[pat]; ok {
					mark[i] = true
				}
			}
		}
	}
	for i, k := range c.ids {
		if allowed[i] && !denied[i] {
			out = append(out, k)
		}
	}
	return out
}
