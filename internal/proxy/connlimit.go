package proxy

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/upstream"
)

// Every connection a listener accepts is a file descriptor until it
// closes, and the process has RLIMIT_NOFILE of them for everything: the
// audit spool's files, the metrics listener, the Workload API, the
// connections to the app and to each peer. A caller who opens TCP
// connections and never finishes the handshake holds one each for up to
// the handshake timeout; ~21,000 of them took every descriptor the red
// team's proxy had (new mTLS connections timed out, /metrics went
// unanswered, the spool failed with "too many open files"). So each
// listener holds at most so many connections at once, closing more as
// soon as they are accepted, and of those at most so many still in their
// TLS handshake: beyond that the oldest unfinished handshake is cut, so a
// flood of stalled handshakes cannot shut out a caller that completes its
// own in a round trip.

// ConnLimits bound the connections of the proxy's listeners. Zero fields
// take DefaultConnLimits's.
type ConnLimits struct {
	// InboundConns is how many connections the inbound listener holds
	// at once, handshakes included (--inbound-max-conns).
	InboundConns int
	// InboundHandshakes is how many of them may be in their TLS
	// handshake at once; a new one beyond it cuts the oldest
	// (--inbound-max-handshakes).
	InboundHandshakes int
	// OutboundConns is how many connections each outbound listener
	// holds at once (--outbound-max-conns).
	OutboundConns int
}

// descriptor reserves: what the rest of the proxy needs besides its
// listeners' connections.
const (
	// reservedFDs: the spool's files, the metrics listener and its
	// scrapes, the Workload API, the server (policy, audit shipping),
	// logs, the runtime.
	reservedFDs = 256
	// minListenerConns is the least any listener is given, whatever the
	// limit says.
	minListenerConns = 16
	// maxDefaultHandshakes bounds the default handshake cap: about a
	// second of full handshakes on a small machine.
	maxDefaultHandshakes = 1024
)

// DefaultConnLimits derives the listeners' bounds from the open-file limit
// nofile, so that they can never take the descriptors the rest of the
// proxy needs: reservedFDs, plus one per connection the upstream pools may
// open (up.MaxConns to the app, and to each of outbounds' peers). What is
// left goes to the inbound listener, or half of it when there are
// outbound listeners, which share the other half; a quarter of it may be
// in handshakes (at most maxDefaultHandshakes). With a limit too low for
// that, the listeners still get a quarter of it (lowFDs says so).
func DefaultConnLimits(nofile uint64, up upstream.Limits, inbound bool, outbounds int) (l ConnLimits, lowFDs bool) {
	n := int(min(nofile, 1<<24))
	reserve := reservedFDs + up.MaxConns*(1+outbounds)
	budget := n - reserve
	if budget < n/4 {
		budget, lowFDs = n/4, true
	}
	switch {
	case outbounds == 0:
		l.InboundConns = budget
	case !inbound:
		l.OutboundConns = budget / outbounds
	default:
		l.InboundConns = budget / 2
		l.OutboundConns = budget / 2 / outbounds
	}
	l.InboundConns = max(l.InboundConns, minListenerConns)
	l.OutboundConns = max(l.OutboundConns, minListenerConns)
	l.InboundHandshakes = defaultHandshakes(l.InboundConns)
	return l, lowFDs
}

// defaultHandshakes is a quarter of a listener's connections, within
// [minListenerConns/2, maxDefaultHandshakes] and never above conns: the
// rest stays for callers that finished theirs.
func defaultHandshakes(conns int) int {
	return min(max(conns/4, minListenerConns/2), maxDefaultHandshakes, conns)
}

// Validate says which bound is unusable.
func (l ConnLimits) Validate() error {
	switch {
	case l.InboundConns < 0 || l.InboundHandshakes < 0 || l.OutboundConns < 0:
		return errors.New("proxy: connection limits must not be negative")
	case l.InboundConns > 0 && l.InboundHandshakes > l.InboundConns:
		return fmt.Errorf("proxy: --inbound-max-handshakes %d is above --inbound-max-conns %d: handshakes are connections too", l.InboundHandshakes, l.InboundConns)
	}
	return nil
}

// withDefaults fills the zero fields from the process's open-file limit.
func (l ConnLimits) withDefaults(up upstream.Limits, inbound bool, outbounds int) (ConnLimits, uint64, bool) {
	var rl unix.Rlimit
	nofile := uint64(1024) // Linux's usual soft limit, if it cannot be read
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		nofile = rl.Cur
	}
	d, low := DefaultConnLimits(nofile, up, inbound, outbounds)
	if l.InboundConns == 0 {
		l.InboundConns = d.InboundConns
	}
	if l.InboundHandshakes == 0 {
		l.InboundHandshakes = defaultHandshakes(l.InboundConns)
	}
	if l.OutboundConns == 0 {
		l.OutboundConns = d.OutboundConns
	}
	return l, nofile, low
}

