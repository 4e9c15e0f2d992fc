package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/upstream"
)

// upConn is an upstream HTTP/1.1 connection with its buffers.
type upConn struct {
	p        *pool // nil: not from a pool
	c        net.Conn
	rd       readDeadline
	lr       *io.LimitedReader // bounds a response head; unlimited otherwise
	br       *bufio.Reader
	bw       *bufio.Writer
	used     bool      // has carried a request, so its peer may have closed it since
	lastUsed time.Time // when its last response head arrived or it went idle
}

func newUpConn(p *pool, c net.Conn) *upConn {
	lr := &io.LimitedReader{R: c, N: 1<<63 - 1}
	return &upConn{p: p, c: c, rd: readDeadline{c: c}, lr: lr, br: bufio.NewReaderSize(lr, 4<<10), bw: bufio.NewWriterSize(c, 4<<10), lastUsed: time.Now()}
}

// close closes the connection; its place in the pool goes to a request
// waiting for one.
func (u *upConn) close() {
	if p := u.p; p != nil {
		p.mu.Lock()
		if _, ok := p.open[u]; ok {
			delete(p.open, u)
			p.dialLocked()
		}
		p.mu.Unlock()
	}
	u.c.Close()
}

// pool keeps the connections to one upstream, within upstream.Limits (see
// that package for why each bound exists). A client connection takes one
// for a request and gives it back (release) as soon as it waits for its
// next request, so idle clients hold no upstream connections; a request
// that finds one idle costs a pop and a push under one mutex.
//
// A request that finds none idle joins a queue and is served, first in
// first out, by whichever comes first: a connection another request gives
// back, or one the pool opens for the queue. New connections are opened by
// the pool, not by the request: at most Limits.MaxDialing at once, at most
// Limits.DialRate a second, and only while the queue holds more requests
// than are being dialled for and fewer than Limits.MaxConns are open. A
// request waits at most Limits.QueueTimeout, and at most
// Limits.MaxPending wait; the others are refused with an
// upstream.OverloadError (503).
//
// Once the queue has stood for Limits.QueueInterval (requests waiting all
// along, never emptied) with Limits.MaxConns connections open or being
// opened, a request joining it waits at most Limits.QueueTarget instead
// (controlled delay; decision 0057): a burst still queues for up to
// QueueTimeout, and so does a queue waiting for a pool below its cap to
// open connections (a cold pool, the dial rate), but overload is refused
// at once rather than held for a second. (A connection being replaced at
// the cap does not lift the rule: that would let a queue of long waits
// build at every reconnection.) Held, such a request is mostly answered
// after its caller gave up, and meanwhile holds the caller's connection,
// so the callers' own queues grow and time out (the overload curve with
// --overload-app in docs/benchmarks.md: at twice the app's capacity,
// 56-59% of it served without the rule, with thousands of timeouts; with
// it, no timeouts and 90-101% in a settled run).
type pool struct {
	dial func(context.Context) (net.Conn, error)
	l    upstream.Limits
	m    *poolMetrics // nil: none
	now  func() time.Time
	// newTimer starts the queue deadline of one request (tests replace it).
	newTimer func(time.Duration) (<-chan time.Time, func() bool)
	ctx      context.Context // ends the dials under way at closeAll
	stop     context.CancelFunc

	mu      sync.Mutex
	idle    []*upConn // most recently used last
	open    map[*upConn]struct{}
	dialing int
	queue   []*waiter // first in first out; entries given up are skipped
	waiting int       // requests in queue that have not given up
	// since is when a request last joined the queue empty: while
	// requests wait, the queue has stood since then.
	since  time.Time
	bucket *upstream.Bucket
	retry  *time.Timer // a dial put off by the rate bound
	done   bool
}

// waiter is a request waiting for a connection.
type waiter struct {
	ch   chan waitResult // buffered: the pool never blocks handing over
	gone bool            // under pool.mu: it gave up
}

type waitResult struct {
	u   *upConn
	err error
}

func newPool(dial func(context.Context) (net.Conn, error), l upstream.Limits, m *poolMetrics) *pool {
	l = l.WithDefaults()
	ctx, stop := context.WithCancel(context.Background())
	p := &pool{dial: dial, l: l, m: m, now: time.Now, ctx: ctx, stop: stop, open: map[*upConn]struct{}{},
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		}}
	p.bucket = upstream.NewBucket(l.DialRate, l.MaxDialing, p.now())
	if m != nil {
		m.watch(p)
	}
	return p
}

// get returns a connection: an idle one that is still open, or the next
// one given back or opened, within the queue's bounds. waited says whether
// the request had to wait for it.
func (p *pool) get(ctx context.Context) (u *upConn, waited bool, err error) {
	for {
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			return nil, false, errPoolClosed
		}
		n := len(p.idle)
		if n == 0 {
			break // still locked
		}
		u := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		// A connection idle for a moment is taken as it is (its peer
		// closing it just then is caught on use, and an idempotent request
		// retried); one idle longer is looked at first.
		if age := time.Since(u.lastUsed); age < p.l.IdleTimeout && (age < staleAfter || connAlive(u.c)) {
			return u, false, nil
		}
		u.close()
	}
	if p.waiting >= p.l.MaxPending {
		p.mu.Unlock()
		p.m.overload(upstream.ReasonQueueFull)
		return nil, true, &upstream.OverloadError{Reason: upstream.ReasonQueueFull, MaxConns: p.l.MaxConns}
	}
	start := p.now()
	timeout := p.l.QueueTimeout
	if p.waiting == 0 {
		p.since = start
	} else if len(p.open)+p.dialing >= p.l.MaxConns && start.Sub(p.since) >= p.l.QueueInterval {
		timeout = p.l.QueueTarget // a standing queue with every connection busy: overload
	}
	w := &waiter{ch: make(chan waitResult, 1)}
	p.queue = append(p.queue, w)
	p.waiting++
	p.dialLocked()
	p.mu.Unlock()

	deadline, stop := p.newTimer(timeout)
	select {
	case r := <-w.ch:
		stop()
		return r.u, true, r.err
	case <-deadline:
	case <-ctx.Done():
	}
	p.mu.Lock()
	select {
	case r := <-w.ch: // handed over as the wait ended
		p.mu.Unlock()
		return r.u, true, r.err
	default:
	}
	w.gone = true
	p.waiting--
	p.compactLocked()
	p.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, true, err
	}
	p.m.overload(upstream.ReasonQueueTimeout)
	return nil, true, &upstream.OverloadError{Reason: upstream.ReasonQueueTimeout, MaxConns: p.l.MaxConns, Waited: p.now().Sub(start)}
}

