package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/upstream"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
	"github.com/rampartsec/rampart/sdk/decision"
)

// Timeouts on every stage.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	dialTimeout       = 5 * time.Second
	handshakeTimeout  = 10 * time.Second
	drainTimeout      = 20 * time.Second
)

// Inbound is the listener peers call.
type Inbound struct {
	Listen      string // e.g. 0.0.0.0:9443
	App         string // local app address, e.g. 127.0.0.1:8080
	AppProtocol string // "http1" (default) or "h2c" (gRPC)
	TCP         bool   // raw TCP: identity-only policy per connection
}

// Outbound is a loopback listener for calls to one upstream.
type Outbound struct {
	Listen   string      // e.g. 127.0.0.1:7001, or unix:/run/rampart/orders/payments.sock
	Upstream string      // the upstream's inbound proxy, host:port
	ID       spiffeid.ID // the SPIFFE ID the upstream must present
	TCP      bool
	// Exchange swaps the user token the app sends for one addressed to
	// the upstream (RFC 8693), with act naming this service.
	Exchange bool
}

// ParseOutbound parses "LISTEN=UPSTREAM,SPIFFE-ID[,exchange]", e.g.
// "127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments";
// LISTEN is a loopback host:port or unix:/absolute/path (see
// checkOutboundListen).
func ParseOutbound(s string) (Outbound, error) {
	listen, rest, ok := strings.Cut(s, "=")
	up, id, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 || listen == "" || up == "" {
		return Outbound{}, fmt.Errorf("proxy: outbound %q: want LISTEN=UPSTREAM,SPIFFE-ID[,exchange]", s)
	}
	exchange := false
	if i, opt, found := strings.Cut(id, ","); found {
		if opt != "exchange" {
			return Outbound{}, fmt.Errorf("proxy: outbound %q: unknown option %q (want exchange)", s, opt)
		}
		id, exchange = i, true
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return Outbound{}, fmt.Errorf("proxy: outbound %q: %w", s, err)
	}
	if _, _, err := net.SplitHostPort(up); err != nil {
		return Outbound{}, fmt.Errorf("proxy: outbound %q: upstream: %w", s, err)
	}
	return Outbound{Listen: listen, Upstream: up, ID: sid, Exchange: exchange}, nil
}

// Config configures a proxy.
type Config struct {
	WorkloadSocket string // the agent's Workload API socket
	ServerAddr     string // control plane, for policies and revocations
	// DataDir caches the last policy so a restart works while the server
	// is down, and holds the audit spool; it must be a directory only this
	// process's user (and root) can change (package safedir).
	DataDir string
	// AgentUID is the uid that must serve WorkloadSocket (SO_PEERCRED,
	// checked on every connection); nil: see endpoint.ExpectedUID.
	AgentUID *uint32
	// AuditSpool is the directory where decisions wait on disk for the
	// server's audit log ("" with a server: DataDir/audit-spool; no
	// DataDir: decisions are only logged).
	AuditSpool string
	Inbound    *Inbound
	Outbounds  []Outbound
	// ExchangeClientID is this service's OAuth client ID (registered with
	// tls_client_auth and its SPIFFE ID), for outbounds with Exchange.
	ExchangeClientID string
	// Limits bound the connections to each upstream peer (zero fields:
	// upstream.DefaultLimits). Towards the app the same bounds apply
	// without the dial rate and the warm connections.
	Limits upstream.Limits
	// Conns bound the connections each listener holds at once (zero
	// fields: DefaultConnLimits from RLIMIT_NOFILE), so that a flood of
	// connections never takes the descriptors the rest of the proxy needs.
	Conns ConnLimits
	// Admission refuses requests at once while the proxy is overloaded
	// (zero fields: defaults; see Admission).
	Admission Admission
	// Access says who may call the outbound listeners.
	Access OutboundAccess
	// StripHeaders are more request header names (a trailing "*": a
	// prefix) the inbound guard removes besides authz's built-in list.
	StripHeaders []string
	Log          *slog.Logger
	Registry     *prometheus.Registry
	// Ready, if set, is called once every listener is up, with their addresses.
	Ready func(inbound string, outbounds []string)
}

