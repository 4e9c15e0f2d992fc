package main

import (
	"context"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rampartsec/rampart/internal/proxy"
)

func runProxy(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "proxy", `rampart proxy --socket PATH --server ADDR [--inbound ADDR --app ADDR] [--outbound LISTEN=UPSTREAM,SPIFFE-ID[,exchange] ...]

Examples:
  # protect an app on 127.0.0.1:8080; peers call :9443 with mTLS
  rampart proxy --inbound 0.0.0.0:9443 --app 127.0.0.1:8080
  # let the app call payments through http://127.0.0.1:7001
  rampart proxy --outbound 127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments
  # same, and swap the user token the app forwards for one addressed to payments
  # (RFC 8693; orders is an OAuth client with tls_client_auth and --audience payments)
  rampart proxy --exchange-client-id orders --outbound 127.0.0.1:7001=payments.internal:9443,spiffe://example.org/payments,exchange`)
	var cfg proxy.Config
	var inbound, app, appProto, logLevel, logFormat, metricsAddr string
	var tcp, pprofOn bool
	var outs repeatFlag
	ws := addWorkloadFlags(fs)
	fs.StringVar(&cfg.ServerAddr, "server", "127.0.0.1:8443", "server for policies and revocations (empty: none, deny all inbound)")
	fs.StringVar(&cfg.DataDir, "data", "", "directory caching the last policy and spooling audit entries (default: neither)")
	fs.StringVar(&cfg.AuditSpool, "audit-spool", "", "directory where decisions wait for the server's audit log (default DATA/audit-spool)")
	fs.StringVar(&inbound, "inbound", "", "address peers connect to with mTLS, e.g. 0.0.0.0:9443")
	fs.StringVar(&app, "app", "", "the local app behind the inbound listener, e.g. 127.0.0.1:8080")
	fs.StringVar(&appProto, "app-protocol", "http1", "how to talk to the app: http1, or h2c for gRPC")
	fs.BoolVar(&tcp, "tcp", false, "raw TCP mode for every listener (identity-only policy)")
	fs.Var(&outs, "outbound", "LISTEN=UPSTREAM,SPIFFE-ID[,exchange]: a loopback listener forwarding to an upstream that must present SPIFFE-ID; with exchange, user tokens are exchanged for the upstream (repeatable)")
	fs.StringVar(&cfg.ExchangeClientID, "exchange-client-id", "", "this service's OAuth client ID (tls_client_auth with its SVID), for outbounds with exchange")
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
