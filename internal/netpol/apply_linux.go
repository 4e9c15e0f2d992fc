//go:build linux

package netpol

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

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

// spec is what a host table is in nf_tables terms: the sets (name, key
// type, elements), the counters and the rules of the one chain, in order.
// Apply writes it and Diff compares the kernel's state with it, so the two
// cannot disagree on what a table means.
type spec struct {
	sets     []setSpec
	counters []string
	rules    []ruleSpec
}

type setSpec struct {
	name  string
	key   nftables.SetDatatype
	elems []netip.Addr
}

type ruleSpec struct {
	comment string
	exprs   []expr.Any
}

func specOf(t HostTable) spec {
	var sp spec
	for _, p := range t.Proxy {
		v4, v6 := split(p.From)
		sp.sets = append(sp.sets, setSpec{setName(p.Port, false), nftables.TypeIPAddr, v4}, setSpec{setName(p.Port, true), nftables.TypeIP6Addr, v6})
	}
	for _, p := range t.Ports() {
		sp.counters = append(sp.counters, CounterName(p))
	}
	rule := func(comment string, e ...expr.Any) { sp.rules = append(sp.rules, ruleSpec{comment, e}) }
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
		rule(c, join(tcpDport(p.Port), saddrIn(setName(p.Port, false), false), accept())...)
		rule(c, join(tcpDport(p.Port), saddrIn(setName(p.Port, true), true), accept())...)
		rule(c, join(tcpDport(p.Port), drop(p.Port))...)
	}
	for _, p := range t.App {
		c := p.Service.String() + " (application)"
		rule(c, join(tcpDport(p.Port), iifLo(), accept())...)
		rule(c, join(tcpDport(p.Port), drop(p.Port))...)
	}
	return sp
}

func inputChain(tab *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: "input", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10), Policy: &policy}
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
	sp := specOf(t)
	sets := map[string]*nftables.Set{}
	for _, ss := range sp.sets {
		s := &nftables.Set{Table: tab, Name: ss.name, KeyType: ss.key}
		els := make([]nftables.SetElement, len(ss.elems))
		for i, a := range ss.elems {
			els[i] = nftables.SetElement{Key: a.AsSlice()}
		}
		if err := f.conn.AddSet(s, els); err != nil {
			return fmt.Errorf("netpol: set %s: %w", s.Name, err)
		}
		sets[s.Name] = s
	}
	for _, c := range sp.counters {
		f.conn.AddObj(&nftables.CounterObj{Table: tab, Name: c})
	}
	ch := f.conn.AddChain(inputChain(tab))
	for _, r := range sp.rules {
		for _, e := range r.exprs {
			if l, ok := e.(*expr.Lookup); ok {
				l.SetID = sets[l.SetName].ID
			}
		}
		nr := &nftables.Rule{Table: tab, Chain: ch, Exprs: r.exprs}
		if r.comment != "" {
			nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
		}
		f.conn.AddRule(nr)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netpol: apply the table: %w", err)
	}
	return nil
}

