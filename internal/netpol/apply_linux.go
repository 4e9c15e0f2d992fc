//go:build linux

package netpol

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Firewall applies host tables to the kernel through netlink (nf_tables),
// with no nft binary.
type Firewall struct {
	conn *nftables.Conn
}

// OpenFirewall opens a netlink connection to nf_tables, in the network
// namespace of netnsFD (-1: the caller's).
func OpenFirewall(netnsFD int) (*Firewall, error) {
	var opts []nftables.ConnOption
	if netnsFD >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("netpol: nf_tables: %w", err)
	}
	return &Firewall{conn: c}, nil
}

func ourTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// Apply replaces our table with t in one transaction: the kernel sees the
// old table or the new one, never a mix and never none.
func (f *Firewall) Apply(t HostTable) error {
	// Make sure it exists, so that the delete below cannot fail the
	// batch (a no-op when it does).
	f.conn.AddTable(ourTable())
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netpol: create table: %w", err)
	}
	tab := ourTable()
	f.conn.DelTable(tab)
	tab = f.conn.AddTable(ourTable())
	sets := map[string]*nftables.Set{}
	for _, p := range t.Proxy {
		v4, v6 := split(p.From)
		for _, fam := range []struct {
			v6    bool
			addrs []netip.Addr
		}{{false, v4}, {true, v6}} {
			s := &nftables.Set{Table: tab, Name: setName(p.Port, fam.v6), KeyType: nftables.TypeIPAddr}
			if fam.v6 {
				s.KeyType = nftables.TypeIP6Addr
			}
			els := make([]nftables.SetElement, len(fam.addrs))
			for i, a := range fam.addrs {
				els[i] = nftables.SetElement{Key: a.AsSlice()}
			}
			if err := f.conn.AddSet(s, els); err != nil {
				return fmt.Errorf("netpol: set %s: %w", s.Name, err)
			}
			sets[s.Name] = s
		}
	}
	for _, p := range t.Ports() {
		f.conn.AddObj(&nftables.CounterObj{Table: tab, Name: CounterName(p)})
	}
	policy := nftables.ChainPolicyAccept
	ch := f.conn.AddChain(&nftables.Chain{Name: "input", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10), Policy: &policy})
	rule := func(comment string, e ...expr.Any) {
		r := &nftables.Rule{Table: tab, Chain: ch, Exprs: e}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		f.conn.AddRule(r)
	}
	rule("", join(ctEstablished(), accept())...)
	drop := func(port uint16) []expr.Any {
		e := []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: CounterName(port)}}
		if !t.Report {
			e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
		}
		return e
	}
	for _, p := range t.Proxy {
		c := p.Service.String()
		if p.Loopback {
			rule(c, join(tcpDport(p.Port), iifLo(), accept())...)
		}
		rule(c, join(tcpDport(p.Port), saddrIn(sets[setName(p.Port, false)], false), accept())...)
		rule(c, join(tcpDport(p.Port), saddrIn(sets[setName(p.Port, true)], true), accept())...)
		rule(c, join(tcpDport(p.Port), drop(p.Port))...)
	}
	for _, p := range t.App {
		c := p.Service.String() + " (application)"
		rule(c, join(tcpDport(p.Port), iifLo(), accept())...)
		rule(c, join(tcpDport(p.Port), drop(p.Port))...)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netpol: apply the table: %w", err)
	}
	return nil
}

// Remove deletes our table, and nothing else; no table is not an error.
func (f *Firewall) Remove() error {
	if _, err := f.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet); err != nil {
		return nil
	}
	f.conn.DelTable(ourTable())
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netpol: remove the table: %w", err)
	}
	return nil
}

// ErrNoTable is returned by Applied when our table is not installed.
var ErrNoTable = errors.New("netpol: no table of ours is installed")

