package authz

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/mtls"
)

// Conns tracks open connections by the identity of their peer, so that a
// quarantine ends what is already open, not only what opens next: an
// HTTP/2 connection and all its streams, a keep-alive HTTP/1.1
// connection, a WebSocket or other upgraded tunnel riding on one, a raw
// TCP connection. Ending means closing the socket under the TLS layer: no
// request on it is finished, nothing more is read from or written to it.
//
// A tracked connection learns its peer when the TLS handshake verifies it
// (Server) or is given it (Track with a known peer). The quarantine is
// checked after the peer is recorded, and Sweep records under the same
// lock, so a connection verified while a quarantine arrives is either
// swept or refused by its own check: never neither.
type Conns struct {
	q *mtls.Quarantine

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// NewConns tracks connections against q and sweeps at every change of q.
func NewConns(q *mtls.Quarantine) *Conns {
	c := &Conns{q: q, conns: map[*trackedConn]struct{}{}}
	q.OnChange(func() { c.Sweep() })
	return c
}

type trackedConn struct {
	net.Conn
	set  *Conns
	peer spiffeid.ID // under set.mu
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.set.mu.Lock()
		delete(t.set.conns, t)
		t.set.mu.Unlock()
	})
	return t.Conn.Close()
}

// CloseWrite half-closes, as the connection under it does.
func (t *trackedConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn reaches the socket (liveness peeks).
func (t *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := t.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// Track wraps c so that Sweep closes it once peer is blocked (peer zero:
// once SetPeer names it). Closing the wrapper stops tracking it. A
// connection whose peer is already blocked is closed at once: Track then
// returns nil.
func (s *Conns) Track(c net.Conn, peer spiffeid.ID) net.Conn {
	t := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	s.conns[t] = struct{}{}
	t.peer = peer
	s.mu.Unlock()
	if !peer.IsZero() && s.q.Blocks(peer) {
		t.Close()
		return nil
	}
	return t
}

// setPeer records the verified peer of t; false: it is blocked (the
// caller refuses the connection).
func (s *Conns) setPeer(t *trackedConn, peer spiffeid.ID) bool {
	s.mu.Lock()
	t.peer = peer
	s.mu.Unlock()
	return !s.q.Blocks(peer)
}

// Server starts the server side of TLS on raw with cfg, tracking the
// connection under the peer its handshake verifies (cfg's own
// VerifyConnection runs first); a nil Conns tracks nothing. The handshake itself is left to the
// caller (or to net/http).
func (s *Conns) Server(raw net.Conn, cfg *tls.Config) *tls.Conn {
	if s == nil {
		return tls.Server(raw, cfg)
	}
	t := &trackedConn{Conn: raw, set: s}
	s.mu.Lock()
	s.conns[t] = struct{}{}
	s.mu.Unlock()
	base := cfg
	c := cfg.Clone()
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cc := base.Clone()
		verify := base.VerifyConnection
		cc.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			id, err := mtls.PeerID(&cs)
			if err != nil {
				return err
			}
			if !s.setPeer(t, id) {
				return mtls.ErrQuarantined
			}
			return nil
		}
		return cc, nil
	}
	return tls.Server(t, c)
}

// Sweep closes every tracked connection whose peer is blocked now, and
// says how many.
func (s *Conns) Sweep() int {
	var victims []*trackedConn
	s.mu.Lock()
	for t := range s.conns {
		if !t.peer.IsZero() && s.q.Blocks(t.peer) {
			victims = append(victims, t)
		}
	}
	s.mu.Unlock()
	for _, t := range victims {
		t.Close()
	}
	return len(victims)
}

// Len is the number of connections tracked.
func (s *Conns) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Listener returns a TLS listener over inner whose connections are tracked
// (for a server that hands it to http.Server.Serve: net/http runs the
// handshake of a *tls.Conn itself).
func (s *Conns) Listener(inner net.Listener, cfg *tls.Config) net.Listener {
	return &trackingListener{Listener: inner, conns: s, cfg: cfg}
}

type trackingListener struct {
	net.Listener
	conns *Conns
	cfg   *tls.Config
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.conns.Server(c, l.cfg), nil
}
