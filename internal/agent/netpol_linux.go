//go:build linux

package agent

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/netpol"
)

// openFirewall opens nf_tables when the mode installs a table.
func (a *Agent) openFirewall() (firewall, error) {
	switch a.cfg.Netpol {
	case "", NetpolOff:
		return nil, nil
	case NetpolReport, NetpolEnforce:
	default:
		return nil, fmt.Errorf("agent: --netpol %q: want off, report or enforce", a.cfg.Netpol)
	}
	fd := -1
	if a.cfg.NetpolNetNS != "" {
		var err error
		if fd, err = unix.Open(a.cfg.NetpolNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("agent: --netpol-netns: %w", err)
		}
	}
	fw, err := netpol.OpenFirewall(fd)
	if err != nil {
		return nil, fmt.Errorf("agent: --netpol=%s: %w (the agent needs CAP_NET_ADMIN)", a.cfg.Netpol, err)
	}
	return fw, nil
}
