package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/identity/ids"
	"github.com/rampartsec/rampart/internal/kubelet"
	"github.com/rampartsec/rampart/internal/netpol"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/secretfile"
	"github.com/rampartsec/rampart/internal/svid"
	"github.com/rampartsec/rampart/internal/workload"
)

// Backoff bounds for calls to the server.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	syncWait   = 25 * time.Second
)

// Config configures an agent.
type Config struct {
	ServerAddr string // host:port of the server's API
	// JoinToken, or else the file JoinTokenFile names (read only then, and
	// refused if group or others may read it), attests the agent when it
	// has no valid cached agent SVID.
	JoinToken     string
	JoinTokenFile string
	BundleFile    string // initial trust bundle (the server's bundle.pem)
	TrustDomain   spiffeid.TrustDomain
	SocketPath    string // Workload API socket (see workload.Listen for its directory)
	DataDir       string
	Now           func() time.Time
	Log           *slog.Logger
	Registry      *prometheus.Registry // metrics; nil: not exported
	// InventoryInterval is how often the inventory is reported to the
	// server (10s when zero).
	InventoryInterval time.Duration
	// Netpol is off, report or enforce (package netpol; netpol.go):
	// whether the host's network policy table is installed, and whether
	// it drops or only counts. Placements are reported in every mode.
	Netpol string
	// NetpolInterval is how often the table is refreshed (2s when zero
	// and enforcing or reporting).
	NetpolInterval time.Duration
	// NetpolNetNS, if set, is the network namespace (a path such as
	// /var/run/netns/NAME) whose firewall the agent manages; the agent's
	// own by default.
	NetpolNetNS string
	// NetpolExemptPorts are never reported as a service's ports, so never
	// governed (22 by default, from the CLI); the server's own port is
	// always exempt.
	NetpolExemptPorts []uint16
	// Attest is how the agent proves its node when it has no valid agent
	// SVID: AttestJoinToken (the default), AttestX509PoP or AttestTPM.
	Attest string
	// X509PoPCertFile (PEM chain, leaf first) and X509PoPKeyFile (its
	// private key, mode 0600) are the node's certificate for x509pop.
	X509PoPCertFile, X509PoPKeyFile string
	// TPM is the TPM for tpm attestation: a device (/dev/tpmrm0, the
	// default) or tcp:HOST:PORT (swtpm's server socket).
	TPM string
	// Kubelet, when set, is asked for the k8s:* selectors of callers
	// running in a pod's container (package kubelet); nil: not asked.
	Kubelet *kubelet.Config
}

// Agent is a running node agent. It implements workload.Source.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	client       *api.Client // mTLS with the agent SVID
	attestClient *api.Client // server-authenticated TLS only

	mu        sync.Mutex
	td        spiffeid.TrustDomain
	svid      *held
	bundle    []*x509.Certificate
	jwtBundle []byte
	// federated are the bundles of the trust domains this one federates
	// with, from the last sync (not cached: until the first sync after a
	// restart, workloads get only their own trust domain's bundle).
	federated []workload.FederatedBundle
	revision  int64
	// entries are the entries of the last sync, each held once, parsed
	// and filed by owner as they were decoded (entries.go); nil before
	// the first.
	entries *entrySet
	revoked map[string]struct{}
	// reissueRoot, during a burn-down, is the root every SVID must
	// descend from (api.SyncResponse.ReissueUnlessRoot).
	reissueRoot string
	workloads   map[string]*held // by entry ID: minted on first request (Mint), not for every entry
	// wanted is when a workload last asked for each entry's SVID; an SVID
	// nobody asked for during its whole life is dropped, not renewed.
	wanted   map[string]time.Time
	minting  map[string]chan struct{} // entries being minted; closed when done
	snap     *workload.Snapshot
	changed  chan struct{}
	jwtCache map[string]jwtCached
	warned   map[string]bool // entries named by warnUnservable (New's and the sync loop's, not under mu)

	wake chan struct{} // reschedules the rotation loop
	save chan struct{} // asks the saver to write the cache (saveSoon)
	// saveMu orders cache writes; gen numbers each marshalled state so an
	// older one is never written over a newer (state.go).
	saveMu         sync.Mutex
	gen, genOnDisk uint64
	// netpolKick makes the network policy loop refresh now: the server's
	// state moved (a policy changed, say).
	netpolKick chan struct{}
}