// Run runs the proxy until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Inbound == nil && len(cfg.Outbounds) == 0 {
		return errors.New("proxy: nothing to do: give --inbound and/or --outbound")
	}
	peerLimits := cfg.Limits.WithDefaults()
	if err := peerLimits.Validate(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	appLimits := peerLimits
	appLimits.DialRate, appLimits.MinIdle = 0, 0
	stripHeaders, err := authz.ParseStripHeaders(cfg.StripHeaders)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	for _, out := range cfg.Outbounds {
		if err := checkOutboundListen(out.Listen, cfg.Access); err != nil {
			return err
		}
	}
	bounds, nofile, lowFDs := cfg.Conns.withDefaults(peerLimits, cfg.Inbound != nil, len(cfg.Outbounds))
	if err := bounds.Validate(); err != nil {
		return err
	}
	if lowFDs {
		cfg.Log.Warn("the open-file limit leaves little room besides the listeners' connections; raise it (LimitNOFILE=, ulimit -n)",
			"nofile", nofile, "upstream_max_conns", peerLimits.MaxConns)
	}
	if cfg.ServerAddr != "" && cfg.DataDir != "" {
		// The cached policy and the audit spool: another user who controls
		// the directory could forge the one and read or inject the other.
		dir, err := safedir.Make(cfg.DataDir, "the proxy's data directory (--data)", os.Geteuid(), 0o700)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		cfg.DataDir = dir
	}
	if err := cfg.Admission.Validate(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	adm := cfg.Admission.withDefaults(peerLimits)
	m := newMetrics(cfg.Registry)
	wopts, err := endpoint.ClientOptions(ctx, cfg.WorkloadSocket, cfg.AgentUID) // who serves the socket is checked on every connection
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(wopts...))
	if err != nil {
		return fmt.Errorf("proxy: Workload API at %s: %w", cfg.WorkloadSocket, err)
	}
	defer src.Close()
	self, err := src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	m.watchSVID(src)
	td := self.ID.TrustDomain()
	revs := &mtls.Revocations{}
	// The quarantine ends open connections of whoever it holds: every
	// connection, inbound and outbound, is tracked by its peer.
	quarantine := &mtls.Quarantine{Self: self.ID}
	tracked := authz.NewConns(quarantine)
	var sink decision.Sink = authz.LogSink{Log: cfg.Log}
	if cfg.AuditSpool == "" && cfg.DataDir != "" {
		cfg.AuditSpool = filepath.Join(cfg.DataDir, "audit-spool")
	}
	if cfg.ServerAddr != "" && cfg.AuditSpool != "" && cfg.Inbound != nil {
		sp, s, err := authz.ShipDecisions(cfg.AuditSpool, cfg.ServerAddr, td, src, src, sink, cfg.Log, cfg.Registry)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		defer sp.Close()
		sink = s
	} else if cfg.Inbound != nil {
		cfg.Log.Warn("decisions go to the log only, not to the audit log: give --server and --data (or --audit-spool)")
	}
	guard := authz.NewGuard(authz.GuardConfig{Service: self.ID, Log: cfg.Log, Sink: sink, Registry: cfg.Registry, Revocations: revs, Quarantine: quarantine, Bundles: src, StripHeaders: stripHeaders})
	if cfg.ServerAddr != "" {
		syncer := &authz.Syncer{ServerAddr: cfg.ServerAddr, SVID: src, Bundles: src, Guard: guard, Revocations: revs, Quarantine: quarantine, CacheDir: cfg.DataDir, Log: cfg.Log}
		if err := syncer.Start(ctx); err != nil {
			return err
		}
	}
	onFail := func(reason string) { m.handshakeFailures.WithLabelValues(reason).Inc() }
	errLog := log.New(debugLogWriter{cfg.Log}, "", 0)

	var servers []*http.Server
	var lns []net.Listener
	var conns []*connSet
	var wg sync.WaitGroup
	errc := make(chan error, 1+len(cfg.Outbounds))
	serveH2 := func(srv *http.Server, ln net.Listener, what string) {
		servers = append(servers, srv)
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("proxy: %s: %w", what, err)
			}
		})
	}
	// Forwarding outlives ctx: requests read during the drain still reach
	// their upstream; it ends once the drain is over.
	fctx, stopForwarding := context.WithCancel(context.WithoutCancel(ctx))
	defer stopForwarding()
	am := newAdmissionMetrics(cfg.Registry)
	ctl := startAdmission(ctx, adm, am, func(f func()) { wg.Go(f) })
	var inboundAddr string
	if in := cfg.Inbound; in != nil {
		tlsCfg := mtls.ServerConfig(mtls.Options{SVID: src, Bundles: src, Authorize: mtls.AuthorizeTrustDomains(), Revocations: revs, Quarantine: quarantine, OnFail: onFail,
			OnHandshake: m.handshake("server"), OnSessionDeclined: func(r string) { m.sessionsDeclined.WithLabelValues(r).Inc() }})
		ln, err := net.Listen("tcp", in.Listen)
		if err != nil {
			return fmt.Errorf("proxy: inbound listen: %w", err)
		}
		inboundAddr = ln.Addr().String()
		cl := newConnLimit(bounds.InboundConns, bounds.InboundHandshakes, m, "inbound", inboundAddr)
		if ctl != nil && adm.OverloadHandshakes > 0 {
			cl.overloaded, cl.overloadHandshakes = ctl.Overloaded, adm.OverloadHandshakes
		}
		ln = cl.listener(ln)
		gate := newListenerGate(ctl, adm, am, "inbound", inboundAddr)
		lns = append(lns, ln)
		pm := m.pool("inbound", inboundAddr)
		if in.TCP {
			wg.Go(func() { serveTCPInbound(ctx, ln, tlsCfg, tracked, in.App, guard, m, cfg.Log) })
		} else {
			srv, err := newInboundServer(in, guard, gate, m, pm, appLimits, errLog)
			if err != nil {
				ln.Close()
				return err
			}
			// A copy: net/http writes to its own (HTTP/2 setup) while the
			// handshakes read tlsCfg.
			srv.TLSConfig = tlsCfg.Clone()
			h2 := newConnListener(ln.Addr())
			serveH2(srv, h2, "inbound")
			var h1 *h1Forwarder
			if in.AppProtocol != "h2c" {
				// HTTP/1.1 callers take the lean path; with an h2c app,
				// net/http translates every request to HTTP/2.
				app := in.App
				dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
				h1 = newH1Forwarder(fctx, &wg, "inbound", guard, gate, m, pm, appLimits, cfg.Log,
					func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", app) },
					func(error) string { return "the service behind this proxy did not answer" },
					func(oe *upstream.OverloadError) string {
						return "the service behind this proxy is at capacity: " + overloadDetail(oe)
					})
				conns = append(conns, h1.conns)
			}
			wg.Go(func() { serveInbound(fctx, ln, tlsCfg, tracked, h1, h2, m) })
		}
	}
	var xchg *authz.Exchanger
	for _, out := range cfg.Outbounds {
		if !out.Exchange || xchg != nil {
			continue
		}
		if out.TCP {
			return fmt.Errorf("proxy: outbound %s: exchange applies to HTTP, not raw TCP", out.Listen)
		}
		if cfg.ServerAddr == "" || cfg.ExchangeClientID == "" {
			return errors.New("proxy: an outbound with exchange needs --server and --exchange-client-id (this service's OAuth client, registered with tls_client_auth)")
		}
		xchg = authz.NewExchanger(cfg.ServerAddr, cfg.ExchangeClientID, td, src, src)
	}
	var outAddrs []string
	for _, out := range cfg.Outbounds {
		clientCfg := mtls.ClientConfig(mtls.Options{SVID: src, Bundles: src, Authorize: tlsconfig.AuthorizeID(out.ID), Revocations: revs, Quarantine: quarantine, OnFail: onFail,
			OnHandshake: m.handshake("client")})
		ln, err := listenOutbound(out, cfg.Access, m, cfg.Log)
		if err != nil {
			return err
		}
		listener := ln.Addr().String()
		ln = newConnLimit(bounds.OutboundConns, 0, m, "outbound", listener).listener(ln)
		ln = trackOutbound(ln, tracked, out.ID)
		outAddrs = append(outAddrs, listener)
		lns = append(lns, ln)
		pm := m.pool("outbound", listener)
		netDialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
		if out.TCP {
			// One upstream connection per app connection, no pool: the
			// handshakes are bounded in number at once, not in rate (a
			// client's connect must not wait seconds for its turn).
			tcpLimits := peerLimits
			tcpLimits.DialRate = 0
			dial := upstream.NewGate(tcpLimits, nil, pm.dialed).Dial(handshakeBounded((&mtls.Dialer{Config: clientCfg, Net: netDialer}).DialContext))
			wg.Go(func() { serveTCPOutbound(ctx, ln, out, dial, m, cfg.Log) })
			continue
		}
		gate := newListenerGate(ctl, adm, am, "outbound", listener)
		srv := newOutboundServer(out, clientCfg, netDialer, gate, m, pm, peerLimits, errLog)
		if out.Exchange {
			// Every request's token is exchanged: net/http serves them all.
			srv.Handler = xchg.Handler(out.ID.String(), func(r authz.ExchangeResult) { m.exchanges.WithLabelValues(string(r)).Inc() }, srv.Handler)
			serveH2(srv, ln, "outbound "+out.Listen)
			continue
		}
		h2 := newConnListener(ln.Addr())
		serveH2(srv, h2, "outbound "+out.Listen)
		h1Cfg := clientCfg.Clone()
		h1Cfg.NextProtos = []string{"http/1.1"}
		dialer := &mtls.Dialer{Config: h1Cfg, Net: netDialer}
		upstreamAddr := out.Upstream
		h1 := newH1Forwarder(fctx, &wg, "outbound", nil, gate, m, pm, peerLimits, cfg.Log,
			func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", upstreamAddr) },
			func(err error) string {
				return "upstream " + out.ID.String() + " unreachable or not who it should be: " + err.Error()
			},
			func(oe *upstream.OverloadError) string {
				return "upstream " + out.ID.String() + " is at capacity: " + overloadDetail(oe)
			})
		conns = append(conns, h1.conns)
		wg.Go(func() { serveOutbound(fctx, ln, h1, h2) })
	}
	cfg.Log.Info("proxy running", "spiffe_id", self.ID.String(), "inbound", inboundAddr, "outbounds", outAddrs,
		"nofile", nofile, "inbound_max_conns", bounds.InboundConns, "inbound_max_handshakes", bounds.InboundHandshakes, "outbound_max_conns", bounds.OutboundConns)
	if cfg.Ready != nil {
		cfg.Ready(inboundAddr, outAddrs)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	// Drain: stop accepting, let open requests finish.
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for _, l := range lns {
		l.Close()
	}
	var dwg sync.WaitGroup
	for _, s := range servers {
		dwg.Go(func() { s.Shutdown(dctx) })
	}
	for _, c := range conns {
		dwg.Go(func() { c.shutdown(dctx) })
	}
	dwg.Wait()
	stopForwarding()
	wg.Wait()
	cfg.Log.Info("proxy drained")
	return nil
}

