package netpol

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

// Placement says that a service runs on a host.
type Placement struct {
	Service spiffeid.ID
	// Host is the address the service's peers see it at: the agent's.
	Host netip.Addr
	// Ports are the TCP ports the service's process (its inbound proxy,
	// or the service itself when it serves through the SDK) listens on,
	// other than on loopback.
	Ports []uint16
}

// Service is one service of the view: where it runs and who may call it.
type Service struct {
	ID    spiffeid.ID  `json:"spiffe_id"`
	Hosts []netip.Addr `json:"hosts"` // sorted
	// Ports are the inbound ports on each host (sorted).
	Ports    map[netip.Addr][]uint16 `json:"ports"`
	AppPorts []uint16                `json:"app_ports,omitempty"` // from its policy's network.app_ports
	Callers  []spiffeid.ID           `json:"callers"`
	// Policy is the version of the service's policy, "" when it has none
	// (then nobody may call it: default deny).
	Policy string `json:"policy,omitempty"`
}

// Edge is one allowed caller → callee pair.
type Edge struct {
	From spiffeid.ID `json:"from"`
	To   spiffeid.ID `json:"to"`
}

// View is what the network policy is rendered from.
type View struct {
	Services []Service `json:"services"` // sorted by ID
	Edges    []Edge    `json:"edges"`    // sorted
	// Policies are "SPIFFE ID@version" of every policy used, sorted.
	Policies []string `json:"policies"`
	// Problems lists what could not be placed, one sentence each.
	Problems []string `json:"problems"`

	hashHeader string // Header("#"), made by Build (a View is read-only after)
}

