//go:build !linux

package main

import (
	"errors"

	"github.com/rampartsec/rampart/internal/netpol"
)

func appliedTable(string) (netpol.HostTable, error) {
	return netpol.HostTable{}, errors.New("netpol check: reading nftables is Linux only")
}
