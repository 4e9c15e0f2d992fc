// Package netnstest builds small networks of Linux network namespaces for
// tests: a bridge in a namespace of its own and "hosts" on it, each a
// namespace with one veth at 10.77.0.N/24. Everything is removed when the
// test ends. It needs root and iproute2; New skips the test, saying why,
// where namespaces cannot be made.
package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Lab is a bridge and hosts.
type Lab struct {
	t      testing.TB
	prefix string
	n      int
}

// Run runs a command, failing the test if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// New makes the bridge and n hosts. With hub, the bridge's namespace also
// gets an address (HubAddr), to run a server every host reaches.
func New(t testing.TB, n int, hub bool) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (the development and CI machines have it)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	l := &Lab{t: t, prefix: fmt.Sprintf("rpn%d%s", os.Getpid()%100000, strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r
		}
		return -1
	}, strings.ToLower(t.Name()))), n: n}
	if len(l.prefix) > 10 {
		l.prefix = l.prefix[:10]
	}
	if out, err := exec.Command("ip", "netns", "add", l.Hub()).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		for i := 1; i <= n; i++ {
			exec.Command("ip", "netns", "del", l.NS(i)).Run()
		}
		exec.Command("ip", "netns", "del", l.Hub()).Run()
	})
	sw := l.Hub()
	Run(t, "ip", "-n", sw, "link", "set", "lo", "up")
	Run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	Run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	if hub {
		Run(t, "ip", "-n", sw, "addr", "add", l.HubAddr().String()+"/24", "dev", "br0")
	}
	for i := 1; i <= n; i++ {
		h := l.NS(i)
		Run(t, "ip", "netns", "add", h)
		Run(t, "ip", "-n", h, "link", "set", "lo", "up")
		Run(t, "ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", fmt.Sprintf("p%d", i), "netns", sw)
		Run(t, "ip", "-n", h, "addr", "add", l.Addr(i).String()+"/24", "dev", "eth0")
		Run(t, "ip", "-n", h, "link", "set", "eth0", "up")
		Run(t, "ip", "-n", sw, "link", "set", fmt.Sprintf("p%d", i), "master", "br0", "up")
	}
	return l
}

// Addr is host i's address.
func (l *Lab) Addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(i)}) }

// HubAddr is the bridge namespace's address (with New(..., true)).
func (l *Lab) HubAddr() netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, 254}) }

// NS is host i's namespace name.
func (l *Lab) NS(i int) string { return fmt.Sprintf("%s-h%d", l.prefix, i) }

// Hub is the bridge's namespace name.
func (l *Lab) Hub() string { return l.prefix + "-sw" }

// Path is the namespace's file, for setns(2) or nftables.WithNetNSFd.
func (l *Lab) Path(ns string) string { return "/var/run/netns/" + ns }

// Command is a command to run in namespace ns.
func (l *Lab) Command(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}