type jwtCached struct {
	token   string
	renewAt time.Time
}

// New prepares an agent: it loads the cache and the bootstrap bundle. Run
// attests (if needed) and serves.
func New(cfg Config) (*Agent, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" || cfg.SocketPath == "" || cfg.ServerAddr == "" {
		return nil, errors.New("agent: --server, --socket and --data are required")
	}
	// The cache holds keys and the trust bundle: nobody else may be able
	// to replace it, or the directory it is in.
	dataDir, err := safedir.Make(cfg.DataDir, "the agent's data directory", os.Geteuid(), 0o700)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cfg.DataDir = dataDir
	// A cache group or others may read gives away the agent's key and
	// the workloads' SVID keys.
	if err := secretfile.CheckPrivate(filepath.Join(dataDir, "cache.json"), "the agent's cache: its key, the workloads' keys, the trust bundle"); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log, now: cfg.Now, td: cfg.TrustDomain,
		revoked: map[string]struct{}{}, workloads: map[string]*held{}, changed: make(chan struct{}),
		wanted: map[string]time.Time{}, minting: map[string]chan struct{}{},
		jwtCache: map[string]jwtCached{}, wake: make(chan struct{}, 1), save: make(chan struct{}, 1),
		netpolKick: make(chan struct{}, 1), warned: map[string]bool{},
	}
	a.metrics = newMetrics(cfg.Registry, a)
	if err := a.loadCache(); err != nil {
		return nil, err
	}
	if len(a.bundle) == 0 {
		if cfg.BundleFile == "" {
			return nil, errors.New("agent: no cached state; --ca-bundle (the server's bundle.pem) is needed for the first start")
		}
		b, err := os.ReadFile(cfg.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("agent: ca bundle: %w", err)
		}
		if a.bundle, err = svid.ParsePEM(b); err != nil {
			return nil, fmt.Errorf("agent: ca bundle %s: %w", cfg.BundleFile, err)
		}
	}
	if a.td.IsZero() {
		td, err := trustDomainOf(a.bundle)
		if err != nil {
			return nil, err
		}
		a.td = td
	}
	base := "https://" + cfg.ServerAddr
	mtls := tlsconfig.MTLSClientConfig(a, a, ids.AuthorizeServer(a.td))
	mtls.MinVersion = tls.VersionTLS13
	a.client = &api.Client{BaseURL: base, HTTP: &http.Client{Transport: &http.Transport{
		TLSClientConfig: mtls, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second,
	}}}
	plain := tlsconfig.TLSClientConfig(a, ids.AuthorizeServer(a.td))
	plain.MinVersion = tls.VersionTLS13
	a.attestClient = &api.Client{BaseURL: base, HTTP: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: plain}}}
	a.publishLocked()
	return a, nil
}

