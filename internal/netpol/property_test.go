package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

// admits evaluates a host table the way its nft rules read, top to
// bottom: established aside, does a new connection from src (over
// loopback or not) to port get in?
func admits(t HostTable, src netip.Addr, loopback bool, port uint16) bool {
	for _, p := range t.Proxy {
		if p.Port != port {
			continue
		}
		if loopback && p.Loopback {
			return true
		}
		return !loopback && slices.Contains(p.From, src)
	}
	for _, p := range t.App {
		if p.Port == port {
			return loopback
		}
	}
	return true // a port we do not govern
}

// Every allowed edge is open and no other: over random placements and
// policies, a caller's host reaches a callee's inbound port exactly when
// some service on the caller's host may call some service listening on
// that port there; an application port is reached from loopback only.
func TestEveryAllowedEdgeOpenAndNoOther(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		nHosts, nSvc := 1+r.IntN(4), 1+r.IntN(6)
		hosts := make([]netip.Addr, nHosts)
		for i := range hosts {
			if r.IntN(4) == 0 {
				hosts[i] = netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1))
			} else {
				hosts[i] = netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1))
			}
		}
		svc := make([]spiffeid.ID, nSvc)
		for i := range svc {
			svc[i] = id(fmt.Sprintf("team%d/svc%d", i%2, i))
		}
		// Each service on 1-2 hosts, on its own port (as ports are per
		// process, two services never share one on a host).
		var ps []Placement
		for i, s := range svc {
			for _, h := range pick(r, hosts, 1+r.IntN(2)) {
				ps = append(ps, Placement{Service: s, Host: h, Ports: []uint16{uint16(8000 + i)}})
			}
		}
		var src strings.Builder
		for i, s := range svc {
			if r.IntN(4) == 0 {
				continue // no policy: default deny
			}
			fmt.Fprintf(&src, "---\nservice: %s\n", s)
			if r.IntN(6) == 0 {
				src.WriteString("mode: dry-run\n")
			}
			fmt.Fprintf(&src, "network:\n  app_ports: [%d]\nrules:\n", 9000+i)
			if r.IntN(3) == 0 {
				fmt.Fprintf(&src, "- name: d\n  action: deny\n  callers: [%s]\n", svc[r.IntN(nSvc)])
			}
			var callers []string
			for range 1 + r.IntN(3) {
				switch r.IntN(4) {
				case 0:
					callers = append(callers, `"*"`)
				case 1:
					callers = append(callers, fmt.Sprintf(`"spiffe://example.org/team%d/*"`, r.IntN(2)))
				default:
					callers = append(callers, svc[r.IntN(nSvc)].String())
				}
			}
			fmt.Fprintf(&src, "- name: a\n  callers: [%s]\n  paths: [/x]\n", strings.Join(callers, ", "))
		}
		var pols []*policy.Policy
		if src.Len() > 0 {
			pols = mustPolicies(t, src.String())
		}
		byService := map[spiffeid.ID]*policy.Policy{}
		for _, p := range pols {
			byService[p.Service] = p
		}
		v := Build(ps, pols)
		runsOn := func(s spiffeid.ID, h netip.Addr) bool {
			return slices.ContainsFunc(ps, func(p Placement) bool { return p.Service == s && p.Host == h })
		}
		for _, dst := range hosts {
			tab := v.HostTable(dst)
			for i, callee := range svc {
				if !runsOn(callee, dst) {
					continue
				}
				port := uint16(8000 + i)
				for _, srcHost := range hosts {
					want := false
					for _, caller := range svc {
						if runsOn(caller, srcHost) && byService[callee] != nil && byService[callee].MayCall(caller) {
							want = true
						}
					}
					if got := admits(tab, srcHost, false, port); got != want && srcHost != dst {
						t.Fatalf("round %d: %s -> %s:%d (%s): admitted %v, want %v\npolicies:\n%s\ntable:\n%s", round, srcHost, dst, port, callee, got, want, src.String(), tab.NFT())
					}
					if srcHost == dst && admits(tab, srcHost, true, port) != want {
						t.Fatalf("round %d: loopback on %s to %d: want %v", round, dst, port, want)
					}
				}
				if p := byService[callee]; p != nil {
					for _, ap := range p.AppPorts {
						if admits(tab, hosts[0], false, ap) || !admits(tab, dst, true, ap) {
							t.Fatalf("round %d: app port %d of %s on %s reachable from outside or not from loopback", round, ap, callee, dst)
						}
					}
				}
			}
		}
	}
}

func pick(r *rand.Rand, hs []netip.Addr, n int) []netip.Addr {
	c := slices.Clone(hs)
	r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return c[:min(n, len(c))]
}
