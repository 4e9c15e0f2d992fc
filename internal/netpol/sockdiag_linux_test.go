package netpol

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fdInode is the inode of the socket behind c (a listener or a
// connection), as /proc/self/fd shows it.
func fdInode(t testing.TB, c interface {
	File() (*os.File, error)
}) uint64 {
	t.Helper()
	f, err := c.File() // a duplicate descriptor: the same socket
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, ok := socketInode(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if !ok {
		t.Fatalf("descriptor %d is not a socket", f.Fd())
	}
	return n
}

// The kernel's socket diagnostics list the same listeners as
// /proc/net/tcp and tcp6 (inode and address), and no connection: an
// established socket, on either end, is not a listener.
func TestReadListenersDiag(t *testing.T) {
	pub, lo := publicAndLoopback(t)
	want := map[uint64]netip.AddrPort{
		fdInode(t, pub.(*net.TCPListener)): netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(pub.Addr().(*net.TCPAddr).Port)),
		fdInode(t, lo.(*net.TCPListener)):  netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(lo.Addr().(*net.TCPAddr).Port)),
	}
	if six, err := net.Listen("tcp6", "[::]:0"); err == nil {
		defer six.Close()
		want[fdInode(t, six.(*net.TCPListener))] = netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(six.Addr().(*net.TCPAddr).Port))
	}
	client, err := net.Dial("tcp4", lo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lo.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	conns := []uint64{fdInode(t, client.(*net.TCPConn)), fdInode(t, server.(*net.TCPConn))}

	got, err := readListenersDiag()
	if err != nil {
		t.Fatal(err)
	}
	for ino, ap := range want {
		if got[ino] != ap {
			t.Errorf("listener %d: sock_diag says %v, want %v", ino, got[ino], ap)
		}
	}
	for _, ino := range conns {
		if ap, ok := got[ino]; ok {
			t.Errorf("connection %d listed as a listener on %v", ino, ap)
		}
	}
	// The same table as the one read from /proc.
	l := NewListeners("/proc", NetNS{})
	if err := l.read("/proc/self"); err != nil {
		t.Fatal(err)
	}
	for ino, ap := range want {
		if l.table[ino] != ap {
			t.Errorf("listener %d: /proc says %v, want %v", ino, l.table[ino], ap)
		}
	}
}

// Our own namespace is read through sock_diag, another through /proc.
func TestListenersOwnNamespace(t *testing.T) {
	self, err := NetNSOf("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if !NewListeners("/proc", self).own {
		t.Fatal("this process's namespace is not read through sock_diag")
	}
	if NewListeners("/proc", NetNS{Dev: self.Dev, Ino: self.Ino + 1}).own {
		t.Fatal("another namespace read through sock_diag (it reads ours)")
	}
}

// diagMsg is one SOCK_DIAG_BY_FAMILY message as the kernel writes it.
func diagMsg(seq uint32, family, state uint8, addr netip.AddrPort, inode uint32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+inetDiagMsgLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint32(b[8:], seq)
	d := b[unix.NLMSG_HDRLEN:]
	d[0], d[1] = family, state
	binary.BigEndian.PutUint16(d[inetDiagSockIDs:], addr.Port())
	a := addr.Addr().As16()
	if family == unix.AF_INET {
		copy(d[inetDiagSockIDs+4:], addr.Addr().AsSlice())
	} else {
		copy(d[inetDiagSockIDs+4:], a[:])
	}
	ne.PutUint32(d[68:], inode)
	return b
}

func diagDone(seq uint32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(b[8:], seq)
	return b
}

