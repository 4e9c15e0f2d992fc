package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/agent"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/server"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

// TrustDomain is the demo's trust domain.
var TrustDomain = spiffeid.RequireTrustDomainFromString("demo.rampart.local")

// Config configures a demo run.
type Config struct {
	DataDir string
	Attacks bool   // run every attack, print outcomes, exit
	Attack  string // run one attack by name, exit
	Stdout  io.Writer
	Stderr  io.Writer
	// Progress, if set, gets a line per start-up step (the CLI passes
	// stderr when it is a terminal: a first start takes a while).
	Progress io.Writer
}

// System is the running demo: what attacks need to reach.
type System struct {
	Dir        string
	ServerAddr string
	Admin      *api.Client
	BundleFile string
	Socket     string
	Agent      *agent.Agent
	AgentName  string
	Workload   spiffeid.ID
	JoinToken  string // the token the agent spent (replayed by an attack)
	Exe        string // this binary
	Services   *services
}

// Run starts the demo system and blocks until ctx is done, or runs the
// attacks and returns.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	var selected []Attack
	switch {
	case cfg.Attack != "":
		a, ok := findAttack(cfg.Attack)
		if !ok {
			return fmt.Errorf("demo: no attack %q; known: %s", cfg.Attack, strings.Join(attackNames(), ", "))
		}
		selected = []Attack{a}
	case cfg.Attacks:
		selected = Attacks()
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	step := func(what string) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "demo: %s...\n", what)
		}
	}
	sys, wait, err := start(ctx, dir, log, step)
	if wait != nil {
		defer func() { cancel(); wait() }()
	}
	if err != nil {
		return err
	}

	w := cfg.Stdout
	fmt.Fprintf(w, "Rampart demo (data in %s, logs in %s)\n\n", dir, filepath.Join(dir, "demo.log"))
	fmt.Fprintf(w, "  server    https://%s   trust domain %s\n", sys.ServerAddr, TrustDomain.Name())
	fmt.Fprintf(w, "  agent     %s   Workload API unix://%s\n", sys.Agent.ID(), sys.Socket)
	svid, err := fetchOwnSVID(ctx, sys)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  workload  %s   X.509-SVID serial %s, expires %s, chain verified against the bundle\n",
		svid.ID, svid.Certificates[0].SerialNumber.Text(16), svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	s := sys.Services
	fmt.Fprintf(w, "  payments  mTLS on %s (rampart proxy, spiffe://%s/payments); policy: only orders may GET /payments/{id}\n", s.PaymentsInbound, TrustDomain.Name())
	fmt.Fprintf(w, "  orders    mTLS on %s (rampart proxy, spiffe://%s/orders); policy: only gateway may GET /orders/{id}\n", s.OrdersInbound, TrustDomain.Name())
	fmt.Fprintf(w, "  gateway   %s (rampart proxy, spiffe://%s/gateway): plain HTTP in on loopback, mTLS out to orders\n", s.GatewayURL, TrustDomain.Name())
	fmt.Fprintf(w, "  customers mTLS on %s (Go SDK, no sidecar, spiffe://%s/customers); email and card encrypted per field with key %s (sdk/kms), in %s\n",
		s.Customers, TrustDomain.Name(), customersKey, s.CustomersDB)
	fmt.Fprintf(w, "  login     https://%s/.well-known/openid-configuration (OAuth 2.0 / OIDC); users alice and bob, password %s; public client %q\n\n",
		sys.ServerAddr, demoPassword, shopClient)

	if len(selected) > 0 {
		return runAttacks(ctx, w, sys, selected)
	}
	fmt.Fprintf(w, "Try it from another shell:\n")
	if _, err := exec.LookPath("rampart"); err != nil {
		// "go run" leaves no rampart on the PATH for the commands below.
		fmt.Fprintf(w, "  go install ./cmd/rampart   # rampart is not on your PATH: this puts it in $(go env GOPATH)/bin\n")
	}
	fmt.Fprintf(w, "  curl %s/orders/42              # gateway -> orders -> payments, each hop mTLS and authorised\n", s.GatewayURL)
	fmt.Fprintf(w, "  curl -i %s/orders/42/../../admin  # refused: path tricks are normalised before the policy\n", s.GatewayURL)
	fmt.Fprintf(w, "  curl -i %s/users/bob/card         # refused: orders may read a card only for its owner, with that user's token\n", s.GatewayURL)
	fmt.Fprintf(w, "  rampart demo --attack confused-deputy     # logs alice in: her card comes back through orders, bob's does not\n")
	fmt.Fprintf(w, "  export RAMPART_SERVER=%s RAMPART_CA_BUNDLE=%s\n", sys.ServerAddr, sys.BundleFile)
	f := operatorFiles{filepath.Join(dir, "operator")}
	fmt.Fprintf(w, "  rampart login --username %s --password-file %s --totp-secret-file %s   # sign in as the operator %s (device flow, approved here)\n",
		demoOperator, f.password(), f.totp(), demoOperator)
	fmt.Fprintf(w, "  rampart whoami                            # who the server sees: %s, roles, the session\n", demoOperator)
	fmt.Fprintf(w, "  rampart entry list\n  rampart agent list\n  rampart ca status\n  rampart policy list\n  rampart operator list\n")
	fmt.Fprintf(w, "  rampart audit query --data %s --actor %s --since 1h   # every admin action, named\n", filepath.Join(dir, "server"), demoOperator)
	fmt.Fprintf(w, "  rampart policy explain --service spiffe://%s/payments --caller spiffe://%s/gateway --path /payments/1\n", TrustDomain.Name(), TrustDomain.Name())
	fmt.Fprintf(w, "  rampart svid fetch --socket %s\n", sys.Socket)
	fmt.Fprintf(w, "  rampart oauth user list\n  rampart oauth client show %s\n", shopClient)
	fmt.Fprintf(w, "  rampart kms key show %s\n  rampart kms key rotate %s\n", customersKey, customersKey)
	fmt.Fprintf(w, "  rampart netpol view                       # where each service runs, its ports, who may open a connection to it\n")
	fmt.Fprintf(w, "  rampart netpol export --format nftables --host 127.0.0.1   # this host's firewall table, from the same policies\n")
	fmt.Fprintf(w, "  rampart playbook list; rampart incident list   # Respond: the playbook that contains a compromised service, its incidents\n")
	fmt.Fprintf(w, "  rampart rekey --dry-run                   # Recover: what a burn-down would rotate and revoke\n")
	fmt.Fprintf(w, "  rampart demo --data %s --attacks    # the attacks it stops\n", cfg.DataDir)
	fmt.Fprintf(w, "  (break glass: RAMPART_ADMIN_TOKEN_FILE=%s; every use is audited and alerted on)\n\n", filepath.Join(dir, "server", "admin.token"))
	fmt.Fprintln(w, "ready; press Ctrl-C to stop")
	<-ctx.Done()
	fmt.Fprintln(w, "stopping")
	return nil
}