// trustDomainOf reads the trust domain from the SPIFFE ID of a bundle root.
func trustDomainOf(roots []*x509.Certificate) (spiffeid.TrustDomain, error) {
	for _, r := range roots {
		for _, u := range r.URIs {
			if id, err := spiffeid.FromURI(u); err == nil {
				return id.TrustDomain(), nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errors.New("agent: the bundle names no trust domain; pass --trust-domain")
}

// GetX509SVID returns the agent's own SVID (x509svid.Source, for mTLS to the server).
func (a *Agent) GetX509SVID() (*x509svid.SVID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.svid == nil {
		return nil, errors.New("agent: not attested")
	}
	return &x509svid.SVID{ID: a.svid.ID, Certificates: a.svid.Chain, PrivateKey: a.svid.Key}, nil
}

// GetX509BundleForTrustDomain returns the current bundle (x509bundle.Source).
func (a *Agent) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if td != a.td {
		return nil, fmt.Errorf("agent: no bundle for trust domain %q", td.Name())
	}
	return x509bundle.FromX509Authorities(a.td, a.bundle), nil
}

// Snapshot implements workload.Source.
func (a *Agent) Snapshot() (*workload.Snapshot, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snap, a.changed
}

// ID returns the agent's SPIFFE ID (zero before attestation).
func (a *Agent) ID() spiffeid.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.svid == nil {
		return spiffeid.ID{}
	}
	return a.svid.ID
}

// publishLocked builds a new snapshot and wakes every Workload API stream.
// Every served entry is in it: with its SVID if one is held and valid,
// else as unminted, to be minted when a workload it matches asks (Mint).
// The entries and their index are shared with the previous snapshot
// (workload.Entries): a snapshot costs the SVIDs held, not the entries.
func (a *Agent) publishLocked() {
	snap := &workload.Snapshot{TrustDomain: a.td, Bundle: a.bundle, JWTBundle: a.jwtBundle, Federated: a.federated}
	if a.entries != nil {
		now := a.now()
		for entryID, h := range a.workloads {
			i := a.entries.find(entryID)
			// An expired SVID is not served (better nothing than a
			// certificate peers refuse): the entry is unminted again.
			if i < 0 || !now.Before(h.Chain[0].NotAfter) {
				continue
			}
			id := a.entries.served[i]
			id.SpiffeID, id.Chain, id.Key = h.ID, h.Chain, h.Key
			snap.Identities = append(snap.Identities, id)
		}
		slices.SortFunc(snap.Identities, func(x, y workload.Identity) int { return strings.Compare(x.EntryID, y.EntryID) })
		snap.IndexEntries(a.entries.index)
	}
	a.snap = snap
	close(a.changed)
	a.changed = make(chan struct{})
}

// mintTimeout bounds a first request's wait for its SVIDs.
const mintTimeout = 15 * time.Second

// Mint implements workload.Minter: it mints, now, the SVIDs of the entries
// that have none (or an expired one), and records that the entries are in
// use. Concurrent first requests for one entry share one mint. The mint
// runs on its own deadline, not the caller's: a client that gives up does
// not fail the others waiting for the same SVID.
func (a *Agent) Mint(ctx context.Context, entryIDs []string) error {
	now := a.now()
	a.mu.Lock()
	var todo []api.Entry
	var mine, wait []chan struct{}
	es := a.entries
	for _, id := range entryIDs {
		a.wanted[id] = now
		if h := a.workloads[id]; h != nil && now.Before(h.Chain[0].NotAfter) {
			continue
		}
		if ch, ok := a.minting[id]; ok {
			wait = append(wait, ch)
			continue
		}
		i := es.find(id)
		if i < 0 {
			continue
		}
		ch := make(chan struct{})
		a.minting[id] = ch
		mine = append(mine, ch)
		todo = append(todo, es.entry(i))
	}
	a.mu.Unlock()
	var err error
	if len(todo) > 0 {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mintTimeout)
		err = a.mint(mctx, todo)
		cancel()
		a.mu.Lock()
		for _, e := range todo {
			delete(a.minting, e.ID)
		}
		a.mu.Unlock()
		for _, ch := range mine {
			close(ch)
		}
		select { // the rotation loop learns of the new renewal times
		case a.wake <- struct{}{}:
		default:
		}
	}
	for _, ch := range wait {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// Run attests if needed, then serves the Workload API and keeps everything
// current until ctx is done. The socket comes first: an agent that cannot
// listen safely stops before it spends its join token.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := workload.Listen(a.cfg.SocketPath, os.Geteuid())
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var attestor workload.Attestor
	if a.cfg.Kubelet != nil {
		kc, err := kubelet.New(*a.cfg.Kubelet)
		if err != nil {
			ln.Close()
			return fmt.Errorf("agent: %w", err)
		}
		attestor.Kubelet = kc
	}
	if err := a.ensureAttested(ctx); err != nil {
		ln.Close()
		return err
	}
	wl := workload.NewServer(a, attestor, a.log, a.metrics)
	// Refused callers are audit entries, spooled on disk and shipped to
	// the server's log with the agent's SVID (nothing lost while it is away).
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(a.cfg.DataDir, "audit-spool"), Log: a.log, Registry: a.cfg.Registry,
		Sender: spool.APISender{Client: a.client}})
	if err != nil {
		ln.Close()
		return fmt.Errorf("agent: audit spool: %w", err)
	}
	defer sp.Close()
	wl.SetRecorder(sp, a.ID())
	// The inventory of what runs, and the scan gate (inventory.go).
	inv := newInventoryReporter(a.client, a.log, a.now, a.cfg.InventoryInterval, filepath.Join(a.cfg.DataDir, "scan-state.json"),
		func() { a.mu.Lock(); a.publishLocked(); a.mu.Unlock() })
	// Placements and the host's network policy (netpol.go).
	nsPath := a.cfg.NetpolNetNS
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	netns, err := netpol.NetNSOf(nsPath)
	if err != nil {
		ln.Close()
		return fmt.Errorf("agent: %w", err)
	}
	exempt := slices.Clone(a.cfg.NetpolExemptPorts)
	if _, port, err := net.SplitHostPort(a.cfg.ServerAddr); err == nil {
		if n, err := strconv.ParseUint(port, 10, 16); err == nil {
			exempt = append(exempt, uint16(n))
		}
	}
	tracker := newPlacementTracker(inv, "/proc", netns, exempt, filepath.Join(a.cfg.DataDir, "netpol-processes.json"), a.log)
	wl.SetInspector(tracker)
	fw, err := a.openFirewall()
	if err != nil {
		ln.Close()
		return err
	}
	npDone := make(chan struct{})
	go func() { defer close(npDone); a.newNetpolLoop(tracker, fw, sp).run(ctx) }()
	defer func() { <-npDone }() // the table is removed before Run returns
	errc := make(chan error, 3)
	go a.saver(ctx)
	go inv.run(ctx)
	go func() { errc <- wl.Serve(ctx, ln) }()
	go func() { a.syncLoop(ctx); errc <- nil }()
	go func() { a.rotateLoop(ctx); errc <- nil }()
	a.log.Info("agent running", "spiffe_id", a.ID().String(), "socket", a.cfg.SocketPath, "server", a.cfg.ServerAddr)
	<-ctx.Done()
	os.Remove(a.cfg.SocketPath)
	return nil
}

