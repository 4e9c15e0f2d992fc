package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// poolIdleTimeout closes upstream connections idle this long: shorter than
// the inbound's idleTimeout, so the client side normally closes first.
const poolIdleTimeout = 90 * time.Second

// maxIdleUpstream bounds the idle connections kept per upstream.
const maxIdleUpstream = 256

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

func (u *upConn) close() {
	if u.p != nil {
		u.p.mu.Lock()
		delete(u.p.open, u)
		u.p.mu.Unlock()
	}
	u.c.Close()
}

// pool keeps idle upstream connections for reuse. A client connection takes
// one for a request and gives it back (release) as soon as it waits for its
// next request, so idle clients hold no app connections; a request costs a
// push and a pop under one mutex.
type pool struct {
	dial    func(context.Context) (net.Conn, error)
	maxIdle int

	mu   sync.Mutex
	idle []*upConn // most recently used last
	// open is every connection dialled and not yet closed, idle or in use,
	// so that closing the pool wakes a request still waiting on its
	// upstream when a drain has run out of time.
	open map[*upConn]struct{}
	done bool
}

func newPool(dial func(context.Context) (net.Conn, error), maxIdle int) *pool {
	return &pool{dial: dial, maxIdle: maxIdle, open: map[*upConn]struct{}{}}
}

// get returns an idle connection that is still open, or a new one.
func (p *pool) get(ctx context.Context) (*upConn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		u := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		// A connection idle for a moment is taken as it is (its peer
		// closing it just then is caught on use, and an idempotent request
		// retried); one idle longer is looked at first.
		if age := time.Since(u.lastUsed); age < poolIdleTimeout && (age < staleAfter || connAlive(u.c)) {
			return u, nil
		}
		u.close()
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout+handshakeTimeout)
	defer cancel()
	c, err := p.dial(dctx)
	if err != nil {
		return nil, err
	}
	lr := &io.LimitedReader{R: c, N: 1<<63 - 1}
	u := &upConn{p: p, c: c, rd: readDeadline{c: c}, lr: lr, br: bufio.NewReaderSize(lr, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		c.Close()
		return nil, errPoolClosed
	}
	p.open[u] = struct{}{}
	return u, nil
}

var errPoolClosed = errors.New("the proxy is shutting down")

// release gives back a connection that finished its last response cleanly.
func (p *pool) release(u *upConn) {
	u.lastUsed = time.Now()
	p.mu.Lock()
	if p.done || len(p.idle) >= p.maxIdle || u.br.Buffered() > 0 {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

// reap closes connections idle too long, every interval until ctx ends,
// then closes all of them, in use or not (closeAll).
func (p *pool) reap(ctx context.Context, interval time.Duration) {
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
			if time.Since(u.lastUsed) >= poolIdleTimeout {
				stale = append(stale, u)
			} else {
				keep = append(keep, u)
			}
		}
		clear(p.idle[len(keep):])
		p.idle = keep
		p.mu.Unlock()
		for _, u := range stale {
			u.close()
		}
	}
}

// closeAll closes every connection the pool opened, idle or in use: a
// request still waiting on its upstream fails at once. Later gets fail.
func (p *pool) closeAll() {
	p.mu.Lock()
	p.done = true
	p.idle = nil
	open := p.open
	p.open = map[*upConn]struct{}{}
	p.mu.Unlock()
	for u := range open {
		u.c.Close()
	}
}
