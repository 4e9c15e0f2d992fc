//go:build !linux

package netpol

import (
	"errors"
	"net/netip"
)

// readListenersDiag needs Linux's NETLINK_SOCK_DIAG; elsewhere the tables
// under /proc are read (where there are any).
func readListenersDiag() (map[uint64]netip.AddrPort, error) {
	return nil, errors.New("netpol: sock_diag is Linux's")
}
