//go:build !unix

package proxy

import "net"

// connAlive cannot look at the socket here: a connection the peer closed
// is found on use, and an idempotent request is retried (h1Conn.roundTrip).
func connAlive(net.Conn) bool { return true }