// handshakeBounded bounds a dial, TLS handshake included, in time: a
// Transport's dials are not cancelled with the request that started them.
func handshakeBounded(dial upstream.DialFunc) upstream.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, dialTimeout+handshakeTimeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

// overloadDetail says why a request was refused for overload, for the
// 503's problem detail.
func overloadDetail(oe *upstream.OverloadError) string {
	if oe.Reason == upstream.ReasonQueueFull {
		return fmt.Sprintf("all %d connections busy and too many requests waiting; retry later", oe.MaxConns)
	}
	return fmt.Sprintf("all %d connections stayed busy for %v; retry later", oe.MaxConns, oe.Waited.Round(time.Millisecond))
}

// transportError answers a request net/http could not forward: 503 with
// Retry-After if every connection was busy, else 502 with badGateway's
// detail.
func transportError(w http.ResponseWriter, err error, l upstream.Limits, d *directionMetrics, badGateway func(error) string, overloaded func(*upstream.OverloadError) string) {
	var oe *upstream.OverloadError
	if errors.As(err, &oe) {
		(&authz.Refusal{Status: http.StatusServiceUnavailable, RetryAfter: l.RetryAfter(), Detail: overloaded(oe)}).Write(w)
		return
	}
	d.upstreamErrors.Inc()
	authz.WriteProblem(w, http.StatusBadGateway, badGateway(err))
}

