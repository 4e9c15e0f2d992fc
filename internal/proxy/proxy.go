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
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
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
	Listen   string      // e.g. 127.0.0.1:7001
	Upstream string      // the upstream's inbound proxy, host:port
	ID       spiffeid.ID // the SPIFFE ID the upstream must present
	TCP      bool
	// Exchange swaps the user token the app sends for one addressed to
	// the upstream (RFC 8693), with act naming this service.
	Exchange bool
}

// ParseOutbound parses "LISTEN=UPSTREAM,SPIFFE-ID[,exchange]", e.g.
// "127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments".
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
	DataDir        string // caches the last policy so a restart works while the server is down
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
	Log              *slog.Logger
	Registry         *prometheus.Registry
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
	var sink authz.Sink = authz.LogSink{Log: cfg.Log}
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
	guard := authz.NewGuard(authz.GuardConfig{Service: self.ID, Log: cfg.Log, Sink: sink, Registry: cfg.Registry, Revocations: revs})
	if cfg.ServerAddr != "" {
		syncer := &authz.Syncer{ServerAddr: cfg.ServerAddr, SVID: src, Bundles: src, Guard: guard, Revocations: revs, CacheDir: cfg.DataDir, Log: cfg.Log}
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
	var inboundAddr string
	if in := cfg.Inbound; in != nil {
		tlsCfg := mtls.ServerConfig(mtls.Options{SVID: src, Bundles: src, Authorize: tlsconfig.AuthorizeMemberOf(td), Revocations: revs, OnFail: onFail})
		ln, err := net.Listen("tcp", in.Listen)
		if err != nil {
			return fmt.Errorf("proxy: inbound listen: %w", err)
		}
		inboundAddr = ln.Addr().String()
		lns = append(lns, ln)
		if in.TCP {
			wg.Go(func() { serveTCPInbound(ctx, ln, tlsCfg, in.App, guard, m, cfg.Log) })
		} else {
			srv, err := newInboundServer(in, guard, m, errLog)
			if err != nil {
				ln.Close()
				return err
			}
			srv.TLSConfig = tlsCfg
			h2 := newConnListener(ln.Addr())
			serveH2(srv, h2, "inbound")
			var h1 *h1Forwarder
			if in.AppProtocol != "h2c" {
				// HTTP/1.1 callers take the lean path; with an h2c app,
				// net/http translates every request to HTTP/2.
				app := in.App
				dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
				h1 = newH1Forwarder(fctx, &wg, "inbound", guard, m, cfg.Log,
					func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", app) },
					func(error) string { return "the service behind this proxy did not answer" })
				conns = append(conns, h1.conns)
			}
			wg.Go(func() { serveInbound(fctx, ln, tlsCfg, h1, h2, m) })
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
		clientCfg := mtls.ClientConfig(mtls.Options{SVID: src, Bundles: src, Authorize: tlsconfig.AuthorizeID(out.ID), Revocations: revs, OnFail: onFail})
		ln, err := net.Listen("tcp", out.Listen)
		if err != nil {
			return fmt.Errorf("proxy: outbound listen %s: %w", out.Listen, err)
		}
		outAddrs = append(outAddrs, ln.Addr().String())
		lns = append(lns, ln)
		if out.TCP {
			wg.Go(func() { serveTCPOutbound(ctx, ln, out, clientCfg, m, cfg.Log) })
			continue
		}
		srv := newOutboundServer(out, clientCfg, m, errLog)
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
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, Config: h1Cfg}
		upstream := out.Upstream
		h1 := newH1Forwarder(fctx, &wg, "outbound", nil, m, cfg.Log,
			func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", upstream) },
			func(err error) string {
				return "upstream " + out.ID.String() + " unreachable or not who it should be: " + err.Error()
			})
		conns = append(conns, h1.conns)
		wg.Go(func() { serveOutbound(fctx, ln, h1, h2) })
	}
	cfg.Log.Info("proxy running", "spiffe_id", self.ID.String(), "inbound", inboundAddr, "outbounds", outAddrs)
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

func appTransport(protocol string) (*http.Transport, string, error) {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          maxIdleUpstream,
		MaxIdleConnsPerHost:   maxIdleUpstream,
		IdleConnTimeout:       poolIdleTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
	}
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

func newInboundServer(in *Inbound, guard *authz.Guard, m *metrics, errLog *log.Logger) (*http.Server, error) {
	t, scheme, err := appTransport(in.AppProtocol)
	if err != nil {
		return nil, err
	}
	rp := reverseProxy(&url.URL{Scheme: scheme, Host: in.App}, t, errLog, func(w http.ResponseWriter, err error) {
		m.upstreamErrors.WithLabelValues("inbound").Inc()
		authz.WriteProblem(w, http.StatusBadGateway, "the service behind this proxy did not answer")
	})
	return &http.Server{
		Handler:           m.instrument("inbound", guard.Middleware(rp)),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}, nil
}

func newOutboundServer(out Outbound, clientCfg *tls.Config, m *metrics, errLog *log.Logger) *http.Server {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       clientCfg,
		TLSHandshakeTimeout:   handshakeTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          maxIdleUpstream,
		MaxIdleConnsPerHost:   maxIdleUpstream,
		IdleConnTimeout:       poolIdleTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
	}
	rp := reverseProxy(&url.URL{Scheme: "https", Host: out.Upstream}, t, errLog, func(w http.ResponseWriter, err error) {
		m.upstreamErrors.WithLabelValues("outbound").Inc()
		authz.WriteProblem(w, http.StatusBadGateway, "upstream "+out.ID.String()+" unreachable or not who it should be: "+err.Error())
	})
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true) // the app may speak h2c (gRPC)
	return &http.Server{
		Handler:           m.instrument("outbound", rp),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
		Protocols:         &p,
	}
}

// newH1Forwarder builds one listener's HTTP/1.1 forwarder (guard: nil
// outbound) and runs its pool's reaper on wg until ctx ends.
func newH1Forwarder(ctx context.Context, wg *sync.WaitGroup, direction string, guard *authz.Guard, m *metrics, log *slog.Logger,
	dial func(context.Context) (net.Conn, error), badGateway func(error) string) *h1Forwarder {
	f := &h1Forwarder{guard: guard, m: m.forDirection(direction), log: log, conns: newConnSet(),
		pool: newPool(dial, maxIdleUpstream), badGateway: badGateway}
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
