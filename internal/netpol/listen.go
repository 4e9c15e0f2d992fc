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

// ErrOtherNetNS is returned by ListeningPorts for a process in another
// network namespace than the one whose firewall is managed: its ports are
// not the host's (in a namespace of its own, any user may bind port 22).
var ErrOtherNetNS = errors.New("netpol: the process is in another network namespace")

// ListeningPorts returns the TCP ports process pid listens on other than
// on loopback, as the kernel says: the sockets among its descriptors
// (/proc/PID/fd) that its network namespace's tables (/proc/PID/net/tcp,
// tcp6) show in LISTEN. A workload cannot claim a port it does not hold.
// The process must be in network namespace want (the one whose firewall
// is managed), else ErrOtherNetNS: ports held elsewhere are not the host's.
func ListeningPorts(proc string, pid int, want NetNS) ([]uint16, error) {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	got, err := NetNSOf(filepath.Join(dir, "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("netpol: pid %d: %w", pid, err)
	}
	if got != want {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrOtherNetNS)
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, fmt.Errorf("netpol: pid %d: %w", pid, err)
	}
	inodes := map[uint64]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	var ports []uint16
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(dir, "net", table))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("netpol: pid %d: %w", pid, err)
		}
		ls, err := ParseProcNetTCP(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("netpol: pid %d: %s: %w", pid, table, err)
		}
		for _, l := range ls {
			if inodes[l.Inode] && !l.Addr.Addr().IsLoopback() {
				ports = appendUnique(ports, l.Addr.Port())
			}
		}
	}
	slices.Sort(ports)
	return ports, nil
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
