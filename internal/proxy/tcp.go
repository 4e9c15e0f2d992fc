package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/upstream"
)

// serveTCPInbound terminates mTLS and copies bytes to the app. The policy is
// applied to the connection's identity only (no method or path exists).
func serveTCPInbound(ctx context.Context, ln net.Listener, cfg *tls.Config, tracked *authz.Conns, app string, guard *authz.Guard, m *metrics, log *slog.Logger) {
	serveConns(ln, func(c net.Conn) {
		tc, err := handshake(ctx, c, cfg, tracked, m)
		if err != nil {
			log.Debug("tcp inbound handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			return
		}
		defer tc.Close()
		cs := tc.ConnectionState()
		peer, err := mtls.PeerID(&cs)
		if err != nil || !guard.AllowConn(ctx, peer, c.RemoteAddr().String()) {
			m.tcpConns.WithLabelValues("inbound", "denied").Inc()
			return
		}
		m.tcpConns.WithLabelValues("inbound", "allowed").Inc()
		up, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, "tcp", app)
		if err != nil {
			log.Warn("tcp inbound: app unreachable", "app", app, "err", err)
			return
		}
		defer up.Close()
		// The connection ends when the caller's certificate expires or is
		// revoked: it may live far longer than one SVID.
		wctx, cancel := guard.WatchPeer(ctx, peer, cs.PeerCertificates, c.RemoteAddr().String())
		defer cancel()
		splice(wctx, tc, up)
	})
}

// serveTCPOutbound accepts plain TCP from the app and opens mTLS to the
// upstream, which must present the expected SPIFFE ID.
func serveTCPOutbound(ctx context.Context, ln net.Listener, out Outbound, dial upstream.DialFunc, m *metrics, log *slog.Logger) {
	serveConns(ln, func(c net.Conn) {
		up, err := dial(ctx, "tcp", out.Upstream)
		if err != nil {
			m.tcpConns.WithLabelValues("outbound", "failed").Inc()
			log.Warn("tcp outbound: upstream refused or not who it should be", "upstream", out.Upstream, "want", out.ID.String(), "err", err)
			return
		}
		defer up.Close()
		m.tcpConns.WithLabelValues("outbound", "allowed").Inc()
		splice(ctx, c, up)
	})
}

// serveConns runs handle for every accepted connection (closing it after)
// until the listener is closed, then waits for the handlers to finish.
func serveConns(ln net.Listener, handle func(net.Conn)) {
	acceptLoop(ln, func(c net.Conn) {
		defer c.Close()
		handle(c)
	})
}

// splice copies both ways until either side closes or ctx ends.
func splice(ctx context.Context, a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	select {
	case <-done:
		// Give the other direction a moment to flush its half-close.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
	a.Close()
	b.Close()
}