// Diff compares what the kernel holds in our table with t, exactly: its
// chains (name, type, hook, priority, policy), every expression of every
// rule in order, the sets with their key types and elements, and the
// counters. It returns one line per difference; none means in step.
// Anything added to our table by hand, however small (an inverted lookup,
// a NEW in the ct state, another chain), is a difference.
func (f *Firewall) Diff(t HostTable) ([]string, error) {
	tab, err := f.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		return []string{"our table (inet " + TableName + ") is not installed"}, nil
	}
	sp := specOf(t)
	var out []string
	chains, err := f.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("netpol: read chains: %w", err)
	}
	want := inputChain(tab)
	found := false
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != TableName {
			continue
		}
		if c.Name != want.Name {
			out = append(out, "+ a chain "+c.Name+" that netpol does not write")
			continue
		}
		found = true
		if c.Type != want.Type || c.Hooknum == nil || *c.Hooknum != *want.Hooknum || c.Priority == nil || *c.Priority != *want.Priority ||
			c.Policy == nil || *c.Policy != *want.Policy {
			out = append(out, "~ chain input: its type, hook, priority or policy differs")
		}
	}
	if !found {
		out = append(out, "- chain input")
	}
	sets, err := f.conn.GetSets(tab)
	if err != nil {
		return nil, fmt.Errorf("netpol: read sets: %w", err)
	}
	have := map[string]*nftables.Set{}
	for _, s := range sets {
		have[s.Name] = s
	}
	for _, ws := range sp.sets {
		s := have[ws.name]
		delete(have, ws.name)
		if s == nil {
			out = append(out, "- set "+ws.name)
			continue
		}
		if s.KeyType.Name != ws.key.Name || s.Interval || s.Dynamic || s.HasTimeout || s.Anonymous {
			out = append(out, "~ set "+ws.name+": its type or flags differ")
		}
		els, err := f.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("netpol: read set %s: %w", s.Name, err)
		}
		got := map[netip.Addr]bool{}
		for _, e := range els {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok || e.IntervalEnd {
				out = append(out, "+ set "+ws.name+": an element that is not an address")
				continue
			}
			got[a] = true
		}
		for _, a := range ws.elems {
			if !got[a] {
				out = append(out, fmt.Sprintf("- set %s: %s", ws.name, a))
			}
			delete(got, a)
		}
		for a := range got {
			out = append(out, fmt.Sprintf("+ set %s: %s", ws.name, a))
		}
	}
	for name := range have {
		out = append(out, "+ a set "+name+" that netpol does not write")
	}
	objs, err := f.conn.GetObjects(tab)
	if err != nil {
		return nil, fmt.Errorf("netpol: read counters: %w", err)
	}
	counters := map[string]bool{}
	for _, o := range objs {
		c, ok := o.(*nftables.CounterObj)
		if !ok {
			out = append(out, "+ an object that netpol does not write")
			continue
		}
		counters[c.Name] = true
	}
	for _, c := range sp.counters {
		if !counters[c] {
			out = append(out, "- counter "+c)
		}
		delete(counters, c)
	}
	for c := range counters {
		out = append(out, "+ counter "+c)
	}
	if found {
		rules, err := f.conn.GetRules(tab, want)
		if err != nil {
			return nil, fmt.Errorf("netpol: read rules: %w", err)
		}
		for i := 0; i < max(len(rules), len(sp.rules)); i++ {
			switch {
			case i >= len(rules):
				out = append(out, fmt.Sprintf("- rule %d (%s)", i+1, describe(sp.rules[i].exprs)))
			case i >= len(sp.rules):
				out = append(out, fmt.Sprintf("+ rule %d (%s)", i+1, describe(rules[i].Exprs)))
			case !sameExprs(sp.rules[i].exprs, rules[i].Exprs):
				out = append(out, fmt.Sprintf("~ rule %d: want %s; have %s", i+1, describe(sp.rules[i].exprs), describe(rules[i].Exprs)))
			}
		}
	}
	return out, nil
}

// sameExprs compares two expression lists field by field, but for the
// set IDs a lookup carries (the kernel's, not the rule's meaning).
func sameExprs(a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if lx, ok := x.(*expr.Lookup); ok {
			c := *lx
			c.SetID = 0
			x = &c
		}
		if ly, ok := y.(*expr.Lookup); ok {
			c := *ly
			c.SetID = 0
			y = &c
		}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func describe(es []expr.Any) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%T%+v", e, e))
	}
	return strings.Join(parts, " ")
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

// ErrNoTable is returned by Counters when our table is not installed.
var ErrNoTable = errors.New("netpol: no table of ours is installed")

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
		// Established only: a RELATED connection (a conntrack helper's
		// expectation, which a local user can create with an FTP PORT
		// command) must pass the port rules like any new one.
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED), Xor: []byte{0, 0, 0, 0}},
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

func saddrIn(set string, v6 bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}