// start brings up the server and the agent in this process, and registers
// the demo workload. It is idempotent over a reused data directory.
func start(ctx context.Context, dir string, log *slog.Logger, step func(string)) (*System, func(), error) {
	step("starting the server (CA, store, audit log)")
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	srvDir := filepath.Join(dir, "server")
	srv, err := server.New(ctx, server.Config{DataDir: srvDir, Listen: "127.0.0.1:0", TrustDomain: TrustDomain, Log: log.With("part", "server")})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	done := make(chan struct{}, 8)
	go func() { srv.Serve(ctx, ln); srv.Close(); done <- struct{}{} }()
	sys := &System{Dir: dir, ServerAddr: ln.Addr().String(), BundleFile: filepath.Join(srvDir, "bundle.pem"),
		Socket: filepath.Join(dir, "agent", "workload.sock"), AgentName: "demo-node", Exe: exe}
	tok, _ := os.ReadFile(filepath.Join(srvDir, "admin.token"))
	breakGlass := &api.Client{BaseURL: "https://" + sys.ServerAddr, AdminToken: strings.TrimSpace(string(tok)), HTTP: serverClient(srv, 30*time.Second)}
	// Everything from here on is done by a named operator: the admin
	// token only makes it, on the first start.
	step("signing in as the operator " + demoOperator + " (device flow, password and one-time code)")
	if sys.Admin, err = signInOperator(ctx, dir, breakGlass); err != nil {
		return nil, nil, err
	}

	agentDir := filepath.Join(dir, "agent")
	agentID, _ := identity.AgentID(TrustDomain, sys.AgentName)
	acfg := agent.Config{ServerAddr: sys.ServerAddr, BundleFile: sys.BundleFile, SocketPath: sys.Socket, DataDir: agentDir,
		TrustDomain: TrustDomain, Log: log.With("part", "agent")}
	if _, err := os.Stat(filepath.Join(agentDir, "cache.json")); err != nil {
		var jt api.CreateJoinTokenResponse
		if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: sys.AgentName}, &jt); err != nil {
			return nil, nil, fmt.Errorf("demo: join token: %w", err)
		}
		acfg.JoinToken, sys.JoinToken = jt.Token, jt.Token
		os.WriteFile(filepath.Join(dir, "spent-join-token"), []byte(jt.Token), 0o600)
	} else {
		b, _ := os.ReadFile(filepath.Join(dir, "spent-join-token"))
		sys.JoinToken = strings.TrimSpace(string(b))
	}
	if err := ensureOAuth(ctx, sys.Admin); err != nil {
		return nil, nil, err
	}
	sys.Workload = spiffeid.RequireFromPath(TrustDomain, "/demo/client")
	if err := ensureEntry(ctx, sys.Admin, api.Entry{SpiffeID: sys.Workload.String(), ParentID: agentID.String(),
		Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + exe}}); err != nil {
		return nil, nil, err
	}
	step("attesting the agent with a join token")
	a, err := agent.New(acfg)
	if err != nil {
		return nil, nil, err
	}
	sys.Agent = a
	agentErr := make(chan error, 1)
	go func() { agentErr <- a.Run(ctx); done <- struct{}{} }()
	running := 2 // server and agent; proxies add theirs
	wait := func() {
		for range running {
			<-done
		}
	}
	// The socket appears once the agent has attested and serves.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sys.Socket); err == nil && !a.ID().IsZero() {
			break
		}
		select {
		case err := <-agentErr:
			return nil, nil, fmt.Errorf("demo: agent: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, nil, errors.New("demo: the agent did not start within 30s (see demo.log)")
		}
	}
	step("starting gateway, orders, payments and customers, each with its identity and policy")
	svc, procs, err := startServices(ctx, sys, agentID.String(), done)
	running += procs
	if err != nil {
		return nil, wait, err
	}
	sys.Services = svc
	return sys, wait, nil
}