var errPoolClosed = errors.New("the proxy is shutting down")

// handLocked gives u (or err) to the first request still waiting; false
// if none is.
func (p *pool) handLocked(r waitResult) bool {
	for len(p.queue) > 0 {
		w := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		if w.gone {
			continue
		}
		p.waiting--
		w.ch <- r
		return true
	}
	return false
}

// compactLocked drops the requests that gave up from the queue once they
// are most of it, so a queue nobody serves (a stalled upstream) does not
// grow with them.
func (p *pool) compactLocked() {
	if len(p.queue) <= 2*p.waiting+16 {
		return
	}
	live := p.queue[:0]
	for _, w := range p.queue {
		if !w.gone {
			live = append(live, w)
		}
	}
	clear(p.queue[len(live):])
	p.queue = live
}

// dialLocked opens connections while the queue (and the warm minimum)
// needs more than are being opened, within the caps and the rate.
func (p *pool) dialLocked() {
	if p.done {
		return
	}
	need := p.waiting + max(0, p.l.MinIdle-len(p.idle))
	for p.dialing < need && p.dialing < p.l.MaxDialing && len(p.open)+p.dialing < p.l.MaxConns {
		ok, wait := p.bucket.Take(p.now())
		if !ok {
			if p.retry == nil {
				p.retry = time.AfterFunc(wait, func() {
					p.mu.Lock()
					p.retry = nil
					p.dialLocked()
					p.mu.Unlock()
				})
			}
			return
		}
		p.dialing++
		go p.dialOne()
	}
}

// dialOne opens a connection for the queue (or the warm minimum).
func (p *pool) dialOne() {
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout+handshakeTimeout)
	c, err := p.dial(ctx)
	cancel()
	p.m.dialed(err)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing--
	if err != nil {
		// With no connection open that could come back and no other dial
		// under way, the upstream is unreachable: the queue learns why now
		// rather than at its timeout (as Envoy purges its pending requests).
		if len(p.open) == 0 && p.dialing == 0 {
			for p.handLocked(waitResult{err: err}) {
			}
		}
		return
	}
	if p.done {
		c.Close()
		return
	}
	u := newUpConn(p, c)
	p.open[u] = struct{}{}
	if !p.handLocked(waitResult{u: u}) {
		// The request it was for gave up or got another: kept, warm.
		p.idle = append(p.idle, u)
	}
	p.dialLocked()
}

// release gives back a connection that finished its last response cleanly:
// to the first request waiting, else to the idle stack.
func (p *pool) release(u *upConn) {
	u.lastUsed = time.Now()
	p.mu.Lock()
	if p.done || u.br.Buffered() > 0 {
		p.mu.Unlock()
		u.close()
		return
	}
	if p.handLocked(waitResult{u: u}) {
		p.mu.Unlock()
		return
	}
	if len(p.idle) >= p.l.MaxIdle {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

// reap closes connections idle too long, and opens warm ones up to
// Limits.MinIdle, every interval until ctx ends, then closes all of them,
// in use or not (closeAll).
func (p *pool) reap(ctx context.Context, interval time.Duration) {
	p.mu.Lock()
	p.dialLocked() // warm from the start
	p.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.closeAll()
			return
		case <-t.C:
		}
		p.mu.Lock()
		keep := p.idle[:0]
		var stale []*upConn
		for _, u := range p.idle {
			if time.Since(u.lastUsed) >= p.l.IdleTimeout {
				stale = append(stale, u)
			} else {
				keep = append(keep, u)
			}
		}
		clear(p.idle[len(keep):])
		p.idle = keep
		p.mu.Unlock()
		for _, u := range stale {
			u.close() // which opens a replacement if below MinIdle
		}
		p.mu.Lock()
		p.dialLocked()
		p.mu.Unlock()
	}
}

// closeAll closes every connection the pool opened, idle or in use: a
// request still waiting on its upstream fails at once, as do those in the
// queue and the dials under way. Later gets fail.
func (p *pool) closeAll() {
	p.mu.Lock()
	p.done = true
	p.idle = nil
	open := p.open
	p.open = map[*upConn]struct{}{}
	for p.handLocked(waitResult{err: errPoolClosed}) {
	}
	if p.retry != nil {
		p.retry.Stop()
		p.retry = nil
	}
	p.mu.Unlock()
	p.stop()
	for u := range open {
		u.c.Close()
	}
}

// stats is the pool's state, for metrics and tests.
type poolStats struct{ open, idle, dialing, waiting int }

func (p *pool) stats() poolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return poolStats{open: len(p.open), idle: len(p.idle), dialing: p.dialing, waiting: p.waiting}
}
