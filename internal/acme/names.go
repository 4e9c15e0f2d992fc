package acme

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Identifiers (RFC 8555 §9.7.7 "dns", RFC 8738 "ip") and the name policy.
//
// A pattern allows names:
//
//	api.example.org      that name exactly
//	*.example.org        every name below example.org, at any depth, and the
//	                     wildcard identifiers below it (*.example.org,
//	                     *.apps.example.org); not example.org itself
//	10.1.2.3             that address
//	10.1.0.0/16          every address in the prefix
//
// A wildcard identifier is allowed only if every name it covers is. An
// account may order the names its EAB key's patterns allow and, if the
// server has patterns of its own (--acme-allow), that those allow too;
// with neither, nothing. The server's own names (its DNS names, localhost,
// the loopback and listen addresses) are never issued: a certificate for
// them from the CA its clients trust would let its holder impersonate the
// server.

type identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (id identifier) String() string { return id.Value }

// wildcard reports whether id is a wildcard DNS identifier and returns
// the name below the "*.".
func (id identifier) wildcard() (string, bool) {
	if id.Type != "dns" {
		return "", false
	}
	return strings.CutPrefix(id.Value, "*.")
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxIdentifiers bounds the identifiers of one order.
const maxIdentifiers = 100

// checkDNSName checks a lower-case DNS name without a wildcard.
func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q: a DNS name has 1 to 253 characters", name)
	}
	if strings.HasSuffix(name, ".") {
		return fmt.Errorf("%q: no trailing dot", name)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return fmt.Errorf("%q: label %q is not a lower-case letter-digit-hyphen label of 1 to 63 characters", name, l)
		}
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("%q is an IP address: use an identifier of type ip", name)
	}
	if allDigits(labels[len(labels)-1]) {
		return fmt.Errorf("%q: the last label is all digits", name)
	}
	return nil
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// normalize checks an identifier from a client and returns it in
// canonical form (lower-case DNS names; IP addresses as RFC 5952 and
// dotted decimal print them, which RFC 8738 requires).
func normalize(id identifier) (identifier, *Problem) {
	switch id.Type {
	case "dns":
		v := strings.ToLower(id.Value)
		base, wild := strings.CutPrefix(v, "*.")
		if strings.Contains(base, "*") {
			return id, rejected(id, "%q: a wildcard may only be the whole first label (*.example.org)", id.Value)
		}
		if err := checkDNSName(base); err != nil {
			return id, rejected(id, "%v", err)
		}
		if wild && !strings.Contains(base, ".") {
			return id, rejected(id, "%q: a wildcard needs at least two labels after it", id.Value)
		}
		return identifier{Type: "dns", Value: v}, nil
	case "ip":
		a, err := netip.ParseAddr(id.Value)
		if err != nil || a.Zone() != "" {
			return id, malformedID(id, "%q is not an IP address", id.Value)
		}
		if a.Is4In6() {
			return id, malformedID(id, "%q: write an IPv4 address in dotted decimal", id.Value)
		}
		if a.String() != id.Value {
			return id, malformedID(id, "%q: not in canonical form (RFC 8738: %s)", id.Value, a.String())
		}
		return identifier{Type: "ip", Value: a.String()}, nil
	}
	p := problem(http.StatusBadRequest, errUnsupportedIdentifier, "identifier type %q is not supported (dns or ip)", id.Type)
	p.Identifier = &id
	return id, p
}

func rejected(id identifier, format string, a ...any) *Problem {
	p := problem(http.StatusBadRequest, errRejectedIdentifier, format, a...)
	p.Identifier = &identifier{Type: id.Type, Value: id.Value}
	return p
}

func malformedID(id identifier, format string, a ...any) *Problem {
	p := malformed(format, a...)
	p.Identifier = &identifier{Type: id.Type, Value: id.Value}
	return p
}

// pattern is one entry of a name policy.
type pattern struct {
	raw     string
	name    string // exact DNS name, or the base of a *. pattern
	subtree bool
	prefix  netip.Prefix // valid for address patterns
}

