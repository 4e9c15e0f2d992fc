package workload

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Caller is the process on the other end of a Workload API connection, as
// the kernel reports it.
type Caller struct {
	PID int32
	UID uint32
	GID uint32
}

// callerInfo carries a Caller through gRPC as AuthInfo.
type callerInfo struct {
	credentials.CommonAuthInfo
	Caller
}

func (callerInfo) AuthType() string { return "peercred" }

// peerCreds is a gRPC transport credential that reads SO_PEERCRED from the
// unix socket at the handshake. It adds no encryption: the socket is local.
type peerCreds struct{}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("workload: connection is %T, want a unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("workload: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("workload: %w", err)
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("workload: peer credentials: %w", credErr)
	}
	return conn, callerInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		Caller:         Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid},
	}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: peer credentials are server-side only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

func (peerCreds) OverrideServerName(string) error { return nil }

func callerFrom(ctx context.Context) (Caller, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, false
	}
	ci, ok := p.AuthInfo.(callerInfo)
	return ci.Caller, ok
}
