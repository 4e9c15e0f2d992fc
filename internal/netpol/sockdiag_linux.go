package netpol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// The kernel's socket diagnostics (NETLINK_SOCK_DIAG, linux/inet_diag.h):
// asked for TCP sockets in LISTEN only, the kernel walks its listening
// hash and never the established one, so the answer costs the same on a
// host with a million connections as on an idle one. /proc/net/tcp has
// no such filter: every socket of the namespace, TIME_WAIT included, is
// formatted as text and parsed back, which on a busy host cost the agent
// a quarter of a CPU every 2 s (docs/benchmarks.md, "the agent's slow
// window").

const (
	tcpListen       = 10 // TCP_LISTEN
	inetDiagReqLen  = 56 // struct inet_diag_req_v2
	inetDiagMsgLen  = 72 // struct inet_diag_msg
	inetDiagSockIDs = 4  // offset of struct inet_diag_sockid in both
)

// readListenersDiag returns the TCP sockets in LISTEN of this process's
// network namespace, IPv4 and IPv6, by socket inode.
func readListenersDiag() (map[uint64]netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("netpol: sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netpol: sock_diag: %w", err)
	}
	out := map[uint64]netip.AddrPort{}
	buf := make([]byte, 64<<10)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := unix.Sendto(fd, diagRequest(uint32(seq+1), family), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("netpol: sock_diag: %w", err)
		}
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return nil, fmt.Errorf("netpol: sock_diag: %w", err)
			}
			if done, err = parseDiagMessages(buf[:n], uint32(seq+1), out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// diagRequest is a dump request for the TCP sockets of family in LISTEN.
func diagRequest(seq uint32, family uint8) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	r := b[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)
	return b
}

// parseDiagMessages adds the sockets of one netlink datagram to out and
// says whether the dump is done. Every length is checked: a short or
// malformed message is an error, never a read past the datagram.
func parseDiagMessages(b []byte, seq uint32, out map[uint64]netip.AddrPort) (done bool, err error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return false, fmt.Errorf("netpol: sock_diag: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Seq != seq {
			continue // an answer to an earlier request
		}
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return false, fmt.Errorf("netpol: sock_diag: %w", syscall.Errno(-e))
				}
			}
			return false, errors.New("netpol: sock_diag: error message")
		case unix.SOCK_DIAG_BY_FAMILY:
		default:
			continue
		}
		d := m.Data
		if len(d) < inetDiagMsgLen {
			return false, fmt.Errorf("netpol: sock_diag: message of %d bytes, want %d", len(d), inetDiagMsgLen)
		}
		if d[1] != tcpListen {
			continue
		}
		id := d[inetDiagSockIDs:]
		port := binary.BigEndian.Uint16(id[0:2])
		var addr netip.Addr
		switch d[0] {
		case unix.AF_INET:
			addr = netip.AddrFrom4([4]byte(id[4:8]))
		case unix.AF_INET6:
			addr = netip.AddrFrom16([16]byte(id[4:20])).Unmap()
		default:
			continue
		}
		inode := binary.NativeEndian.Uint32(d[68:72])
		out[uint64(inode)] = netip.AddrPortFrom(addr, port)
	}
	return false, nil
}
