//go:build linux

package main

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/netpol"
)

// appliedTable reads our table from the kernel (no table: an empty one,
// which then differs from any render that governs a port).
func appliedTable(netns string) (netpol.HostTable, error) {
	fd := -1
	if netns != "" {
		var err error
		if fd, err = unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return netpol.HostTable{}, fmt.Errorf("--netns: %w", err)
		}
		defer unix.Close(fd)
	}
	fw, err := netpol.OpenFirewall(fd)
	if err != nil {
		return netpol.HostTable{}, err
	}
	defer fw.Close()
	t, err := fw.Applied()
	if errors.Is(err, netpol.ErrNoTable) {
		return netpol.HostTable{}, nil
	}
	return t, err
}
