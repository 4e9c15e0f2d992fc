package netpol

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// NetNS identifies a network namespace: the device and inode of its nsfs
// file (/proc/PID/ns/net, /var/run/netns/NAME).
type NetNS struct{ Dev, Ino uint64 }

// NetNSOf returns the namespace of the file at path.
func NetNSOf(path string) (NetNS, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return NetNS{}, fmt.Errorf("netpol: network namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return NetNS{}, fmt.Errorf("netpol: network namespace %s: no inode", path)
	}
	return NetNS{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}, nil
}

// ErrOtherNetNS is returned by Listeners.Ports for a process in another
// network namespace than the one whose firewall is managed: its ports are
// not the host's (in a namespace of its own, any user may bind port 22).
var ErrOtherNetNS = errors.New("netpol: the process is in another network namespace")

// Listeners answers which TCP ports the processes of one network
// namespace listen on. It reads the namespace's listening sockets once,
// on first use: every process of the namespace shares that table, so a
// report about all of them costs one read, not one a process. Make a new
// one for each report.
type Listeners struct {
	proc  string
	want  NetNS
	own   bool                      // want is this process's namespace: sock_diag can read it
	table map[uint64]netip.AddrPort // listening sockets by inode; nil until read
}

// NewListeners returns the reader for namespace want, under the /proc at
// proc.
func NewListeners(proc string, want NetNS) *Listeners {
	self, err := NetNSOf(filepath.Join(proc, "self", "ns", "net"))
	return &Listeners{proc: proc, want: want, own: err == nil && self == want}
}

// Ports returns the TCP ports process pid listens on other than on
// loopback, as the kernel says: the sockets among its descriptors
// (/proc/PID/fd) that its namespace shows in LISTEN. A workload cannot
// claim a port it does not hold. The process must be in the namespace
// whose firewall is managed, else ErrOtherNetNS: ports held elsewhere are
// not the host's.
func (l *Listeners) Ports(pid int) ([]uint16, error) {
	held, err := l.Held(pid)
	if err != nil {
		return nil, err
	}
	return l.PortsOf(held), nil
}

// Table returns the namespace's listening sockets by inode, read on the
// first call (pid: a process of the namespace, whose /proc tables are read
// when the kernel's socket diagnostics cannot be).
//
// They come from the socket diagnostics when the namespace is this
// process's own: the kernel then walks its listening sockets only,
// whatever the number of connections. Otherwise from /proc/PID/net/tcp and
// tcp6: every socket of the namespace, formatted and parsed, a cost that
// grows with the host's connections, TIME_WAIT included.
func (l *Listeners) Table(pid int) (map[uint64]netip.AddrPort, error) {
	if l.table == nil {
		if err := l.read(filepath.Join(l.proc, strconv.Itoa(pid))); err != nil {
			return nil, fmt.Errorf("netpol: pid %d: %w", pid, err)
		}
	}
	return l.table, nil
}

// Held returns the listening sockets (inodes of the Table) among process
// pid's descriptors, by descriptor; ErrOtherNetNS if pid is in another
// namespace. It reads every descriptor of the process (about 5 µs each):
// a caller that asks again should keep the answer while the Table has not
// changed, and check it with StillHeld.
func (l *Listeners) Held(pid int) (map[string]uint64, error) {
	if err := l.InNamespace(pid); err != nil {
		return nil, err
	}
	dir := filepath.Join(l.proc, strconv.Itoa(pid))
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, fmt.Errorf("netpol: pid %d: %w", pid, err)
	}
	table, err := l.Table(pid)
	if err != nil {
		return nil, err
	}
	held := map[string]uint64{}
	for _, fd := range fds {
		if n, ok := socketInode(filepath.Join(dir, "fd", fd.Name())); ok {
			if _, ok := table[n]; ok {
				held[fd.Name()] = n
			}
		}
	}
	return held, nil
}

// StillHeld says whether process pid still holds every socket of held on
// the same descriptor (a few reads: one a listening socket).
func (l *Listeners) StillHeld(pid int, held map[string]uint64) bool {
	dir := filepath.Join(l.proc, strconv.Itoa(pid), "fd")
	for fd, want := range held {
		if n, ok := socketInode(filepath.Join(dir, fd)); !ok || n != want {
			return false
		}
	}
	return true
}

// socketInode reads the descriptor link at path ("socket:[INODE]").
func socketInode(path string) (uint64, bool) {
	link, err := os.Readlink(path)
	if err != nil {
		return 0, false // closed meanwhile
	}
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return n, err == nil
}

// InNamespace says whether process pid is in the namespace: nil, or
// ErrOtherNetNS (wrapped), or why it could not be told.
func (l *Listeners) InNamespace(pid int) error {
	got, err := NetNSOf(filepath.Join(l.proc, strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		return fmt.Errorf("netpol: pid %d: %w", pid, err)
	}
	if got != l.want {
		return fmt.Errorf("pid %d: %w", pid, ErrOtherNetNS)
	}
	return nil
}

// PortsOf returns the ports the listening sockets held listen on, other
// than on loopback, sorted; sockets no longer in the Table are skipped.
func (l *Listeners) PortsOf(held map[string]uint64) []uint16 {
	var ports []uint16
	for _, ino := range held {
		if ap, ok := l.table[ino]; ok && !ap.Addr().IsLoopback() {
			ports = appendUnique(ports, ap.Port())
		}
	}
	slices.Sort(ports)
	return ports
}

// read fills the table: from sock_diag for our own namespace (falling
// back to /proc if the kernel has no inet_diag), else from the tables of
// dir, a process in the namespace.
func (l *Listeners) read(dir string) error {
	if l.own {
		if t, err := readListenersDiag(); err == nil {
			l.table = t
			return nil
		}
	}
	t := map[uint64]netip.AddrPort{}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(dir, "net", table))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return err
		}
		ls, err := ParseProcNetTCP(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", table, err)
		}
		for _, s := range ls {
			t[s.Inode] = s.Addr
		}
	}
	l.table = t
	return nil
}

// Listener is one listening socket of /proc/net/tcp.
type Listener struct {
	Addr  netip.AddrPort
	Inode uint64
}

// ParseProcNetTCP reads a /proc/net/tcp or tcp6 table and returns its
// sockets in LISTEN (state 0A).
func ParseProcNetTCP(r io.Reader) ([]Listener, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	var out []Listener
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return nil, fmt.Errorf("line %q: want at least 10 fields", sc.Text())
		}
		if f[3] != "0A" {
			continue
		}
		ap, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("local address %q: %w", f[1], err)
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out = append(out, Listener{Addr: ap, Inode: ino})
	}
	return out, sc.Err()
}

// parseHexAddrPort parses the kernel's "0100007F:1F90": the address as
// 32-bit words in host byte order (little-endian here), the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) || len(p) != 4 {
		return netip.AddrPort{}, errors.New("want ADDR:PORT in hex")
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var b [16]byte
	for w := 0; w < len(a)/8; w++ {
		v, err := strconv.ParseUint(a[w*8:w*8+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, err
		}
		b[w*4], b[w*4+1], b[w*4+2], b[w*4+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	var addr netip.Addr
	if len(a) == 8 {
		addr = netip.AddrFrom4([4]byte(b[:4]))
	} else {
		addr = netip.AddrFrom16(b).Unmap()
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
