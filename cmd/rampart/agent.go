package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/agent"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/kubelet"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

func runAgent(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "list", "show", "evict":
			return runAgentAdmin(ctx, env, args)
		}
	}
	fs := newFlags(env, "agent", "rampart agent --server ADDR --ca-bundle FILE [--join-token-file FILE | --attest=x509pop --x509pop-cert FILE --x509pop-key FILE | --attest=tpm [--tpm DEV|tcp:HOST:PORT]] [--socket PATH] --data DIR\n       rampart agent list|show NAME|evict NAME [--json]")
	var cfg agent.Config
	var td, logLevel, logFormat, metricsAddr string
	fs.StringVar(&cfg.ServerAddr, "server", "127.0.0.1:8443", "server API address (host:port)")
	fs.StringVar(&cfg.Attest, "attest", agent.AttestJoinToken, "how the agent proves its node when it has no valid SVID: join-token, x509pop or tpm")
	fs.StringVar(&cfg.TPM, "tpm", agent.DefaultTPM, "the TPM 2.0 for --attest=tpm: a device, or tcp:HOST:PORT (swtpm)")
	fs.StringVar(&cfg.X509PoPCertFile, "x509pop-cert", "", "the node's certificate chain, PEM, leaf first (--attest=x509pop)")
	fs.StringVar(&cfg.X509PoPKeyFile, "x509pop-key", "", "the node certificate's private key, PEM, mode 0600 (--attest=x509pop)")
	join := addSecretFlag(fs, "join-token", "the one-time join token", "; read only when the agent has no valid SVID")
	fs.StringVar(&cfg.BundleFile, "ca-bundle", "", "the server's bundle.pem (only for the first start)")
	fs.StringVar(&cfg.SocketPath, "socket", "", "Workload API unix socket (default "+endpoint.SystemDir+"/"+endpoint.SocketName+" as root, $XDG_RUNTIME_DIR/rampart/"+endpoint.SocketName+" otherwise); its directory must be the agent's alone")
	fs.StringVar(&cfg.DataDir, "data", "rampart-agent-data", "agent data directory (cache of SVIDs and bundle)")
	fs.StringVar(&td, "trust-domain", "", "trust domain (default: read from the bundle)")
	fs.StringVar(&metricsAddr, "metrics-listen", "", "address for Prometheus /metrics over plain HTTP, e.g. 127.0.0.1:9090 (default off)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&cfg.InventoryInterval, "inventory-interval", 10*time.Second, "how often the inventory of running executables is reported to the server (batched)")
	fs.StringVar(&cfg.Netpol, "netpol", "off", "the host's network policy (rampart netpol): off, report (count what would be dropped) or enforce (nftables, needs CAP_NET_ADMIN; removed on exit)")
	fs.DurationVar(&cfg.NetpolInterval, "netpol-interval", 2*time.Second, "how often the host's network policy table is refreshed from the server")
	fs.StringVar(&cfg.NetpolNetNS, "netpol-netns", "", "manage the firewall of this network namespace (e.g. /var/run/netns/NAME) rather than the agent's own")
	k8s := fs.Bool("k8s", false, "ask the node's kubelet for the k8s:* selectors of callers in a pod's container")
	var kc kubelet.Config
	fs.StringVar(&kc.URL, "kubelet-url", kubelet.DefaultURL, "the kubelet's HTTPS base URL (with --k8s)")
	fs.StringVar(&kc.CAFile, "kubelet-ca", "", "PEM CA certificates the kubelet's serving certificate must chain to (required with --k8s)")
	fs.StringVar(&kc.ServerName, "kubelet-server-name", "", "name to check the kubelet's certificate for (default: the URL's host)")
	fs.StringVar(&kc.TokenFile, "kubelet-token-file", kubelet.DefaultTokenFile, "bearer token for the kubelet, re-read at every request (with --k8s)")
	exempt := fs.String("netpol-exempt-ports", "22", "ports never governed by the network policy, comma-separated (the server's port always is); '' for none")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	for _, f := range strings.Split(*exempt, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return usagef("--netpol-exempt-ports: %q is not a port", f)
		}
		cfg.NetpolExemptPorts = append(cfg.NetpolExemptPorts, uint16(n))
	}
	switch cfg.Netpol {
	case agent.NetpolOff, agent.NetpolReport, agent.NetpolEnforce:
	default:
		return usagef("--netpol %q: want off, report or enforce", cfg.Netpol)
	}
	switch cfg.Attest {
	case agent.AttestJoinToken:
	case agent.AttestX509PoP:
		if cfg.X509PoPCertFile == "" || cfg.X509PoPKeyFile == "" {
			return usagef("--attest=x509pop needs --x509pop-cert FILE and --x509pop-key FILE")
		}
	case agent.AttestTPM:
	default:
		return usagef("--attest %q: want join-token, x509pop or tpm", cfg.Attest)
	}
	if *k8s {
		if kc.CAFile == "" {
			return usagef("--k8s needs --kubelet-ca FILE: the kubelet's certificate is always checked")
		}
		cfg.Kubelet = &kc
	}
	cfg.ServerAddr = trimScheme(cfg.ServerAddr)
	if join.value != "" && join.file != "" {
		return usagef("RAMPART_JOIN_TOKEN and --join-token-file are both set; give the join token once")
	}
	cfg.JoinToken, cfg.JoinTokenFile = join.value, join.file
	var err error
	if cfg.SocketPath == "" {
		if cfg.SocketPath, err = endpoint.AgentPath(os.Geteuid(), env.getenv); err != nil {
			return usagef("%v", err)
		}
	}
	if td != "" {
		if cfg.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
			return usagef("--trust-domain %q: %v", td, err)
		}
	}
	if cfg.Log, err = newLogger(env, logLevel, logFormat); err != nil {
		return err
	}
	cfg.Registry = prometheus.NewRegistry()
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	stop, err := serveMetrics(metricsAddr, cfg.Registry, false, cfg.Log)
	if err != nil {
		return err
	}
	defer stop()
	return a.Run(ctx)
}

