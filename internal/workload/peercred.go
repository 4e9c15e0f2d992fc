package workload

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Caller is the process on the other end of a Workload API connection, as
// the kernel reported it at connect (SO_PEERCRED).
type Caller struct {
	PID int32
	UID uint32
	GID uint32
}

// callerInfo carries the pinned caller through gRPC as AuthInfo.
type callerInfo struct {
	credentials.CommonAuthInfo
	proc *process
}

func (callerInfo) AuthType() string { return "peercred" }

// peerCreds is a gRPC transport credential that hands the caller pinned at
// accept (pinListener) to the handlers. It adds no encryption: the socket
// is local.
type peerCreds struct{}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, ok := conn.(*pinnedConn)
	if !ok {
		return nil, nil, fmt.Errorf("workload: connection is %T, want a unix socket", conn)
	}
	return pc, callerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, proc: pc.proc}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: peer credentials are server-side only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

func (peerCreds) OverrideServerName(string) error { return nil }

func callerFrom(ctx context.Context) (*process, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	ci, ok := p.AuthInfo.(callerInfo)
	return ci.proc, ok && ci.proc != nil
}