// The parser takes listeners of both families, skips other states and
// other requests' answers, reports the kernel's errors, and refuses a
// message shorter than inet_diag_msg.
func TestParseDiagMessages(t *testing.T) {
	v4 := netip.MustParseAddrPort("10.0.0.2:8443")
	v6 := netip.MustParseAddrPort("[2001:db8::1]:9443")
	var b []byte
	b = append(b, diagMsg(7, unix.AF_INET, tcpListen, v4, 1001)...)
	b = append(b, diagMsg(7, unix.AF_INET6, tcpListen, v6, 1002)...)
	b = append(b, diagMsg(7, unix.AF_INET, 1 /* ESTABLISHED */, v4, 1003)...)
	b = append(b, diagMsg(6, unix.AF_INET, tcpListen, v4, 1004)...)
	out := map[uint64]netip.AddrPort{}
	done, err := parseDiagMessages(b, 7, out)
	if err != nil || done {
		t.Fatalf("done %v err %v", done, err)
	}
	if len(out) != 2 || out[1001] != v4 || out[1002] != v6 {
		t.Fatalf("parsed %v", out)
	}
	if done, err := parseDiagMessages(diagDone(7), 7, out); err != nil || !done {
		t.Fatalf("NLMSG_DONE: done %v err %v", done, err)
	}
	errMsg := diagDone(7)
	binary.NativeEndian.PutUint16(errMsg[4:], unix.NLMSG_ERROR)
	eperm := -int32(unix.EPERM)
	binary.NativeEndian.PutUint32(errMsg[unix.NLMSG_HDRLEN:], uint32(eperm))
	if _, err := parseDiagMessages(errMsg, 7, out); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("NLMSG_ERROR: %v", err)
	}
	short := diagMsg(7, unix.AF_INET, tcpListen, v4, 1)[:unix.NLMSG_HDRLEN+40]
	binary.NativeEndian.PutUint32(short[0:], uint32(len(short)))
	if _, err := parseDiagMessages(short, 7, out); err == nil {
		t.Fatal("a short message was accepted")
	}
}

// The kernel's answer is parsed without trusting its lengths.
func FuzzParseDiagMessages(f *testing.F) {
	f.Add(diagMsg(1, unix.AF_INET, tcpListen, netip.MustParseAddrPort("10.0.0.2:8443"), 1))
	f.Add(append(diagMsg(1, unix.AF_INET6, tcpListen, netip.MustParseAddrPort("[::]:22"), 2), diagDone(1)...))
	f.Add(diagDone(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := map[uint64]netip.AddrPort{}
		if _, err := parseDiagMessages(b, 1, out); err != nil {
			return
		}
		for _, ap := range out {
			if !ap.IsValid() {
				t.Fatalf("invalid address %v", ap)
			}
		}
	})
}

// Every process of a namespace shares one read of its sockets: a second
// process is answered from the table read for the first (here it has no
// table of its own to read).
func TestListenersReadOnce(t *testing.T) {
	proc := t.TempDir()
	os.WriteFile(filepath.Join(proc, "hostns"), nil, 0o644)
	ns, err := NetNSOf(filepath.Join(proc, "hostns"))
	if err != nil {
		t.Fatal(err)
	}
	for i, pid := range []string{"100", "200"} {
		dir := filepath.Join(proc, pid)
		for _, d := range []string{"fd", "net", "ns"} {
			os.MkdirAll(filepath.Join(dir, d), 0o755)
		}
		if err := os.Link(filepath.Join(proc, "hostns"), filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
		os.Symlink(fmt.Sprintf("socket:[%d]", 4242+i), filepath.Join(dir, "fd", "3"))
	}
	os.WriteFile(filepath.Join(proc, "100", "net", "tcp"), []byte(procTCPHeader+
		"   0: 0200000A:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n"+
		"   1: 0200000A:20FC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0\n"), 0o644)
	l := NewListeners(proc, ns)
	for _, c := range []struct { // in this order: the first asked gives the table
		pid  int
		want uint16
	}{{100, 8443}, {200, 8444}} {
		ports, err := l.Ports(c.pid)
		if err != nil || len(ports) != 1 || ports[0] != c.want {
			t.Fatalf("pid %d: ports %v, %v; want %d", c.pid, ports, err, c.want)
		}
	}
}

const procTCPHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

// What a report's read of the host's listeners costs with many
// connections open: /proc formats and parses every socket, sock_diag
// walks the listeners only (docs/benchmarks.md).
func BenchmarkListeners(b *testing.B) {
	lo, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lo.Close()
	go func() {
		for {
			c, err := lo.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	const conns = 2000
	for range conns {
		c, err := net.Dial("tcp4", lo.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
	}
	b.Run("proc", func(b *testing.B) {
		for b.Loop() {
			l := &Listeners{proc: "/proc"}
			if err := l.read("/proc/self"); err != nil {
				b.Fatal(err)
			}
		}
	})
	self, err := NetNSOf("/proc/self/ns/net")
	if err != nil {
		b.Fatal(err)
	}
	// The whole question for one process holding all those sockets: its
	// descriptors are read too.
	b.Run("ports", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewListeners("/proc", self).Ports(os.Getpid()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sock_diag", func(b *testing.B) {
		for b.Loop() {
			if _, err := readListenersDiag(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
