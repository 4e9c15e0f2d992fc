//go:build linux

package netpol

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/netpol/netnstest"
)

// The helper processes the namespace tests start: this test binary again,
// told what to do by the environment.
func TestMain(m *testing.M) {
	switch os.Getenv("NETPOL_TEST_HELPER") {
	case "listen": // listen on every address at the given ports, accept forever
		for _, p := range strings.Split(os.Getenv("NETPOL_TEST_PORTS"), ",") {
			ln, err := net.Listen("tcp", ":"+p)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok"))
					c.Close()
				}
			}()
		}
		fmt.Println("listening")
		select {}
	case "dial": // exit 0 if a connection opens and says ok
		c, err := net.DialTimeout("tcp", os.Getenv("NETPOL_TEST_ADDR"), 700*time.Millisecond)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b := make([]byte, 2)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(b); err != nil || string(b) != "ok" {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// lab is the namespaces of a test and helpers started in them.
type lab struct {
	*netnstest.Lab
	t *testing.T
}

func newLab(t *testing.T, n int) *lab { return &lab{Lab: netnstest.New(t, n, false), t: t} }

func (l *lab) addr(i int) netip.Addr { return l.Addr(i) }
func (l *lab) ns(i int) string       { return l.NS(i) }

func run(t *testing.T, args ...string) { t.Helper(); netnstest.Run(t, args...) }

// listen starts the helper listening in host i at ports.
func (l *lab) listen(i int, ports ...uint16) {
	var ps []string
	for _, p := range ports {
		ps = append(ps, fmt.Sprint(p))
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns(i), os.Args[0])
	cmd.Env = append(os.Environ(), "NETPOL_TEST_HELPER=listen", "NETPOL_TEST_PORTS="+strings.Join(ps, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	b := make([]byte, 9)
	if _, err := out.Read(b); err != nil || string(b) != "listening" {
		l.t.Fatalf("listener in host %d did not start: %q %v", i, b, err)
	}
}

// connects reports whether a TCP connection from host i to addr opens.
func (l *lab) connects(i int, addr string) bool {
	cmd := exec.Command("ip", "netns", "exec", l.ns(i), os.Args[0])
	cmd.Env = append(os.Environ(), "NETPOL_TEST_HELPER=dial", "NETPOL_TEST_ADDR="+addr)
	return cmd.Run() == nil
}

// firewall opens nf_tables in host i.
func (l *lab) firewall(i int) *Firewall {
	fd, err := unix.Open(l.Path(l.ns(i)), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { unix.Close(fd) })
	f, err := OpenFirewall(fd)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { f.Close() })
	return f
}

// Three hosts: h1 runs orders, h2 payments (proxy on 8443, application
// on 8080), h3 the batch job. Policy: only orders may call payments.
// With h2's table applied, h1 connects to 8443, h3 cannot, nobody reaches
// 8080 but h2's own loopback; a policy change opens 8443 to h3; removing
// the table leaves nothing of ours.
func TestEnforcementInNamespaces(t *testing.T) {
	l := newLab(t, 3)
	l.listen(2, 8443, 8080, 22)
	const pay = "service: spiffe://example.org/payments\nnetwork:\n  app_ports: [8080]\nrules:\n- name: r\n  callers: [%s]\n"
	placements := []Placement{
		{Service: id("orders"), Host: l.addr(1)},
		{Service: id("payments"), Host: l.addr(2), Ports: []uint16{8443}},
		{Service: id("batch"), Host: l.addr(3)},
	}
	h2 := func(p string) string { return net.JoinHostPort(l.addr(2).String(), p) }
	if !l.connects(1, h2("8443")) || !l.connects(3, h2("8443")) {
		t.Fatal("without a table every host connects (the lab itself is broken)")
	}
	fw := l.firewall(2)
	v := Build(placements, mustPolicies(t, fmt.Sprintf(pay, "spiffe://example.org/orders")))
	want := v.HostTable(l.addr(2))
	if err := fw.Apply(want); err != nil {
		t.Fatal(err)
	}
	if !l.connects(1, h2("8443")) {
		t.Fatal("orders' host cannot reach payments' proxy")
	}
	if l.connects(3, h2("8443")) {
		t.Fatal("the batch host opened a connection to payments' proxy")
	}
	if l.connects(1, h2("8080")) {
		t.Fatal("orders' host reached payments' application around its proxy")
	}
	if !l.connects(2, "127.0.0.1:8080") {
		t.Fatal("the proxy's host cannot reach its application over loopback")
	}
	if !l.connects(3, h2("22")) {
		t.Fatal("a port we do not govern was closed")
	}
	// What is applied reads back as exactly what was rendered.
	if d, err := fw.Diff(want); err != nil || len(d) != 0 {
		t.Fatalf("applied differs from rendered: %v\n%s", err, strings.Join(d, "\n"))
	}
	c, err := fw.Counters()
	if err != nil || c[8443] == 0 || c[8080] == 0 {
		t.Fatalf("counters %v %v: the drops were not counted", c, err)
	}
	// nft itself sees our rules, with their comments.
	if nft, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("ip", "netns", "exec", l.ns(2), nft, "list", "table", "inet", TableName).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "tcp dport 8443 ip saddr @allow_8443_v4 accept") || !strings.Contains(string(out), `comment "spiffe://example.org/payments"`) {
			t.Fatalf("nft list:\n%s %v", out, err)
		}
	}
	// A policy change: the batch job may call payments too.
	v = Build(placements, mustPolicies(t, fmt.Sprintf(pay, "spiffe://example.org/orders, spiffe://example.org/batch")))
	if err := fw.Apply(v.HostTable(l.addr(2))); err != nil {
		t.Fatal(err)
	}
	if !l.connects(3, h2("8443")) {
		t.Fatal("after the policy change the batch host still cannot connect")
	}
	// Every edit behind our back is found, however small: each one let
	// someone in while a looser comparison said "in step" (red team).
	cur := v.HostTable(l.addr(2))
	nft := func(args ...string) { run(t, append([]string{"ip", "netns", "exec", l.ns(2), "nft"}, args...)...) }
	for _, edit := range []struct {
		name string
		do   func()
	}{
		{"an address added to a set", func() { nft("add", "element", "inet", TableName, setName(8443, false), "{ 10.77.0.99 }") }},
		{"a rule added to our chain", func() { nft("add", "rule", "inet", TableName, "input", "tcp", "dport", "22", "accept") }},
		{"NEW accepted by the ct rule", func() {
			nft("replace", "rule", "inet", TableName, "input", "handle", ruleHandle(t, l.ns(2), 0), "ct", "state", "established,related,new", "accept")
		}},
		{"a lookup inverted", func() {
			nft("replace", "rule", "inet", TableName, "input", "handle", ruleHandle(t, l.ns(2), 1), "tcp", "dport", "8443", "ip", "saddr", "!=", "@"+setName(8443, false), "accept")
		}},
		{"one drop made a count", func() {
			nft("replace", "rule", "inet", TableName, "input", "handle", ruleHandle(t, l.ns(2), 5), "tcp", "dport", "8080", "counter", "name", `"drop_8080"`)
		}},
		{"another chain in our table", func() { nft("add", "chain", "inet", TableName, "sneak") }},
		{"the table deleted", func() { nft("delete", "table", "inet", TableName) }},
	} {
		if err := fw.Apply(cur); err != nil {
			t.Fatal(err)
		}
		if d, _ := fw.Diff(cur); len(d) != 0 {
			t.Fatalf("before %s: %q", edit.name, d)
		}
		edit.do()
		if d, err := fw.Diff(cur); err != nil || len(d) == 0 {
			t.Fatalf("%s: not found (%v)", edit.name, err)
		} else {
			t.Logf("%s: %s", edit.name, d[0])
		}
	}
	if err := fw.Apply(cur); err != nil {
		t.Fatal(err)
	}
	// Report mode drops nothing, and still counts.
	rep := Build(placements, mustPolicies(t, fmt.Sprintf(pay, "spiffe://example.org/orders"))).HostTable(l.addr(2))
	rep.Report = true
	if err := fw.Apply(rep); err != nil {
		t.Fatal(err)
	}
	if !l.connects(3, h2("8443")) {
		t.Fatal("report mode dropped a connection")
	}
	if c, _ := fw.Counters(); c[8443] != 1 {
		t.Fatalf("report mode counted %d, want 1", c[8443])
	}
	// Removing leaves no table of ours, and leaves others' alone.
	run(t, "ip", "netns", "exec", l.ns(2), "nft", "add", "table", "inet", "theirs")
	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Counters(); err != ErrNoTable {
		t.Fatalf("after Remove: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "exec", l.ns(2), "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), TableName) || !strings.Contains(string(out), "theirs") {
		t.Fatalf("tables after Remove:\n%s", out)
	}
	if err := fw.Remove(); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

// ruleHandle returns the handle of the i-th rule of our input chain, as
// nft -a lists it.
func ruleHandle(t *testing.T, ns string, i int) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", TableName, "input").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var handles []string
	for _, line := range strings.Split(string(out), "\n") {
		if j := strings.LastIndex(line, "# handle "); j >= 0 && !strings.Contains(line, "chain input") {
			handles = append(handles, strings.TrimSpace(line[j+len("# handle "):]))
		}
	}
	if i >= len(handles) {
		t.Fatalf("no rule %d in:\n%s", i, out)
	}
	return handles[i]
}