// Applied reads back what is installed, as a HostTable (services are
// taken from the rule comments), for Check.
func (f *Firewall) Applied() (HostTable, error) {
	tab, err := f.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		return HostTable{}, ErrNoTable
	}
	members := map[string][]netip.Addr{}
	sets, err := f.conn.GetSets(tab)
	if err != nil {
		return HostTable{}, fmt.Errorf("netpol: read sets: %w", err)
	}
	for _, s := range sets {
		els, err := f.conn.GetSetElements(s)
		if err != nil {
			return HostTable{}, fmt.Errorf("netpol: read set %s: %w", s.Name, err)
		}
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				members[s.Name] = append(members[s.Name], a)
			}
		}
	}
	rules, err := f.conn.GetRules(tab, &nftables.Chain{Name: "input", Table: tab})
	if err != nil {
		return HostTable{}, fmt.Errorf("netpol: read rules: %w", err)
	}
	out := HostTable{Report: true}
	proxy := map[uint16]*ProxyPort{}
	app := map[uint16]*AppPort{}
	for _, r := range rules {
		port, lookup, lo, counted, verdict := decodeRule(r.Exprs)
		if port == 0 {
			if !isCtEstablished(r.Exprs) {
				out.Unknown = append(out.Unknown, fmt.Sprintf("a rule of %d expressions matching no port", len(r.Exprs)))
			}
			continue
		}
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if verdict == expr.VerdictDrop {
			out.Report = false
		}
		switch {
		case lookup != "":
			p := proxyAt(proxy, port)
			p.From = append(p.From, members[lookup]...)
			p.Service = parseIDOrZero(comment)
		case lo && proxy[port] == nil && app[port] == nil && isAppComment(comment):
			app[port] = &AppPort{Port: port, Service: parseIDOrZero(comment[:len(comment)-len(" (application)")])}
		case lo && verdict == expr.VerdictAccept:
			proxyAt(proxy, port).Loopback = true
		case counted && (verdict == expr.VerdictDrop || verdict == -100):
			// the closing counter (and drop) of a port: a port closed to
			// all has nothing else
			if proxy[port] == nil && app[port] == nil {
				proxyAt(proxy, port)
			}
		default:
			out.Unknown = append(out.Unknown, fmt.Sprintf("a rule at port %d that netpol does not write", port))
		}
	}
	for _, p := range proxy {
		slices.SortFunc(p.From, netip.Addr.Compare)
		out.Proxy = append(out.Proxy, *p)
	}
	for _, p := range app {
		out.App = append(out.App, *p)
	}
	slices.SortFunc(out.Proxy, func(a, b ProxyPort) int { return int(a.Port) - int(b.Port) })
	slices.SortFunc(out.App, func(a, b AppPort) int { return int(a.Port) - int(b.Port) })
	return out, nil
}

// Counters returns the packets counted at each governed port: the
// connection attempts dropped (or, in report mode, that would have been).
func (f *Firewall) Counters() (map[uint16]uint64, error) {
	tab, err := f.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		return nil, ErrNoTable
	}
	objs, err := f.conn.GetObjects(tab)
	if err != nil {
		return nil, fmt.Errorf("netpol: read counters: %w", err)
	}
	out := map[uint16]uint64{}
	for _, o := range objs {
		c, ok := o.(*nftables.CounterObj)
		if !ok {
			continue
		}
		var port uint16
		if _, err := fmt.Sscanf(c.Name, "drop_%d", &port); err == nil {
			out[port] = c.Packets
		}
	}
	return out, nil
}

// Close closes the netlink connection.
func (f *Firewall) Close() error { return f.conn.CloseLasting() }

func join(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case expr.Any:
			out = append(out, p)
		case []expr.Any:
			out = append(out, p...)
		}
	}
	return out
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func tcpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func iifLo() []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, "lo")
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
}

func saddrIn(s *nftables.Set, v6 bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

func isCtEstablished(es []expr.Any) bool {
	return len(es) == 4 && func() bool { c, ok := es[0].(*expr.Ct); return ok && c.Key == expr.CtKeySTATE }()
}

// decodeRule reads back a rule of the shapes Apply writes.
func decodeRule(es []expr.Any) (port uint16, lookup string, lo, counted bool, verdict expr.VerdictKind) {
	verdict = -100
	for i, e := range es {
		switch e := e.(type) {
		case *expr.Payload:
			if e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2 && i+1 < len(es) {
				if c, ok := es[i+1].(*expr.Cmp); ok && len(c.Data) == 2 {
					port = binaryutil.BigEndian.Uint16(c.Data)
				}
			}
		case *expr.Lookup:
			lookup = e.SetName
		case *expr.Meta:
			if e.Key == expr.MetaKeyIIFNAME {
				lo = true
			}
		case *expr.Objref:
			counted = true
		case *expr.Verdict:
			verdict = e.Kind
		}
	}
	return port, lookup, lo, counted, verdict
}

func proxyAt(m map[uint16]*ProxyPort, port uint16) *ProxyPort {
	if m[port] == nil {
		m[port] = &ProxyPort{Port: port}
	}
	return m[port]
}
