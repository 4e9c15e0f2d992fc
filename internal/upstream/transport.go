package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// Transport returns a net/http Transport that keeps to l (with defaults
// filled in): dial (a TLS dialer for https, a plain one for http) runs
// through a Gate, at most MaxConns connections are open, idle ones are kept
// as l says. The caller sets protocols and timeouts; wrap it with Bound for
// the queue.
func Transport(l Limits, tlsDial bool, dial DialFunc, onDial func(error)) *http.Transport {
	l = l.WithDefaults()
	t := &http.Transport{
		MaxConnsPerHost:     l.MaxConns,
		MaxIdleConns:        l.MaxIdle,
		MaxIdleConnsPerHost: l.MaxIdle,
		IdleConnTimeout:     l.IdleTimeout,
	}
	gated := NewGate(l, nil, onDial).Dial(dial)
	if tlsDial {
		// The dialer returns a *tls.Conn whose handshake is done: the
		// Transport reads its ALPN result to choose HTTP/2.
		t.DialTLSContext = gated
	} else {
		t.DialContext = gated
	}
	return t
}

// Bound returns rt with a queue in front of its connections: a request
// waits for one (from the Transport's pool, which MaxConnsPerHost bounds)
// at most l.QueueTimeout, and at most l.MaxPending requests wait; others
// get an OverloadError at once, without anything sent. onOverload, if set,
// is told of each refusal and its reason; pending, if set, tracks the
// requests waiting.
func Bound(rt http.RoundTripper, l Limits, onOverload func(reason string), pending *atomic.Int64) http.RoundTripper {
	l = l.WithDefaults()
	if pending == nil {
		pending = new(atomic.Int64)
	}
	return &bounded{rt: rt, l: l, onOverload: onOverload, pending: pending}
}

type bounded struct {
	rt         http.RoundTripper
	l          Limits
	onOverload func(string)
	pending    *atomic.Int64
}

var errQueueTimeout = errors.New("upstream: queue timeout")

// A request's place in the queue.
const (
	waiting  int32 = iota
	served         // it got a connection
	timedOut       // QueueTimeout passed first; its context is cancelled
)

func (b *bounded) refuse(reason string, waited time.Duration) error {
	if b.onOverload != nil {
		b.onOverload(reason)
	}
	return &OverloadError{Reason: reason, MaxConns: b.l.MaxConns, Waited: waited}
}

func (b *bounded) RoundTrip(req *http.Request) (*http.Response, error) {
	if b.pending.Add(1) > int64(b.l.MaxPending) {
		b.pending.Add(-1)
		return nil, b.refuse(ReasonQueueFull, 0)
	}
	start := time.Now()
	var state atomic.Int32
	leave := func(to int32) bool {
		if state.CompareAndSwap(waiting, to) {
			b.pending.Add(-1)
			return true
		}
		return false
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(b.l.QueueTimeout, func() {
		if leave(timedOut) {
			cancel(errQueueTimeout)
		}
	})
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { leave(served) }}
	resp, err := b.rt.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	timer.Stop()
	leave(served) // failed before any connection (a dial error)
	if err != nil {
		cancel(nil)
		if state.Load() == timedOut {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, b.refuse(ReasonQueueTimeout, time.Since(start))
		}
		return resp, err
	}
	// The context lives as long as the body is read.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// cancelOnClose ends a request's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Write keeps a 101 answer's body (the tunnel, an io.ReadWriteCloser)
// writable through the wrapper: ReverseProxy needs it for upgrades.
func (c *cancelOnClose) Write(p []byte) (int, error) {
	if w, ok := c.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("upstream: response body is not writable")
}
