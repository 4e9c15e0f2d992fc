package netpol

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0200000A:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0200000A:20FB 0100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
`

const procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:24E3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
`

func TestParseProcNetTCP(t *testing.T) {
	ls, err := ParseProcNetTCP(strings.NewReader(procTCP))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Addr.String() != "127.0.0.1:8080" || ls[1].Addr.String() != "10.0.0.2:8443" || ls[1].Inode != 1002 {
		t.Fatalf("%+v (the established socket must be left out)", ls)
	}
	ls, err = ParseProcNetTCP(strings.NewReader(procTCP6))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Addr.String() != "[::]:9443" || ls[1].Addr.String() != "[::1]:8081" {
		t.Fatalf("%+v", ls)
	}
	for _, bad := range []string{"h\n0: 0100007F:1F90 00000000:0000 0A\n", "h\n0: 0100007G:1F90 0:0 0A a b c d e 1\n", "h\n0: 0100007F:1F90 0:0 0A a b c d e x\n"} {
		if _, err := ParseProcNetTCP(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseProcNetTCP(f *testing.F) {
	f.Add(procTCP)
	f.Add(procTCP6)
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ParseProcNetTCP(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, l := range ls {
			if !l.Addr.IsValid() {
				t.Fatalf("invalid address accepted: %+v", l)
			}
		}
	})
}

// publicAndLoopback listens on all addresses and on loopback, both closed
// when the test ends.
func publicAndLoopback(t *testing.T) (pub, lo net.Listener) {
	t.Helper()
	pub, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	if lo, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lo.Close() })
	return pub, lo
}

// Our own process: a listener on all addresses is reported, one on
// loopback is not, and another process's is not ours.
func TestListeningPorts(t *testing.T) {
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp here")
	}
	pub, lo := publicAndLoopback(t)
	self, err := NetNSOf("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := NewListeners("/proc", self).Ports(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	pp := uint16(pub.Addr().(*net.TCPAddr).Port)
	lp := uint16(lo.Addr().(*net.TCPAddr).Port)
	if !slices.Contains(ports, pp) || slices.Contains(ports, lp) {
		t.Fatalf("ports %v: want %d and not %d", ports, pp, lp)
	}
	if _, err := NewListeners("/proc", self).Ports(1 << 30); err == nil {
		t.Fatal("a process that does not exist has ports")
	}
	// A process in another network namespace holds none of the host's
	// ports, whatever it listens on there (any user may bind 22 in a
	// namespace of its own).
	if _, err := NewListeners("/proc", NetNS{Dev: self.Dev, Ino: self.Ino + 1}).Ports(os.Getpid()); !errors.Is(err, ErrOtherNetNS) {
		t.Fatalf("another namespace: %v", err)
	}
}

// A real process in a network namespace of its own (as `unshare -Urn`
// gives any user) is refused, not read.
func TestListeningPortsRefusesOtherNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare (util-linux)")
	}
	cmd := exec.Command(unshare, "-n", "--", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	self, _ := NetNSOf("/proc/self/ns/net")
	for range 100 { // until unshare has exec'd sleep in its namespace
		if ns, err := NetNSOf(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && ns != self {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := NewListeners("/proc", self).Ports(cmd.Process.Pid); !errors.Is(err, ErrOtherNetNS) {
		t.Fatalf("a process in another namespace: %v", err)
	}
}