// Build makes the view of placements and policies.
func Build(placements []Placement, policies []*policy.Policy) *View {
	byID := map[spiffeid.ID]*Service{}
	get := func(id spiffeid.ID) *Service {
		s := byID[id]
		if s == nil {
			s = &Service{ID: id, Ports: map[netip.Addr][]uint16{}}
			byID[id] = s
		}
		return s
	}
	placed := map[spiffeid.ID]bool{}
	for _, p := range placements {
		if p.Service.IsZero() || !p.Host.IsValid() {
			continue
		}
		s := get(p.Service)
		placed[p.Service] = true
		h := p.Host.Unmap().WithZone("") // a zone is no part of a host's address, and no file name
		s.Hosts = appendUnique(s.Hosts, h)
		for _, port := range p.Ports {
			s.Ports[h] = appendUnique(s.Ports[h], port)
		}
	}
	v := &View{}
	known := sortedKeys(placed)
	cands := policy.NewCandidates(known)
	placedStr := make(map[string]bool, len(known))
	for _, k := range known {
		placedStr[k.String()] = true
	}
	for _, pol := range policies {
		s := get(pol.Service)
		s.Policy = pol.Version
		s.AppPorts = slices.Clone(pol.AppPorts)
		v.Policies = append(v.Policies, pol.Service.String()+"@"+pol.Version)
		if !placed[pol.Service] {
			v.Problems = append(v.Problems, fmt.Sprintf("policy %s@%s: the service runs on no host an agent reported", pol.Service, pol.Version))
		}
		// A service may call itself: its replicas on other hosts reach
		// each other when its policy says so.
		for _, c := range pol.MayCallersOf(cands) {
			s.Callers = append(s.Callers, c)
			v.Edges = append(v.Edges, Edge{From: c, To: pol.Service})
		}
		for _, r := range pol.Rules {
			if r.Action != policy.ActionAllow {
				continue
			}
			for _, c := range r.Callers {
				if c == "*" || strings.HasSuffix(c, "/*") || placedStr[c] {
					continue
				}
				v.Problems = append(v.Problems, fmt.Sprintf("policy %s@%s rule %s (line %d): caller %s runs on no host an agent reported", pol.Service, pol.Version, r.Name, r.Line, c))
			}
		}
	}
	type hostPort struct {
		h netip.Addr
		p uint16
	}
	listener := map[hostPort]spiffeid.ID{}
	for _, s := range byID {
		for h, ps := range s.Ports {
			for _, p := range ps {
				listener[hostPort{h, p}] = s.ID
			}
		}
	}
	claimed := map[hostPort]spiffeid.ID{}
	for _, id := range sortedKeys(placed) {
		s := byID[id]
		for _, h := range s.Hosts {
			for _, p := range s.Ports[h] {
				if o, ok := claimed[hostPort{h, p}]; ok {
					v.Problems = append(v.Problems, fmt.Sprintf("host %s: port %d is claimed by %s and by %s; it is closed to every caller", h, p, o, id))
				}
				claimed[hostPort{h, p}] = id
			}
		}
		if s.Policy != "" && !slices.ContainsFunc(s.Hosts, func(h netip.Addr) bool { return len(s.Ports[h]) > 0 }) {
			v.Problems = append(v.Problems, fmt.Sprintf("%s listens on no port its agents could see (is its listener another process than the one that holds its SVID?): its port is not governed", id))
		}
	}
	for _, s := range byID {
		for _, ap := range s.AppPorts {
			for _, h := range s.Hosts {
				if o, ok := listener[hostPort{h, ap}]; ok {
					v.Problems = append(v.Problems, fmt.Sprintf("host %s: port %d is an application port of %s (network.app_ports) but %s listens on it as its inbound port; it stays an application port (loopback only)", h, ap, s.ID, o))
				}
			}
		}
	}
	for _, s := range byID {
		slices.SortFunc(s.Hosts, netip.Addr.Compare)
		for _, ps := range s.Ports {
			slices.Sort(ps)
		}
		slices.SortFunc(s.Callers, compareID)
		v.Services = append(v.Services, *s)
	}
	slices.SortFunc(v.Services, func(a, b Service) int { return compareID(a.ID, b.ID) })
	slices.SortFunc(v.Edges, func(a, b Edge) int {
		return cmp.Or(compareID(a.From, b.From), compareID(a.To, b.To))
	})
	slices.Sort(v.Policies)
	slices.Sort(v.Problems)
	v.Problems = slices.Compact(v.Problems)
	v.hashHeader = v.Header("#")
	return v
}

// Hosts returns every host of the view, sorted.
func (v *View) Hosts() []netip.Addr {
	var hs []netip.Addr
	for _, s := range v.Services {
		for _, h := range s.Hosts {
			hs = appendUnique(hs, h.Unmap().WithZone("")) // a view from JSON may carry anything
		}
	}
	slices.SortFunc(hs, netip.Addr.Compare)
	return hs
}

// Service returns the service id, if the view has it.
func (v *View) Service(id spiffeid.ID) (Service, bool) {
	i, ok := slices.BinarySearchFunc(v.Services, id, func(s Service, id spiffeid.ID) int { return compareID(s.ID, id) })
	if !ok {
		return Service{}, false
	}
	return v.Services[i], true
}

// Header is the comment every render starts with: what it came from.
func (v *View) Header(comment string) string {
	if comment == "#" && v.hashHeader != "" {
		return v.hashHeader
	}
	var b strings.Builder
	b.WriteString(comment + " Generated by rampart netpol from these policies; do not edit.\n")
	if len(v.Policies) == 0 {
		b.WriteString(comment + "   (no policies: nothing may be called)\n")
	}
	for _, p := range v.Policies {
		b.WriteString(comment + "   " + p + "\n")
	}
	return b.String()
}

func compareID(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) }

func appendUnique[T comparable](s []T, x T) []T {
	if slices.Contains(s, x) {
		return s
	}
	return append(s, x)
}

func sortedKeys(m map[spiffeid.ID]bool) []spiffeid.ID {
	out := make([]spiffeid.ID, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, compareID)
	return out
}
