package proxy

import (
	"bufio"
	"context"
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
	c        net.Conn
	rd       readDeadline
	lr       *io.LimitedReader // bounds a response head; unlimited otherwise
	br       *bufio.Reader
	bw       *bufio.Writer
	used     bool      // has carried a request, so its peer may have closed it since
	lastUsed time.Time // when its last response head arrived or it went idle
}

func (u *upConn) close() { u.c.Close() }

// pool keeps idle upstream connections for reuse. A client connection takes
// one for a request and gives it back (release) as soon as it waits for its
// next request, so idle clients hold no app connections; a request costs a
// push and a pop under one mutex.
type pool struct {
	dial    func(context.Context) (net.Conn, error)
	maxIdle int

	mu   sync.Mutex
	idle []*upConn // most recently used last
	done bool
}

func newPool(dial func(context.Context) (net.Conn, error), maxIdle int) *pool {
	return &pool{dial: dial, maxIdle: maxIdle}
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
	return &upConn{c: c, rd: readDeadline{c: c}, lr: lr, br: bufio.NewReaderSize(lr, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}, nil
}

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
// then closes all of them.
func (p *pool) reap(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.done = true
			idle := p.idle
			p.idle = nil
			p.mu.Unlock()
			for _, u := range idle {
				u.close()
			}
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