// serverClient is an HTTPS client trusting srv's CA, TLS 1.3 only.
func serverClient(srv *server.Server, timeout time.Duration) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range srv.CA().X509Bundle() {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
}

// ensureEntry registers e unless an identical entry exists. Entries for the
// same SPIFFE ID and parent with other selectors are removed: "go run" builds
// the binary at a new path each time, and a stale path must not linger.
func ensureEntry(ctx context.Context, admin *api.Client, e api.Entry) error {
	var entries []api.Entry
	if err := admin.Do(ctx, http.MethodGet, "/v1/entries", nil, &entries); err != nil {
		return fmt.Errorf("demo: list entries: %w", err)
	}
	found := false
	for _, o := range entries {
		if o.SpiffeID != e.SpiffeID || o.ParentID != e.ParentID {
			continue
		}
		if sameSet(o.Selectors, e.Selectors) {
			found = true
			continue
		}
		if err := admin.Do(ctx, http.MethodDelete, "/v1/entries/"+o.ID, nil, nil); err != nil {
			return fmt.Errorf("demo: delete stale entry %s: %w", o.ID, err)
		}
	}
	if found {
		return nil
	}
	if err := admin.Do(ctx, http.MethodPost, "/v1/entries", e, nil); err != nil {
		return fmt.Errorf("demo: create entry %s: %w", e.SpiffeID, err)
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// fetchOwnSVID fetches this process's SVID through the Workload API with
// go-spiffe's client, as any workload would.
func fetchOwnSVID(ctx context.Context, sys *System) (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		var resp *workloadapi.X509Context
		opts, err := endpoint.ClientOptions(ctx, sys.Socket, nil) // checks the agent's uid, as every client must
		if err == nil {
			resp, err = workloadapi.FetchX509Context(ctx, opts...)
		}
		if err == nil && len(resp.SVIDs) > 0 {
			s := resp.DefaultSVID()
			b, err := resp.Bundles.GetX509BundleForTrustDomain(TrustDomain)
			if err != nil {
				return nil, err
			}
			if _, _, err := x509svid.Verify(s.Certificates, b); err != nil {
				return nil, fmt.Errorf("demo: the SVID does not verify against the bundle: %w", err)
			}
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("demo: no SVID from the agent: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