func appTransport(protocol string, l upstream.Limits, pm *poolMetrics) (*http.Transport, string, error) {
	t := upstream.Transport(l, false, (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext, pm.dialed)
	t.ResponseHeaderTimeout = responseHeaderTimeout
	switch protocol {
	case "", "http1":
	case "h2c":
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	default:
		return nil, "", fmt.Errorf("proxy: app protocol %q: want http1 or h2c", protocol)
	}
	return t, "http", nil
}

func newInboundServer(in *Inbound, guard *authz.Guard, gate *listenerGate, m *metrics, pm *poolMetrics, l upstream.Limits, errLog *log.Logger) (*http.Server, error) {
	t, scheme, err := appTransport(in.AppProtocol, l, pm)
	if err != nil {
		return nil, err
	}
	var pending atomic.Int64
	pm.watchPending(&pending)
	d := m.forDirection("inbound")
	rp := reverseProxy(&url.URL{Scheme: scheme, Host: in.App}, upstream.Bound(t, l, pm.overload, &pending), errLog, func(w http.ResponseWriter, err error) {
		transportError(w, err, l, d, func(error) string { return "the service behind this proxy did not answer" },
			func(oe *upstream.OverloadError) string {
				return "the service behind this proxy is at capacity: " + overloadDetail(oe)
			})
	})
	// Request trailers arrive after the guard decided: dropped, as the
	// HTTP/1.1 forwarder drops them, so the app never reads an identity
	// header the guard did not see (HTTP/2 lets a caller declare any).
	rewrite := rp.Rewrite
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		rewrite(pr)
		pr.Out.Trailer = nil
	}
	return &http.Server{
		Handler:           m.instrument("inbound", gate.middleware(guard, guard.Middleware(rp))),
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    64 << 10, // net/http's default is 1 MiB
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}, nil
}

