package proxy

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rampartsec/rampart/internal/safedir"
)

// Who may call an outbound listener. Whoever reaches one calls its upstream
// with this service's SVID (and has user tokens exchanged in its name): an
// outbound listener is this service's identity, lent to its caller. So it
// listens on loopback, or on a unix socket whose callers are checked by
// uid; anything wider is an open relay and needs saying so.

// unixPrefix marks an outbound listening on a unix socket:
// "unix:/run/rampart/orders/payments.sock=...".
const unixPrefix = "unix:"

// OutboundAccess says who may call the outbound listeners.
type OutboundAccess struct {
	// AllowRemote lets a TCP outbound listen beyond loopback
	// (--outbound-allow-remote); it is refused otherwise.
	AllowRemote bool
	// UIDs may connect to a unix-socket outbound (SO_PEERCRED); none
	// given: the proxy's own uid only.
	UIDs []int
	// SocketGroup, when other uids are allowed, is given the socket
	// (mode 0660) so they can reach it; -1: the proxy's own group.
	SocketGroup int
}

// checkOutboundListen refuses a listen address that would lend this
// service's identity beyond the host's loopback, unless allowed.
func checkOutboundListen(listen string, acc OutboundAccess) error {
	if path, ok := strings.CutPrefix(listen, unixPrefix); ok {
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			return fmt.Errorf("proxy: outbound %s: the socket path must be absolute and clean", listen)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("proxy: outbound %s: %w", listen, err)
	}
	if acc.AllowRemote || host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	what := "a host name other than localhost may resolve to any interface"
	switch {
	case host == "":
		what = "no host listens on every interface"
	case err == nil:
		what = host + " is not a loopback address"
	}
	return fmt.Errorf("proxy: outbound %s refused: %s, and whoever reaches an outbound listener calls its upstream as this service "+
		"(an open relay); listen on 127.0.0.1, [::1] or unix:/path, or give --outbound-allow-remote if the network around it is trusted", listen, what)
}

// listenOutbound opens an outbound's listener: TCP on loopback (or beyond
// with AllowRemote, warned about), or a unix socket checked by uid.
func listenOutbound(out Outbound, acc OutboundAccess, m *metrics, log *slog.Logger) (net.Listener, error) {
	if path, ok := strings.CutPrefix(out.Listen, unixPrefix); ok {
		return listenUnixOutbound(path, acc, m, log)
	}
	ln, err := net.Listen("tcp", out.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: outbound listen %s: %w", out.Listen, err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
		if !acc.AllowRemote {
			ln.Close()
			return nil, fmt.Errorf("proxy: outbound %s refused: it listens on %s, not loopback", out.Listen, a)
		}
		log.Warn("outbound listens beyond loopback (--outbound-allow-remote): whoever reaches it calls the upstream as this service",
			"listen", ln.Addr().String(), "upstream", out.ID.String())
	}
	return ln, nil
}

// listenUnixOutbound listens on a unix socket at path, in a directory the
// proxy owns and no one else may write to (so no one can replace the
// socket), mode 0600 (0660 with its group when other uids are allowed);
// the uid of every caller is checked on accept (SO_PEERCRED), root's too.
func listenUnixOutbound(path string, acc OutboundAccess, m *metrics, log *slog.Logger) (net.Listener, error) {
	self := os.Geteuid()
	uids := acc.UIDs
	if len(uids) == 0 {
		uids = []int{self}
	}
	others := slices.ContainsFunc(uids, func(u int) bool { return u != self })
	dirMode := fs.FileMode(0o700)
	if others {
		dirMode = 0o711 // others may reach the socket, not list or write
	}
	// Owned by the proxy, writable by no one else, and so is every
	// directory above (or it is sticky, as /tmp): no one can replace the
	// socket, nor move its directory away (safedir). The socket goes
	// where the check looked, symbolic links resolved.
	dir, err := safedir.Make(filepath.Dir(path), "the outbound socket directory", self, dirMode)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	label, path := path, filepath.Join(dir, filepath.Base(path))
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("proxy: outbound socket %s: exists and is not a socket", path)
		}
		os.Remove(path) // left by an earlier run
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("proxy: outbound listen %s: %w", path, err)
	}
	mode := fs.FileMode(0o600)
	if others {
		mode = 0o660
		if acc.SocketGroup >= 0 {
			if err := os.Chown(path, -1, acc.SocketGroup); err != nil {
				ln.Close()
				return nil, fmt.Errorf("proxy: outbound socket %s: group %d: %w", path, acc.SocketGroup, err)
			}
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("proxy: outbound socket %s: %w", path, err)
	}
	allowed := map[int]bool{}
	for _, u := range uids {
		allowed[u] = true
	}
	refused := m.outboundRefused.WithLabelValues(unixPrefix + label)
	return &peerCredListener{UnixListener: ln, allowed: allowed, refuse: func(uid int, err error) {
		refused.Inc()
		if err != nil {
			log.Warn("outbound socket: caller refused: its uid could not be read", "socket", path, "err", err)
			return
		}
		log.Warn("outbound socket: caller refused: uid not allowed (--outbound-allow-uid)", "socket", path, "uid", uid)
	}}, nil
}

// peerCredListener accepts only callers whose uid is allowed.
type peerCredListener struct {
	*net.UnixListener
	allowed map[int]bool
	refuse  func(uid int, err error)
}

func (l *peerCredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && l.allowed[uid] {
			return c, nil
		}
		l.refuse(uid, err)
		c.Close()
	}
}

// ParseUIDs parses uids for OutboundAccess.UIDs (numbers or user names).
func ParseUIDs(names []string) ([]int, error) {
	var uids []int
	for _, n := range names {
		u, err := strconv.Atoi(n)
		if err != nil || u < 0 {
			uid, lerr := lookupUID(n)
			if lerr != nil {
				return nil, fmt.Errorf("proxy: outbound-allow-uid %q: not a uid or a known user", n)
			}
			u = uid
		}
		uids = append(uids, u)
	}
	return uids, nil
}
