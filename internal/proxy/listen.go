package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// h2Preface is what an HTTP/2 client sends first (RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// serveInbound accepts mTLS connections. After the handshake, connections
// that negotiated HTTP/1.1 are served by the forwarder (h1 non-nil) and
// HTTP/2 ones by net/http, through h2.
func serveInbound(ctx context.Context, ln net.Listener, cfg *tls.Config, tracked *authz.Conns, h1 *h1Forwarder, h2 *connListener, m *metrics) {
	acceptLoop(ln, func(c net.Conn) {
		if h1 != nil && !h1.conns.addPending(c) {
			c.Close() // draining
			return
		}
		tc, err := handshake(ctx, c, cfg, tracked, m)
		if h1 != nil {
			h1.conns.removePending(c)
		}
		if err != nil {
			c.Close()
			return
		}
		cs := tc.ConnectionState()
		if h1 == nil || cs.NegotiatedProtocol == "h2" {
			h2.deliver(tc)
			return
		}
		defer tc.Close()
		h1.serve(ctx, tc, nil, &cs)
	})
}

// serveOutbound accepts the app's plain connections: HTTP/1.1 is served by
// the forwarder, h2c (gRPC) by net/http through h2.
func serveOutbound(ctx context.Context, ln net.Listener, h1 *h1Forwarder, h2 *connListener) {
	acceptLoop(ln, func(c net.Conn) {
		if !h1.conns.addPending(c) {
			c.Close() // draining
			return
		}
		br := bufio.NewReaderSize(c, 4<<10)
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		start, err := br.Peek(4)
		h1.conns.removePending(c)
		if err != nil {
			c.Close()
			return
		}
		if string(start) == h2Preface[:4] {
			if p, err := br.Peek(len(h2Preface)); err == nil && string(p) == h2Preface {
				c.SetReadDeadline(time.Time{})
				h2.deliver(&bufferedConn{Conn: c, r: br})
				return
			}
		}
		defer c.Close()
		h1.serve(ctx, c, br, nil)
	})
}

// acceptLoop runs handle in a goroutine for every accepted connection until
// the listener is closed, then waits for the handlers to return. Errors that
// pass (out of file descriptors or memory) are waited out with a growing pause, as net/http's server does,
// instead of ending the listener.
func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if !transientAcceptError(err) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		wg.Go(func() { handle(c) })
	}
}

func transientAcceptError(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || (errors.As(err, &ne) && ne.Timeout())
}

// handshake runs the server side of the mTLS handshake with a timeout and
// counts refusals the verifier does not (its own are untrusted, revoked and
// unauthorized_id). A client speaking plain HTTP is told so, as net/http's
// server does. A connection accepted through a connLimit counts as a
// handshake in progress until then (since its accept), and may be cut for
// a newer one.
//
// The connection is tracked by its verified peer (tracked), so that a
// quarantine of that peer closes it however long it stays open.
func handshake(ctx context.Context, c net.Conn, cfg *tls.Config, tracked *authz.Conns, m *metrics) (*tls.Conn, error) {
	tc := tracked.Server(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	err := tc.HandshakeContext(hctx)
	endHandshake(c)
	if err == nil {
		return tc, nil
	}
	var rhe tls.RecordHeaderError
	reason := ""
	switch {
	case errors.As(err, &rhe):
		reason = "plain_http"
		if rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			io.WriteString(rhe.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		reason = "no_client_cert"
	case errors.Is(err, io.EOF):
		reason = "eof"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "timeout"
	}
	if reason != "" {
		m.handshakeFailures.WithLabelValues(reason).Inc()
	}
	return nil, err
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// connListener hands connections accepted elsewhere to an http.Server.
type connListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// deliver passes c to the server, or closes it if the server has stopped.
func (l *connListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// trackOutbound tracks every connection an app opens to an outbound
// listener under the upstream's identity: quarantining the upstream (or
// this service) closes them, and a connection accepted while it is
// quarantined is closed at once.
func trackOutbound(ln net.Listener, tracked *authz.Conns, upstream spiffeid.ID) net.Listener {
	return &outboundTracker{Listener: ln, tracked: tracked, id: upstream}
}

type outboundTracker struct {
	net.Listener
	tracked *authz.Conns
	id      spiffeid.ID
}

func (l *outboundTracker) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.tracked.Track(c, l.id); tc != nil {
			return tc, nil
		}
	}
}