func runAgentAdmin(ctx context.Context, env *cliEnv, args []string) error {
	verb := args[0]
	fs := newFlags(env, "agent "+verb, "rampart agent "+verb+" [NAME] [--json]")
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	if verb == "list" {
		var agents []api.Agent
		if err := c.Do(ctx, http.MethodGet, "/v1/agents", nil, &agents); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, agents)
		}
		tw := table(env, "SPIFFE ID", "SERIAL", "SVID EXPIRES", "LAST SEEN", "EVICTED")
		for _, a := range agents {
			tw.row(a.SpiffeID, a.Serial, fmtTime(a.SVIDNotAfter), fmtTime(a.LastSeen), fmt.Sprint(a.Evicted))
		}
		return tw.flush()
	}
	if fs.NArg() != 1 {
		return usagef("agent %s takes one agent NAME (the last segment of spiffe://TD/rampart/agent/NAME)", verb)
	}
	name := fs.Arg(0)
	if verb == "show" {
		var a api.Agent
		if err := c.Do(ctx, http.MethodGet, "/v1/agents/"+pathEscape(name), nil, &a); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, a)
		}
		return printFields(env, "SPIFFE ID", a.SpiffeID, "Serial", a.Serial, "SVID expires", fmtTime(a.SVIDNotAfter),
			"Attested", fmtTime(a.AttestedAt), "Last seen", fmtTime(a.LastSeen), "Evicted", fmt.Sprint(a.Evicted))
	}
	var resp api.EvictResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/agents/"+pathEscape(name)+"/evict", nil, &resp); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, resp)
	}
	fmt.Fprintf(env.stdout, "evicted %s; revoked %d SVIDs\n", resp.Agent.SpiffeID, len(resp.Revoked))
	return nil
}
