//go:build !linux

package main

import (
	"errors"

	"github.com/rampartsec/rampart/internal/netpol"
)

func appliedDiff(string, netpol.HostTable) ([]string, error) {
	return nil, errors.New("netpol check: reading nftables is Linux only")
}
