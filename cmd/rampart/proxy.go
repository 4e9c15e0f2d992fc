package main

import (
	"context"
	"flag"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rampartsec/rampart/internal/admission"
	"github.com/rampartsec/rampart/internal/proxy"
	"github.com/rampartsec/rampart/internal/upstream"
)

// lookupGroup resolves a group name or number.
func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

// loopbackAddr reports whether a listen address is on loopback.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func runProxy(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "proxy", `rampart proxy --socket PATH --server ADDR [--inbound ADDR --app ADDR] [--outbound LISTEN=UPSTREAM,SPIFFE-ID[,exchange] ...]

Examples:
  # protect an app on 127.0.0.1:8080; peers call :9443 with mTLS
  rampart proxy --inbound 0.0.0.0:9443 --app 127.0.0.1:8080
  # let the app call payments through http://127.0.0.1:7001
  rampart proxy --outbound 127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments
  # same, and swap the user token the app forwards for one addressed to payments
  # (RFC 8693; orders is an OAuth client with tls_client_auth and --audience payments)
  rampart proxy --exchange-client-id orders --outbound 127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments,exchange
  # the app (running as uid 1001) calls payments through a unix socket only it may use
  rampart proxy --outbound unix:/run/rampart/orders/payments.sock=payments.internal:9443,spiffe://example.org/payments --outbound-allow-uid 1001