func (a *Agent) ensureAttested(ctx context.Context) error {
	a.mu.Lock()
	valid := a.svid != nil && a.now().Before(a.svid.Chain[0].NotAfter)
	var expired time.Time
	if a.svid != nil {
		expired = a.svid.Chain[0].NotAfter
	}
	a.mu.Unlock()
	if valid {
		if a.cfg.JoinToken != "" || a.cfg.JoinTokenFile != "" {
			a.log.Info("ignoring the join token: the cached agent SVID is still valid")
		}
		return nil
	}
	switch a.cfg.Attest {
	case AttestX509PoP:
		return a.attestX509PoP(ctx)
	case AttestTPM:
		return a.attestTPM(ctx)
	}
	token := a.cfg.JoinToken
	if token == "" && a.cfg.JoinTokenFile != "" {
		b, err := secretfile.Read(a.cfg.JoinTokenFile)
		if err != nil {
			return fmt.Errorf("agent: join token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		if !expired.IsZero() {
			return fmt.Errorf("agent: the cached agent SVID expired at %s; attest again with a new join token (--join-token-file or RAMPART_JOIN_TOKEN)", expired.Format(time.RFC3339))
		}
		return errors.New("agent: not attested yet; a join token is needed (rampart token create; give it with --join-token-file FILE or RAMPART_JOIN_TOKEN)")
	}
	key, csr, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	var resp api.AttestResponse
	if err := a.attestClient.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: token, CSR: csr}, &resp); err != nil {
		return fmt.Errorf("agent: attestation failed: %w", err)
	}
	return a.attested(resp, key)
}

