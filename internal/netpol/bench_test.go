package netpol

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/policy"
)

// bigSystem is 1,000 services on 50 hosts, each callable by 20 others:
// 20,000 edges.
func bigSystem(b *testing.B) ([]Placement, []*policy.Policy) {
	const n, hosts, callers = 1000, 50, 20
	var ps []Placement
	var src strings.Builder
	for i := range n {
		ps = append(ps, Placement{Service: id(fmt.Sprintf("svc%d", i)), Host: netip.AddrFrom4([4]byte{10, 1, byte(i % hosts), 1}), Ports: []uint16{uint16(10000 + i)}})
		fmt.Fprintf(&src, "---\nservice: spiffe://example.org/svc%d\nnetwork:\n  app_ports: [%d]\nrules:\n- name: r\n  callers: [", i, 20000+i)
		for j := range callers {
			if j > 0 {
				src.WriteString(", ")
			}
			fmt.Fprintf(&src, "spiffe://example.org/svc%d", (i+j+1)%n)
		}
		src.WriteString("]\n")
	}
	pols, err := policy.ParseAll([]byte(src.String()))
	if err != nil {
		b.Fatal(err)
	}
	return ps, pols
}

// BenchmarkRender1000Services is the figure: the view of 1,000
// services and 20,000 edges, and every host's nftables table (target:
// under 100 ms in all).
func BenchmarkRender1000Services(b *testing.B) {
	ps, pols := bigSystem(b)
	v := Build(ps, pols)
	if len(v.Edges) != 20000 {
		b.Fatalf("%d edges", len(v.Edges))
	}
	b.ResetTimer()
	for b.Loop() {
		v := Build(ps, pols)
		for _, h := range v.Hosts() {
			_ = v.HostTable(h).NFT()
		}
	}
}

func BenchmarkRenderKubernetes1000Services(b *testing.B) {
	ps, pols := bigSystem(b)
	v := Build(ps, pols)
	b.ResetTimer()
	for b.Loop() {
		v.Kubernetes(nil)
	}
}
