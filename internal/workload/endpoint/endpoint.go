// Package endpoint says where the agent's Workload API socket lives and who
// may serve it, for the agent and for every client (proxy, SDK, CLI).
//
// # Where
//
// An agent running as root listens on /run/rampart/workload.sock; one
// running as another user on $XDG_RUNTIME_DIR/rampart/workload.sock. Both
// directories are reachable only through directories their owner controls,
// so no other local user can create them first or replace the socket.
// Clients default to the same place: a non-root client uses its own
// runtime directory's socket if it exists, the system one otherwise.
//
// # Who
//
// A path proves nothing about who answers on it. Clients therefore check
// the uid of the process serving the socket (SO_PEERCRED) on every
// connection against an expected uid: the one given explicitly
// (--agent-uid, RAMPART_AGENT_UID, sdk.WithAgentUID), or by default the
// owner of the socket's directory when that owner is root or the client
// itself. A directory owned by anyone else is refused without an explicit
// uid: trusting it would mean trusting whoever could create it.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// SystemDir is the socket directory of an agent running as root.
const SystemDir = "/run/rampart"

// SocketName is the socket's name in its directory.
const SocketName = "workload.sock"

// AgentPath returns where an agent running as uid listens by default:
// SystemDir for root, $XDG_RUNTIME_DIR/rampart for anyone else.
func AgentPath(uid int, getenv func(string) string) (string, error) {
	if uid == 0 {
		return filepath.Join(SystemDir, SocketName), nil
	}
	rt := getenv("XDG_RUNTIME_DIR")
	if rt == "" || !filepath.IsAbs(rt) {
		return "", errors.New("endpoint: an agent not running as root keeps its socket in $XDG_RUNTIME_DIR/rampart, but XDG_RUNTIME_DIR is not set; give --socket PATH in a directory only you can write")
	}
	return filepath.Join(rt, "rampart", SocketName), nil
}

// ClientPath returns the socket a client running as uid uses by default:
// its own agent's ($XDG_RUNTIME_DIR/rampart) when it is not root and that
// socket exists, else the system agent's.
func ClientPath(uid int, getenv func(string) string) string {
	if uid != 0 {
		if p, err := AgentPath(uid, getenv); err == nil {
			if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
				return p
			}
		}
	}
	return filepath.Join(SystemDir, SocketName)
}

// ParseAddr returns the socket path of a Workload API address: an absolute
// path, or a unix: URL (unix:///path, unix:/path) as in
// SPIFFE_ENDPOINT_SOCKET. Other schemes (tcp:) are refused: the uid of a
// TCP peer cannot be checked.
func ParseAddr(addr string) (string, error) {
	p := addr
	if rest, ok := strings.CutPrefix(addr, "unix://"); ok {
		p = rest
	} else if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		p = rest
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint: Workload API address %q: want an absolute unix socket path (only a unix socket's server can be checked)", addr)
	}
	return filepath.Clean(p), nil
}

// ParseUID parses an expected agent uid given as text (a flag, an
// environment variable); empty means "the default".
func ParseUID(s string) (*uint32, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("endpoint: agent uid %q: want a decimal uid", s)
	}
	u := uint32(n)
	return &u, nil
}

// ErrForeignDir is returned (wrapped) by ExpectedUID when the socket's
// directory belongs to neither root nor the caller.
var ErrForeignDir = errors.New("the Workload API socket's directory belongs to another user")

// ExpectedUID returns the uid that must serve the socket at path: want
// when given, else the owner of the socket's directory if that is root or
// self. Any other owner is an error (ErrForeignDir) that says how to
// proceed.
func ExpectedUID(path string, want *uint32, self int) (uint32, error) {
	if want != nil {
		return *want, nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("endpoint: no Workload API socket at %s (%s does not exist): is the agent running, and is this its --socket?", path, dir)
	}
	if err != nil {
		return 0, fmt.Errorf("endpoint: Workload API socket %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("endpoint: cannot read the owner of %s", dir)
	}
	if st.Uid != 0 && int64(st.Uid) != int64(self) {
		return 0, fmt.Errorf("endpoint: %w: %s is owned by uid %d, neither root nor you (uid %d): "+
			"whoever created it may serve a fake Workload API there; if uid %d really runs the agent, say so with --agent-uid %d (RAMPART_AGENT_UID, sdk.WithAgentUID)",
			ErrForeignDir, dir, st.Uid, self, st.Uid, st.Uid)
	}
	return st.Uid, nil
}

// ErrWrongServer is returned (wrapped) when the socket is served by a uid
// other than the expected one.
var ErrWrongServer = errors.New("the Workload API socket is not served by the agent's uid")

// Dial connects to the socket at path and checks, with SO_PEERCRED, that
// the process serving it runs as uid.
func Dial(ctx context.Context, path string, uid uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	if err := checkPeer(c, path, uid); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func checkPeer(c net.Conn, path string, uid uint32) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("endpoint: %s: not a unix socket", path)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("endpoint: peer credentials of %s: %w", path, credErr)
	}
	if cred.Uid != uid {
		return fmt.Errorf("endpoint: %w: %s is served by uid %d (pid %d), not by the agent's uid %d; refusing it: another local user may have put a fake Workload API there",
			ErrWrongServer, path, cred.Uid, cred.Pid, uid)
	}
	return nil
}

// ClientOptions returns go-spiffe client options that reach the socket at
// addr only through Dial: every connection, reconnections included, is
// checked against the expected uid (want, or ExpectedUID's default worked
// out again at each connection). It first connects once, so that a socket
// served or controlled by another user is reported at once and plainly,
// rather than as a timeout after go-spiffe's retries; an agent that is not
// listening yet is waited for, as go-spiffe always did.
func ClientOptions(ctx context.Context, addr string, want *uint32) ([]workloadapi.ClientOption, error) {
	path, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		uid, err := ExpectedUID(path, want, os.Geteuid())
		if err != nil {
			return nil, err
		}
		return Dial(ctx, path, uid)
	}
	if c, err := dial(ctx, ""); err == nil {
		c.Close()
	} else if errors.Is(err, ErrWrongServer) || errors.Is(err, ErrForeignDir) {
		return nil, err
	}
	return []workloadapi.ClientOption{
		workloadapi.WithAddr("unix://" + path),
		workloadapi.WithDialOptions(grpc.WithContextDialer(dial)),
	}, nil
}