// attested keeps the SVID and bundle a successful attestation returned.
func (a *Agent) attested(resp api.AttestResponse, key crypto.Signer) error {
	h, err := a.heldFrom(resp.SVID, key, api.Entry{})
	if err != nil {
		return err
	}
	bundle, err := parseChain(resp.Bundle)
	if err != nil {
		return fmt.Errorf("agent: bundle from server: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.svid, a.bundle = h, bundle
	a.publishLocked()
	a.log.Info("attested", "spiffe_id", h.ID.String(), "not_after", h.Chain[0].NotAfter)
	return a.saveCache()
}

// heldFrom checks an SVID the server returned against the key we generated
// and the bundle, and wraps it.
func (a *Agent) heldFrom(sv api.X509SVID, key crypto.Signer, e api.Entry) (*held, error) {
	chain, err := parseChain(sv.Chain)
	if err != nil {
		return nil, fmt.Errorf("agent: svid from server: %w", err)
	}
	id, err := spiffeid.FromString(sv.SpiffeID)
	if err != nil {
		return nil, fmt.Errorf("agent: svid from server: %w", err)
	}
	if got, err := x509svid.IDFromCert(chain[0]); err != nil || got != id {
		return nil, fmt.Errorf("agent: svid from server names %v, expected %s", got, id)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := chain[0].PublicKey.(equaler); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("agent: svid from server does not certify our key")
	}
	now := a.now()
	return &held{ID: id, Chain: chain, Key: key, Entry: e, Received: now, RenewAt: renewTime(now, chain[0].NotAfter)}, nil
}

func newKeyAndCSR(id spiffeid.ID) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: csr: %w", err)
	}
	return key, csr, nil
}

// syncLoop long-polls the server for changes.
func (a *Agent) syncLoop(ctx context.Context) {
	backoff := minBackoff
	first := true
	for ctx.Err() == nil {
		path := "/v1/agent/sync"
		a.mu.Lock()
		if !first {
			path += "?revision=" + strconv.FormatInt(a.revision, 10) + "&wait=" + strconv.Itoa(int(syncWait/time.Second))
		}
		b := entryBuilder{unservable: a.warnUnservable, hint: a.entries.len()}
		a.mu.Unlock()
		var resp api.SyncResponse
		err := a.client.Stream(ctx, http.MethodGet, path, func(r io.Reader) error { return decodeStreamed(r, &resp, &b) })
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.metrics.syncErrors.Inc()
			a.metrics.serverUp.Set(0)
			var p *api.Problem
			if errors.As(err, &p) && p.Status == http.StatusForbidden {
				a.log.Error("the server refuses this agent (evicted or revoked); workloads keep their SVIDs until expiry; re-attest with a new join token", "err", err)
			} else {
				a.log.Warn("sync with the server failed; retrying", "err", err, "in", backoff.String())
			}
			sleep(ctx, jitter(backoff))
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		first = false
		backoff = minBackoff
		a.metrics.serverUp.Set(1)
		if err := a.applySync(resp, b.done()); err != nil {
			a.log.Error("applying sync failed", "err", err)
		}
		select {
		case a.netpolKick <- struct{}{}:
		default:
		}
	}
}

