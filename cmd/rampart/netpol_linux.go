//go:build linux

package main

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/netpol"
)

// appliedDiff compares the kernel's table (of namespace netns, or ours)
// with want, exactly (netpol.Firewall.Diff).
func appliedDiff(netns string, want netpol.HostTable) ([]string, error) {
	fd := -1
	if netns != "" {
		var err error
		if fd, err = unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("--netns: %w", err)
		}
		defer unix.Close(fd)
	}
	fw, err := netpol.OpenFirewall(fd)
	if err != nil {
		return nil, err
	}
	defer fw.Close()
	d, err := fw.Diff(want)
	if err != nil {
		return nil, err
	}
	if len(d) > 0 {
		// The mode is the agent's choice, not a difference: a table in
		// report mode that is otherwise in step is in step.
		want.Report = !want.Report
		if d2, err := fw.Diff(want); err == nil && len(d2) == 0 {
			return nil, nil
		}
	}
	return d, nil
}