// ParsePatterns parses name patterns (see the top of names.go); the error
// names the first bad one.
func ParsePatterns(raw []string) ([]pattern, error) {
	out := make([]pattern, 0, len(raw))
	for _, r := range raw {
		p, err := parsePattern(r)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePattern(r string) (pattern, error) {
	s := strings.ToLower(strings.TrimSpace(r))
	if s == "" {
		return pattern{}, fmt.Errorf("acme: empty name pattern")
	}
	if strings.Contains(s, "/") {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return pattern{}, fmt.Errorf("acme: name pattern %q: %v", r, err)
		}
		if pr != pr.Masked() {
			return pattern{}, fmt.Errorf("acme: name pattern %q: host bits set; did you mean %s?", r, pr.Masked())
		}
		return pattern{raw: r, prefix: pr}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return pattern{}, fmt.Errorf("acme: name pattern %q: no zones", r)
		}
		a = a.Unmap()
		return pattern{raw: r, prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	base, wild := strings.CutPrefix(s, "*.")
	if strings.Contains(base, "*") {
		return pattern{}, fmt.Errorf("acme: name pattern %q: a wildcard may only be the whole first label (*.example.org)", r)
	}
	if err := checkDNSName(base); err != nil {
		return pattern{}, fmt.Errorf("acme: name pattern %v", err)
	}
	return pattern{raw: r, name: base, subtree: wild}, nil
}

// allows reports whether p allows the identifier (in canonical form).
func (p pattern) allows(id identifier) bool {
	if id.Type == "ip" {
		a, err := netip.ParseAddr(id.Value)
		return err == nil && p.prefix.IsValid() && p.prefix.Contains(a)
	}
	if p.prefix.IsValid() {
		return false
	}
	if base, wild := id.wildcard(); wild {
		// Every name *.base covers is below base.
		return p.subtree && (base == p.name || strings.HasSuffix(base, "."+p.name))
	}
	if p.subtree {
		return strings.HasSuffix(id.Value, "."+p.name)
	}
	return id.Value == p.name
}

// coveredBy reports whether identifier id would certify something
// pattern p names (for the deny list: a wildcard covers the names one
// label below it).
func (p pattern) coveredBy(id identifier) bool {
	if p.allows(id) {
		return true
	}
	base, wild := id.wildcard()
	if !wild || p.prefix.IsValid() {
		return false
	}
	// *.base covers p.name if p.name is one label below base; for a
	// subtree pattern, if the subtree reaches below base.
	if p.subtree {
		return p.name == base || strings.HasSuffix(p.name, "."+base) || strings.HasSuffix(base, "."+p.name)
	}
	first, rest, ok := strings.Cut(p.name, ".")
	return ok && first != "" && rest == base
}

// policy decides which identifiers an account may order.
type policy struct {
	server []pattern // the server's --acme-allow (empty: no server limit)
	key    []pattern // the EAB key's (empty: no key limit)
	denied []pattern // the server's own names
}

// check returns nil if every identifier may be ordered, or a
// rejectedIdentifier problem with one subproblem per refused identifier.
func (pol policy) check(ids []identifier) *Problem {
	var subs []Problem
	for _, id := range ids {
		if reason := pol.refuse(id); reason != "" {
			subs = append(subs, *rejected(id, "%s: %s", id.Value, reason))
		}
	}
	switch len(subs) {
	case 0:
		return nil
	case 1:
		p := subs[0]
		return &p
	}
	p := problem(http.StatusBadRequest, errRejectedIdentifier, "%d of the %d identifiers are refused: %s", len(subs), len(ids), subs[0].Detail)
	p.Subproblems = subs
	return p
}

func (pol policy) refuse(id identifier) string {
	for _, d := range pol.denied {
		if d.coveredBy(id) {
			return "the server's own name; the CA never issues it to an ACME account"
		}
	}
	if len(pol.server) == 0 && len(pol.key) == 0 {
		return "no names are allowed for this account (the operator gives them with rampart acme eab create --allow, or the server's --acme-allow)"
	}
	if len(pol.server) > 0 && !anyAllows(pol.server, id) {
		return "not among the names this server issues (" + patternList(pol.server) + ")"
	}
	if len(pol.key) > 0 && !anyAllows(pol.key, id) {
		return "not among the names this account may order (" + patternList(pol.key) + ")"
	}
	return ""
}

func anyAllows(ps []pattern, id identifier) bool {
	return slices.ContainsFunc(ps, func(p pattern) bool { return p.allows(id) })
}

func patternList(ps []pattern) string {
	const show = 10
	var names []string
	for i, p := range ps {
		if i == show {
			names = append(names, fmt.Sprintf("and %d more", len(ps)-show))
			break
		}
		names = append(names, p.raw)
	}
	return "allowed: " + strings.Join(names, ", ")
}