// stalledHandshake: while overloaded, a handshake older than this gives
// way to a new connection (a caller on a far network completes one in a
// few round trips; one that has not by now is stalled or starved).
const stalledHandshake = time.Second

func (l *connLimit) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// connLimit bounds one listener's connections.
type connLimit struct {
	maxConns, maxHandshakes int // maxHandshakes 0: no TLS here

	mu         sync.Mutex
	open       int
	handshakes list.List // of *limitedConn in their handshake, oldest first

	// overloaded, if set, says the proxy is shedding load: a connection
	// is then closed as accepted while overloadHandshakes are under way,
	// so the CPU goes to the requests of connections already open.
	overloaded         func() bool
	overloadHandshakes int
	now                func() time.Time // default time.Now

	refused, evicted, shedConn prometheus.Counter
	openG, hsG                 prometheus.Gauge
}

func newConnLimit(maxConns, maxHandshakes int, m *metrics, direction, listener string) *connLimit {
	return &connLimit{maxConns: maxConns, maxHandshakes: maxHandshakes,
		refused:  m.connsRefused.WithLabelValues(direction, listener, "max_conns"),
		evicted:  m.connsRefused.WithLabelValues(direction, listener, "handshake_evicted"),
		shedConn: m.connsRefused.WithLabelValues(direction, listener, "overload"),
		openG:    m.connsOpen.WithLabelValues(direction, listener, "open"),
		hsG:      m.connsOpen.WithLabelValues(direction, listener, "handshake")}
}

// listener returns ln bounded: connections beyond the limit are closed as
// they are accepted, and counted.
func (l *connLimit) listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, lim: l}
}

type limitedListener struct {
	net.Listener
	lim *connLimit
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc, victim := ln.lim.admit(c)
		if victim != nil {
			victim.Close() // its handshake fails at once
		}
		if lc != nil {
			return lc, nil
		}
		c.Close()
	}
}

// admit counts c in, or refuses it (nil) when the listener is full. On a
// TLS listener c is in its handshake from now until endHandshake; at the
// handshake bound the oldest one is cut to make room (victim, for the
// caller to close): a stalled one has had its chance, and a caller that
// completes in a round trip gets in even while a flood keeps every place
// taken. Deciding here, in the accept loop, keeps the bound exact.
func (l *connLimit) admit(c net.Conn) (lc, victim *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.maxConns {
		l.refused.Inc()
		return nil, nil
	}
	var now time.Time
	if l.maxHandshakes > 0 && l.overloaded != nil && l.handshakes.Len() >= l.overloadHandshakes && l.overloaded() {
		// Stalled handshakes must not shut new callers out for the
		// handshake timeout: the oldest, past stalledHandshake, gives
		// way; otherwise the new connection does, before any crypto.
		now = l.clock()
		oldest := l.handshakes.Front().Value.(*limitedConn)
		if now.Sub(oldest.since) < stalledHandshake {
			l.shedConn.Inc()
			return nil, nil
		}
		victim = l.handshakes.Remove(l.handshakes.Front()).(*limitedConn)
		victim.hs = nil
		l.evicted.Inc()
	}
	lc = &limitedConn{Conn: c, lim: l}
	if l.maxHandshakes > 0 {
		if now.IsZero() && l.overloaded != nil {
			now = l.clock()
		}
		lc.since = now
		if victim == nil && l.handshakes.Len() >= l.maxHandshakes {
			victim = l.handshakes.Remove(l.handshakes.Front()).(*limitedConn)
			victim.hs = nil
			l.evicted.Inc()
		}
		lc.hs = l.handshakes.PushBack(lc)
		l.hsG.Set(float64(l.handshakes.Len()))
	}
	l.open++
	l.openG.Set(float64(l.open))
	return lc, victim
}

func (l *connLimit) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.hs != nil {
		l.handshakes.Remove(c.hs)
		c.hs = nil
		l.hsG.Set(float64(l.handshakes.Len()))
	}
	l.open--
	l.openG.Set(float64(l.open))
}

// endHandshake takes c out of the handshakes, done or failed (a
// connection not accepted through a limit was never in).
func endHandshake(c net.Conn) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l := lc.lim
	l.mu.Lock()
	if lc.hs != nil {
		l.handshakes.Remove(lc.hs)
		lc.hs = nil
		l.hsG.Set(float64(l.handshakes.Len()))
	}
	l.mu.Unlock()
}

// limitedConn is a connection counted against its listener's limit until
// it is closed. It passes on what the proxy asks of the connection under
// it (half-close, the raw descriptor for liveness checks, splicing).
type limitedConn struct {
	net.Conn
	lim  *connLimit
	once sync.Once
	hs   *list.Element // in lim.handshakes; guarded by lim.mu
	// since: when it was accepted (only kept where overload bounds the
	// handshakes).
	since time.Time
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c) })
	return err
}

func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *limitedConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.Conn})
}

var (
	_ syscall.Conn  = (*limitedConn)(nil)
	_ io.ReaderFrom = (*limitedConn)(nil)
)