func newOutboundServer(out Outbound, clientCfg *tls.Config, netDialer *net.Dialer, gate *listenerGate, m *metrics, pm *poolMetrics, l upstream.Limits, errLog *log.Logger) *http.Server {
	t := upstream.Transport(l, true, handshakeBounded((&mtls.Dialer{Config: clientCfg, Net: netDialer}).DialContext), pm.dialed)
	t.ForceAttemptHTTP2 = true
	t.ResponseHeaderTimeout = responseHeaderTimeout
	var pending atomic.Int64
	pm.watchPending(&pending)
	d := m.forDirection("outbound")
	rp := reverseProxy(&url.URL{Scheme: "https", Host: out.Upstream}, upstream.Bound(t, l, pm.overload, &pending), errLog, func(w http.ResponseWriter, err error) {
		transportError(w, err, l, d, func(err error) string {
			return "upstream " + out.ID.String() + " unreachable or not who it should be: " + err.Error()
		}, func(oe *upstream.OverloadError) string {
			return "upstream " + out.ID.String() + " is at capacity: " + overloadDetail(oe)
		})
	})
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true) // the app may speak h2c (gRPC)
	return &http.Server{
		Handler:           m.instrument("outbound", gate.middleware(nil, rp)),
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    64 << 10, // net/http's default is 1 MiB
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
		Protocols:         &p,
	}
}

// newH1Forwarder builds one listener's HTTP/1.1 forwarder (guard: nil
// outbound) and runs its pool's reaper on wg until ctx ends.
func newH1Forwarder(ctx context.Context, wg *sync.WaitGroup, direction string, guard *authz.Guard, gate *listenerGate, m *metrics, pm *poolMetrics, l upstream.Limits, log *slog.Logger,
	dial func(context.Context) (net.Conn, error), badGateway func(error) string, overloaded func(*upstream.OverloadError) string) *h1Forwarder {
	f := &h1Forwarder{guard: guard, gate: gate, m: m.forDirection(direction), log: log, conns: newConnSet(),
		pool: newPool(dial, l, pm), badGateway: badGateway, overloaded: overloaded}
	wg.Go(func() { f.pool.reap(ctx, 30*time.Second) })
	return f
}

// reverseProxy forwards to target, keeping the caller's Host header.
func reverseProxy(target *url.URL, t http.RoundTripper, errLog *log.Logger, onErr func(http.ResponseWriter, error)) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: t,
		// 0: ReverseProxy flushes at once for responses of unknown length
		// (gRPC, server-sent events) and buffers the rest.
		FlushInterval: 0,
		ErrorLog:      errLog,
		ErrorHandler:  func(w http.ResponseWriter, _ *http.Request, err error) { onErr(w, err) },
	}
}

// debugLogWriter passes net/http's error log lines (a client that went
// away, a malformed HTTP/2 frame) to the debug log.
type debugLogWriter struct{ log *slog.Logger }

func (w debugLogWriter) Write(p []byte) (int, error) {
	w.log.Debug("http", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = debugLogWriter{}
