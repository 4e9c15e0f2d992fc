//go:build !unix

package proxy

import "net"

// connAlive cannot look at the socket here: a connection the peer closed
// is found on use, and an idempotent request is retried (h1Conn.roundTrip).
func connAlive(net.Conn) bool { return true }

// peerGone cannot look at the socket here: a request whose client left is
// forwarded all the same.
func peerGone(net.Conn) bool { return false }
