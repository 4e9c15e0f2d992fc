//go:build !linux

package agent

import "fmt"

func (a *Agent) openFirewall() (firewall, error) {
	if a.cfg.Netpol == "" || a.cfg.Netpol == NetpolOff {
		return nil, nil
	}
	return nil, fmt.Errorf("agent: --netpol=%s: nftables is Linux only", a.cfg.Netpol)
}
