package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TableName is the name of our nftables table (family inet). Nothing
// else of the host's firewall is touched.
const TableName = "rampart"

// CounterName names the counter of the connections refused at port: one
// named counter per governed port, which the agent exports as metrics.
func CounterName(port uint16) string { return fmt.Sprintf("drop_%d", port) }

// HostTable is one host's rules, the model both the text renderer and the
// netlink applier work from.
type HostTable struct {
	Host   netip.Addr `json:"host"`
	Header string     `json:"header"`
	// Proxy are the inbound ports of the services on the host, each open
	// to the hosts of its allowed callers only.
	Proxy []ProxyPort `json:"proxy"` // sorted by port
	// App are the application ports, open from loopback only.
	App []AppPort `json:"app"` // sorted by port
	// Report only counts what would be dropped (rampart agent
	// --netpol=report): nothing is.
	Report bool `json:"report,omitempty"`
}

// ProxyPort is an inbound port and who may open a connection to it.
type ProxyPort struct {
	Port     uint16       `json:"port"`
	Service  spiffeid.ID  `json:"spiffe_id"`
	From     []netip.Addr `json:"from"`     // sorted; IPv4 and IPv6 alike
	Loopback bool         `json:"loopback"` // an allowed caller runs on this host itself
}

// AppPort is an application's own port.
type AppPort struct {
	Port    uint16      `json:"port"`
	Service spiffeid.ID `json:"spiffe_id"`
}

// HostTable returns host h's table.
func (v *View) HostTable(h netip.Addr) HostTable {
	h = h.Unmap().WithZone("")
	t := HostTable{Host: h}
	var pols []string
	for _, s := range v.Services {
		if !slices.Contains(s.Hosts, h) {
			continue
		}
		if s.Policy != "" {
			pols = append(pols, s.ID.String()+"@"+s.Policy)
		}
		var from []netip.Addr
		for _, c := range s.Callers {
			cs, _ := v.Service(c)
			for _, ch := range cs.Hosts {
				from = appendUnique(from, ch)
			}
		}
		slices.SortFunc(from, netip.Addr.Compare)
		for _, p := range s.Ports[h] {
			t.Proxy = append(t.Proxy, ProxyPort{Port: p, Service: s.ID, From: from, Loopback: slices.Contains(from, h)})
		}
		for _, p := range s.AppPorts {
			t.App = append(t.App, AppPort{Port: p, Service: s.ID})
		}
	}
	// Fail closed where claims clash (Build reports each): an application
	// port stays loopback-only whoever else listens on it, and a port two
	// services claim is open to nobody (one set of addresses per port, so
	// that one service's callers never reach the other).
	t.Proxy = slices.DeleteFunc(t.Proxy, func(p ProxyPort) bool {
		return slices.ContainsFunc(t.App, func(a AppPort) bool { return a.Port == p.Port })
	})
	slices.SortFunc(t.Proxy, func(a, b ProxyPort) int { return int(a.Port) - int(b.Port) })
	for i := 0; i+1 < len(t.Proxy); i++ {
		if t.Proxy[i].Port == t.Proxy[i+1].Port {
			t.Proxy[i] = ProxyPort{Port: t.Proxy[i].Port}
			t.Proxy = slices.Delete(t.Proxy, i+1, i+2)
			i--
		}
	}
	slices.SortFunc(t.App, func(a, b AppPort) int { return int(a.Port) - int(b.Port) })
	t.App = slices.CompactFunc(t.App, func(a, b AppPort) bool { return a.Port == b.Port })
	// The header names only the policies that made this host's table: an
	// agent learns nothing of the rest of the deployment from it.
	slices.Sort(pols)
	t.Header = (&View{Policies: pols}).Header("#")
	return t
}

// Ports returns every port the table governs, sorted.
func (t HostTable) Ports() []uint16 {
	var ps []uint16
	for _, p := range t.Proxy {
		ps = appendUnique(ps, p.Port)
	}
	for _, p := range t.App {
		ps = appendUnique(ps, p.Port)
	}
	slices.Sort(ps)
	return ps
}

// setName is the name of the set of addresses of one family allowed to a
// port.
func setName(port uint16, v6 bool) string {
	if v6 {
		return fmt.Sprintf("allow_%d_v6", port)
	}
	return fmt.Sprintf("allow_%d_v4", port)
}

// split returns the IPv4 and the IPv6 addresses of as.
func split(as []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range as {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6
}

// NFT renders the table in nft -f syntax. It deletes the table first
// (the "table ...; delete table ..." idiom makes that work whether or not
// it exists), so loading the file replaces ours whole, in one transaction.
func (t HostTable) NFT() string {
	var b strings.Builder
	b.WriteString(t.Header)
	fmt.Fprintf(&b, "# host %s\n", t.Host)
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, p := range t.Proxy {
		v4, v6 := split(p.From)
		for _, fam := range []struct {
			v6    bool
			typ   string
			addrs []netip.Addr
		}{{false, "ipv4_addr", v4}, {true, "ipv6_addr", v6}} {
			fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", setName(p.Port, fam.v6), fam.typ)
			if len(fam.addrs) > 0 {
				s := make([]string, len(fam.addrs))
				for i, a := range fam.addrs {
					s[i] = a.String()
				}
				fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(s, ", "))
			}
			b.WriteString("\t}\n")
		}
	}
	for _, p := range t.Ports() {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", CounterName(p))
	}
	verdict := " drop"
	if t.Report {
		verdict = ""
	}
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n")
	b.WriteString("\t\tct state established accept\n")
	for _, p := range t.Proxy {
		fmt.Fprintf(&b, "\t\t# %s: its inbound port, from its allowed callers' hosts\n", p.Service)
		if p.Loopback {
			fmt.Fprintf(&b, "\t\ttcp dport %d iif \"lo\" accept\n", p.Port)
		}
		fmt.Fprintf(&b, "\t\ttcp dport %d ip saddr @%s accept\n", p.Port, setName(p.Port, false))
		fmt.Fprintf(&b, "\t\ttcp dport %d ip6 saddr @%s accept\n", p.Port, setName(p.Port, true))
		fmt.Fprintf(&b, "\t\ttcp dport %d counter name %q%s\n", p.Port, CounterName(p.Port), verdict)
	}
	for _, p := range t.App {
		fmt.Fprintf(&b, "\t\t# %s: the application behind its proxy, loopback only\n", p.Service)
		fmt.Fprintf(&b, "\t\ttcp dport %d iif \"lo\" accept\n", p.Port)
		fmt.Fprintf(&b, "\t\ttcp dport %d counter name %q%s\n", p.Port, CounterName(p.Port), verdict)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