// applySync takes a sync: resp and its entries, decoded apart (resp's
// Entries are empty).
func (a *Agent) applySync(resp api.SyncResponse, entries *entrySet) error {
	bundle, err := parseChain(resp.Bundle)
	if err != nil {
		return fmt.Errorf("agent: bundle: %w", err)
	}
	// A federated bundle that cannot be read is left out, never the
	// sync: revocations and entries must not wait on another trust
	// domain's bundle.
	federated, ferr := federatedBundles(a.td, resp.FederatedBundles)
	if ferr != nil {
		a.log.Error("a federated bundle was left out", "err", ferr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revision, a.bundle, a.jwtBundle, a.entries = resp.Revision, bundle, resp.JWTBundle, entries
	a.federated = federated
	a.applyReissue(resp)
	a.revoked = make(map[string]struct{}, len(resp.Revoked))
	for _, s := range resp.Revoked {
		a.revoked[s] = struct{}{}
	}
	// Drop SVIDs whose entry is gone (or no longer served): the workload
	// must lose the identity.
	for id := range a.workloads {
		if entries.find(id) < 0 {
			delete(a.workloads, id)
		}
	}
	for id := range a.wanted {
		if entries.find(id) < 0 {
			delete(a.wanted, id)
		}
	}
	a.publishLocked()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	// Written by the saver, outside a.mu: workloads do not wait for the
	// disk, and a burst of syncs is written once.
	a.saveSoon()
	return nil
}

// warnUnservable names an entry the Workload API will not serve because
// it selects only by path or hash (stored before every entry needed a uid
// or gid selector), or does not parse, once per entry and agent run. It
// is called while the entries are decoded (entryBuilder), by New and then
// by the sync loop only, without a.mu: a.warned is theirs.
func (a *Agent) warnUnservable(e api.Entry, err error) {
	if a.warned[e.ID] {
		return
	}
	a.warned[e.ID] = true
	a.log.Warn("this entry will not be served; recreate it with a unix:uid or unix:gid selector", "entry_id", e.ID, "spiffe_id", e.SpiffeID, "err", err)
}

// rotateLoop renews the agent SVID and keeps one fresh SVID per entry.
func (a *Agent) rotateLoop(ctx context.Context) {
	for ctx.Err() == nil {
		next := a.reconcile(ctx)
		d := max(next.Sub(a.now()), 10*time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// reconcile does what is due and returns when to look again.
func (a *Agent) reconcile(ctx context.Context) time.Time {
	now := a.now()
	retry := now.Add(jitter(5 * time.Second))
	next := now.Add(time.Hour)

	a.mu.Lock()
	agentDue := a.svid != nil && (!now.Before(a.svid.RenewAt) || a.fromOldRoot(a.svid))
	a.mu.Unlock()
	if agentDue {
		if err := a.renewAgent(ctx); err != nil {
			a.log.Warn("renewing the agent SVID failed; retrying", "err", err)
			next = retry
		}
	}

	a.mu.Lock()
	var due []api.Entry
	dropped := false
	// Only the SVIDs held are read (entries without one are minted when
	// a workload asks for them: Mint).
	for entryID, h := range a.workloads {
		i := a.entries.find(entryID)
		if i < 0 {
			continue // dropped by the next sync
		}
		e := a.entries.entry(i)
		_, revoked := a.revoked[h.serial()]
		// During a burn-down an SVID of the old root is due at once.
		if now.Before(h.RenewAt) && sameEntry(h.Entry, e) && !revoked && !a.fromOldRoot(h) {
			continue
		}
		// Nobody asked for it during its whole life (no open stream woke
		// on its last rotation, no fetch since): the workload is gone.
		// Dropped, not renewed; minted again if it comes back.
		if a.wanted[e.ID].Before(h.Received) {
			delete(a.workloads, e.ID)
			dropped = true
			continue
		}
		due = append(due, e)
	}
	if dropped {
		a.publishLocked()
		if err := a.saveCache(); err != nil {
			a.log.Warn("saving the cache failed", "err", err)
		}
	}
	a.mu.Unlock()
	if len(due) > 0 {
		if err := a.mint(ctx, due); err != nil {
			a.log.Warn("minting workload SVIDs failed; retrying", "err", err)
			next = retry
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.svid != nil && a.svid.RenewAt.Before(next) {
		next = a.svid.RenewAt
	}
	for _, h := range a.workloads {
		if h.RenewAt.Before(next) {
			next = h.RenewAt
		}
	}
	return next
}

// applyReissue takes the burn-down's root from a sync. Call with a.mu
// held.
func (a *Agent) applyReissue(resp api.SyncResponse) { a.reissueRoot = resp.ReissueUnlessRoot }

// fromOldRoot says whether, during a burn-down, h descends from a root
// other than the one the server named: its intermediate's authority key
// ID is not the new root's subject key ID. Such an SVID is re-issued at
// once, before the server revokes it and drops its root. Call with a.mu
// held.
func (a *Agent) fromOldRoot(h *held) bool {
	if a.reissueRoot == "" || len(h.Chain) < 2 {
		return false
	}
	return hex.EncodeToString(h.Chain[1].AuthorityKeyId) != a.reissueRoot
}

// sameEntry says whether an SVID minted for entry a is still right for b.
// Selectors are compared as sets: an SVID held in an older cache recorded
// them as the server sent them, the agent now in their normal order.
func sameEntry(a, b api.Entry) bool {
	set := func(ss []string) []string { return slices.Compact(slices.Sorted(slices.Values(ss))) }
	return a.SpiffeID == b.SpiffeID && a.X509TTLSeconds == b.X509TTLSeconds &&
		slices.Equal(set(a.Selectors), set(b.Selectors)) && slices.Equal(a.DNSNames, b.DNSNames)
}

func (a *Agent) renewAgent(ctx context.Context) error {
	id := a.ID()
	key, csr, err := newKeyAndCSR(id)
	if err != nil {
		return err
	}
	var resp api.AttestResponse
	if err := a.client.Do(ctx, http.MethodPost, "/v1/agent/renew", api.RenewRequest{CSR: csr}, &resp); err != nil {
		return err
	}
	h, err := a.heldFrom(resp.SVID, key, api.Entry{})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.svid = h
	err = a.saveCache()
	a.mu.Unlock()
	a.metrics.rotations.WithLabelValues("agent").Inc()
	// New connections present the new certificate.
	a.client.HTTP.Transport.(*http.Transport).CloseIdleConnections()
	a.log.Info("renewed the agent SVID", "not_after", h.Chain[0].NotAfter)
	return err
}

// mint requests new SVIDs for the given entries, in batches.
func (a *Agent) mint(ctx context.Context, entries []api.Entry) error {
	const batch = 500
	var firstErr error
	for len(entries) > 0 {
		n := min(batch, len(entries))
		if err := a.mintBatch(ctx, entries[:n]); err != nil && firstErr == nil {
			firstErr = err
		}
		entries = entries[n:]
	}
	return firstErr
}

func (a *Agent) mintBatch(ctx context.Context, entries []api.Entry) error {
	keys := make([]crypto.Signer, len(entries))
	req := api.SignRequest{Requests: make([]api.SignItem, len(entries))}
	for i, e := range entries {
		id, err := spiffeid.FromString(e.SpiffeID)
		if err != nil {
			return fmt.Errorf("agent: entry %s: %w", e.ID, err)
		}
		key, csr, err := newKeyAndCSR(id)
		if err != nil {
			return err
		}
		keys[i] = key
		req.Requests[i] = api.SignItem{EntryID: e.ID, CSR: csr}
	}
	var resp api.SignResponse
	if err := a.client.Do(ctx, http.MethodPost, "/v1/agent/svids", req, &resp); err != nil {
		return err
	}
	if len(resp.Results) != len(entries) {
		return fmt.Errorf("agent: server answered %d results for %d requests", len(resp.Results), len(entries))
	}
	var firstErr error
	minted := map[string]*held{}
	for i, res := range resp.Results {
		if res.Error != "" || res.SVID == nil {
			a.log.Warn("server refused an SVID", "entry_id", entries[i].ID, "err", res.Error)
			if firstErr == nil {
				firstErr = fmt.Errorf("agent: entry %s: %s", entries[i].ID, res.Error)
			}
			continue
		}
		h, err := a.heldFrom(*res.SVID, keys[i], entries[i])
		if err != nil {
			return err
		}
		minted[entries[i].ID] = h
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, h := range minted {
		if a.entries.find(id) >= 0 { // the entry may have been deleted while we asked
			a.workloads[id] = h
			a.metrics.rotations.WithLabelValues("workload").Inc()
		}
	}
	a.publishLocked()
	// Written by the saver, not here: a workload waiting for its first
	// SVID does not wait for the disk. An SVID lost in a crash before the
	// write is minted again on the next request.
	a.saveSoon()
	return firstErr
}

// FetchJWTSVID implements workload.Source: JWT-SVIDs are fetched from the
// server and cached until half their life.
func (a *Agent) FetchJWTSVID(ctx context.Context, entryID string, audience []string) (string, error) {
	aud := slices.Clone(audience)
	slices.Sort(aud)
	b, _ := json.Marshal(aud)
	key := entryID + "\x00" + string(b)
	now := a.now()
	a.mu.Lock()
	c, ok := a.jwtCache[key]
	a.mu.Unlock()
	if ok && now.Before(c.renewAt) {
		return c.token, nil
	}
	var resp api.JWTSVIDResponse
	if err := a.client.Do(ctx, http.MethodPost, "/v1/agent/jwt-svids", api.JWTSVIDRequest{EntryID: entryID, Audience: audience}, &resp); err != nil {
		return "", err
	}
	a.mu.Lock()
	for k, v := range a.jwtCache {
		if !now.Before(v.renewAt) {
			delete(a.jwtCache, k)
		}
	}
	a.jwtCache[key] = jwtCached{token: resp.Token, renewAt: now.Add(resp.ExpiresAt.Sub(now) / 2)}
	a.mu.Unlock()
	return resp.Token, nil
}

func jitter(d time.Duration) time.Duration {
	var b [2]byte
	rand.Read(b[:])
	f := 0.8 + 0.4*float64(uint16(b[0])<<8|uint16(b[1]))/65536
	return time.Duration(float64(d) * f)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

var _ workload.Source = (*Agent)(nil)

// CachePath is where the agent keeps its state.
func (a *Agent) cachePath() string { return filepath.Join(a.cfg.DataDir, "cache.json") }

// federatedBundles reads the federated bundles of a sync (SPIFFE bundle
// documents by trust domain name), ordered by name. One that cannot be
// read, or that names this agent's own trust domain (ours come only from
// the sync's Bundle), is left out and named in the error.
func federatedBundles(own spiffeid.TrustDomain, docs map[string]json.RawMessage) ([]workload.FederatedBundle, error) {
	out := make([]workload.FederatedBundle, 0, len(docs))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(docs)) {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("agent: federated bundle %q: %w", name, err))
			continue
		}
		if td == own {
			errs = append(errs, fmt.Errorf("agent: a federated bundle names this trust domain %s", td))
			continue
		}
		b, err := spiffebundle.Parse(td, docs[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("agent: federated bundle of %s: %w", td, err))
			continue
		}
		fb := workload.FederatedBundle{TrustDomain: td, X509: b.X509Authorities()}
		if len(b.JWTAuthorities()) > 0 {
			if fb.JWT, err = b.JWTBundle().Marshal(); err != nil {
				errs = append(errs, fmt.Errorf("agent: federated bundle of %s: %w", td, err))
				continue
			}
		}
		out = append(out, fb)
	}
	return out, errors.Join(errs...)
}