An outbound listener calls its upstream as this service, for whoever reaches it:
it must listen on loopback or a unix socket (callers checked by uid), unless
--outbound-allow-remote says the network around it is trusted.`)
	var cfg proxy.Config
	var inbound, app, appProto, logLevel, logFormat, metricsAddr string
	var tcp, pprofOn bool
	var outs repeatFlag
	ws := addWorkloadFlags(fs)
	var allowUIDs, stripHeaders listFlag
	var socketGroup string
	lim := upstream.DefaultLimits()
	fs.StringVar(&cfg.ServerAddr, "server", "127.0.0.1:8443", "server for policies and revocations (empty: none, deny all inbound)")
	fs.StringVar(&cfg.DataDir, "data", "", "directory caching the last policy and spooling audit entries (default: neither)")
	fs.StringVar(&cfg.AuditSpool, "audit-spool", "", "directory where decisions wait for the server's audit log (default DATA/audit-spool)")
	fs.StringVar(&inbound, "inbound", "", "address peers connect to with mTLS, e.g. 0.0.0.0:9443")
	fs.StringVar(&app, "app", "", "the local app behind the inbound listener, e.g. 127.0.0.1:8080")
	fs.StringVar(&appProto, "app-protocol", "http1", "how to talk to the app: http1, or h2c for gRPC")
	fs.BoolVar(&tcp, "tcp", false, "raw TCP mode for every listener (identity-only policy)")
	fs.Var(&outs, "outbound", "LISTEN=UPSTREAM,SPIFFE-ID[,exchange]: a listener on loopback (host:port) or a unix socket (unix:/path) forwarding to an upstream that must present SPIFFE-ID; with exchange, user tokens are exchanged for the upstream (repeatable)")
	fs.StringVar(&cfg.ExchangeClientID, "exchange-client-id", "", "this service's OAuth client ID (tls_client_auth with its SVID), for outbounds with exchange")
	fs.BoolVar(&cfg.Access.AllowRemote, "outbound-allow-remote", false, "let an --outbound listen beyond loopback: anyone who reaches it calls the upstream as this service (an open relay unless the network is trusted)")
	fs.Var(&allowUIDs, "outbound-allow-uid", "uid (or user name) allowed to connect to unix-socket outbounds, checked with SO_PEERCRED (repeatable, comma-separated; default: the proxy's own uid)")
	fs.StringVar(&socketGroup, "outbound-socket-group", "", "group (name or gid) given the unix-socket outbounds when other uids are allowed (mode 0660; default the proxy's own group)")
	fs.Var(&stripHeaders, "strip-header", "more request headers to remove before the policy and the app see them, besides the built-in identity headers (docs/dataplane.md); a trailing * makes a prefix (repeatable, comma-separated)")
	fs.IntVar(&lim.MaxConns, "upstream-max-conns", lim.MaxConns, "connections open at most to each upstream (each outbound's peer, the app): requests in flight beyond it wait")
	fs.IntVar(&lim.MaxPending, "upstream-max-pending", lim.MaxPending, "requests waiting for a connection to one upstream; beyond it they are refused with 503 at once")
	fs.DurationVar(&lim.QueueTimeout, "upstream-queue-timeout", lim.QueueTimeout, "how long a request waits for a connection before a 503 with Retry-After")
	fs.DurationVar(&lim.QueueTarget, "upstream-queue-target", lim.QueueTarget, "how long an HTTP/1.1 request waits instead once the queue has not emptied for --upstream-queue-interval while all --upstream-max-conns connections are open or being opened (overload, not a burst; HTTP/2 and gRPC keep --upstream-queue-timeout)")
	fs.DurationVar(&lim.QueueInterval, "upstream-queue-interval", lim.QueueInterval, "how long the queue must stand before --upstream-queue-target applies")
	fs.IntVar(&lim.MaxDialing, "upstream-max-dialing", lim.MaxDialing, "new connections (handshakes) being opened at once to one upstream")
	fs.Float64Var(&lim.DialRate, "upstream-dial-rate", lim.DialRate, "new mTLS connections a second to one peer, after a burst of --upstream-max-dialing (0: no rate bound; the app's are never rate-bound)")
	fs.IntVar(&lim.MaxIdle, "upstream-max-idle", lim.MaxIdle, "idle connections kept to one upstream")
	fs.IntVar(&lim.MinIdle, "upstream-min-idle", lim.MinIdle, "connections to each peer kept open and warm, replaced as they age out (not to the app)")
	fs.DurationVar(&lim.IdleTimeout, "upstream-idle-timeout", lim.IdleTimeout, "idle connections are closed after this long")
	fs.IntVar(&cfg.Conns.InboundConns, "inbound-max-conns", 0, "connections the inbound listener holds at once, handshakes included; more are closed as accepted (0: derived from the open-file limit, leaving room for the upstream connections, the audit spool and /metrics)")
	fs.IntVar(&cfg.Conns.InboundHandshakes, "inbound-max-handshakes", 0, "inbound connections still in their TLS handshake at once; a new one beyond it cuts the oldest (0: a quarter of --inbound-max-conns, at most 1024)")
	fs.IntVar(&cfg.Conns.OutboundConns, "outbound-max-conns", 0, "connections each outbound listener holds at once; more are closed as accepted (0: derived from the open-file limit)")
	adm := &cfg.Admission
	fs.DurationVar(&adm.Delay.Target, "admission-target", admission.DefaultTarget, "queueing delay tolerated (how long goroutines wait for a CPU); above it for --admission-interval, the proxy sheds arriving requests with 503 and Retry-After (0: never shed for delay)")
	fs.DurationVar(&adm.Delay.Interval, "admission-interval", admission.DefaultInterval, "how long the queueing delay must stay above --admission-target before shedding starts")
	fs.Float64Var(&adm.Delay.MaxShed, "admission-max-shed", admission.DefaultMaxShed, "the largest fraction of arriving requests shed while overloaded")
	fs.IntVar(&adm.MaxInFlight, "admission-max-in-flight", 0, "requests each listener has in flight at once; more are answered 503 at once (0: --upstream-max-conns + --upstream-max-pending; -1: no cap)")
	fs.IntVar(&adm.MinInFlight, "admission-min-in-flight", admission.DefaultMinInFlight, "a listener with this many requests in flight or fewer never sheds for delay")
	fs.IntVar(&adm.OverloadHandshakes, "admission-overload-handshakes", 0, "TLS handshakes the inbound listener runs at once while shedding; more new connections are closed as accepted (0: twice the CPUs; -1: no bound)")
	fs.StringVar(&metricsAddr, "metrics-listen", "", "address for Prometheus /metrics over plain HTTP (default off)")
	fs.BoolVar(&pprofOn, "pprof", false, "also serve Go's /debug/pprof/ on --metrics-listen (profiling; keep that address on loopback)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	var err error
	if cfg.Log, err = newLogger(env, logLevel, logFormat); err != nil {
		return err
	}
	if cfg.WorkloadSocket, cfg.AgentUID, err = ws.resolve(env); err != nil {
		return err
	}
	if inbound != "" {
		if app == "" {
			return usagef("--inbound needs --app (where the service listens)")
		}
		cfg.Inbound = &proxy.Inbound{Listen: inbound, App: app, AppProtocol: appProto, TCP: tcp}
	}
	for _, o := range outs {
		ob, err := proxy.ParseOutbound(o)
		if err != nil {
			return usagef("%v", err)
		}
		ob.TCP = tcp
		cfg.Outbounds = append(cfg.Outbounds, ob)
	}
	// Bounds left at their defaults follow a smaller --upstream-max-conns.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["upstream-max-idle"] {
		lim.MaxIdle = min(lim.MaxIdle, lim.MaxConns)
	}
	if !set["upstream-max-dialing"] {
		lim.MaxDialing = min(lim.MaxDialing, lim.MaxConns)
	}
	if !set["upstream-queue-target"] {
		lim.QueueTarget = min(lim.QueueTarget, lim.QueueTimeout)
	}
	if !set["upstream-min-idle"] {
		lim.MinIdle = min(lim.MinIdle, lim.MaxIdle)
	}
	if err := lim.Validate(); err != nil {
		return usagef("%v", err)
	}
	cfg.Limits = lim
	if adm.Delay.Target <= 0 {
		adm.Delay.Target = -1 // off
	}
	if err := adm.Validate(); err != nil {
		return usagef("%v", err)
	}
	if err := cfg.Conns.Validate(); err != nil {
		return usagef("%v", err)
	}
	if cfg.Access.UIDs, err = proxy.ParseUIDs(allowUIDs); err != nil {
		return usagef("%v", err)
	}
	cfg.Access.SocketGroup = -1
	if socketGroup != "" {
		if cfg.Access.SocketGroup, err = lookupGroup(socketGroup); err != nil {
			return usagef("--outbound-socket-group %q: %v", socketGroup, err)
		}
	}
	cfg.StripHeaders = stripHeaders
	if pprofOn && metricsAddr != "" && !loopbackAddr(metricsAddr) {
		return usagef("--pprof serves profiles and goroutine stacks: --metrics-listen must then be a loopback address, not %s", metricsAddr)
	}
	cfg.ServerAddr = trimScheme(cfg.ServerAddr)
	cfg.Registry = prometheus.NewRegistry()
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stop, err := serveMetrics(metricsAddr, cfg.Registry, pprofOn, cfg.Log)
	if err != nil {
		return err
	}
	defer stop()
	if p := env.getenv("RAMPART_READY_FILE"); p != "" {
		cfg.Ready = func(in string, outs []string) {
			os.WriteFile(p, []byte(strings.Join(append([]string{in}, outs...), "\n")+"\n"), 0o600)
		}
	}
	return proxy.Run(ctx, cfg)
}
