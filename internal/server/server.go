package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/acme"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/intake"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/inventory"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/netpol/netpolapi"
	"github.com/rampartsec/rampart/internal/nodeattest"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/oidcdiscovery"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/registration"
	"github.com/rampartsec/rampart/internal/rekey"
	"github.com/rampartsec/rampart/internal/respond"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/secretfile"
	"github.com/rampartsec/rampart/internal/store"
)

// Defaults.
const (
	DefaultX509TTL      = time.Hour
	DefaultJWTTTL       = 5 * time.Minute
	DefaultAgentTTL     = time.Hour
	DefaultJoinTokenTTL = 10 * time.Minute
	// syncPoll is how often the server checks the store for changes made by
	// other replicas; changes made by this replica wake agents at once.
	syncPoll = time.Second
	// maxSyncWait bounds an agent's long poll.
	maxSyncWait = 30 * time.Second
)

// Config configures a server. Zero values take the defaults.
type Config struct {
	DataDir     string
	Listen      string // host:port of the HTTPS API
	TrustDomain spiffeid.TrustDomain
	DNSNames    []string // extra names for the server certificate
	PostgresDSN string   // empty: SQLite in DataDir
	KEKFile     string   // default DataDir/keys/kek
	// Master says where the key-encryption key comes from (file,
	// passphrase or PKCS#11); its File defaults to KEKFile, its
	// SealedFile to DataDir/keys/kek.sealed.
	Master keywrap.MasterConfig

	UpstreamCertFile string // root(s) supplied from outside
	UpstreamKeyFile  string // its key; may be absent (kept offline)

	RootTTL         time.Duration
	IntermediateTTL time.Duration
	JWTKeyTTL       time.Duration
	DefaultX509TTL  time.Duration
	DefaultJWTTTL   time.Duration
	AgentTTL        time.Duration
	JoinTokenTTL    time.Duration
	// DownstreamMaxTTL bounds the life of a downstream CA (POST
	// /v1/ca/downstream, for workloads of downstream entries); 0: none
	// is minted, and intermediates keep path length 0.
	DownstreamMaxTTL time.Duration

	// NodeAttestX509PoPCAs are PEM CA bundles a node certificate must
	// chain to for x509pop node attestation (empty: x509pop is off).
	NodeAttestX509PoPCAs []string
	// NodeAttestTPMEKHashes are the SHA-256 (hex) of the TPM endorsement
	// keys' public areas allowed for tpm node attestation (empty: off).
	NodeAttestTPMEKHashes []string

	// DetectRules is a detection rules file (nil: the default rules).
	DetectRules []byte
	// Approvers are workload SPIFFE IDs (or "ID/*" patterns) that may
	// approve playbook steps with their SVID (POST
	// /v1/workload/approvals/{ref}): an interim until operators' roles
	// bind workloads to approval.grant on the admin routes.
	Approvers []string
	// PlaybookWebhooksLocal lets playbook webhooks and Slack notices reach
	// loopback and link-local addresses (refused by default).
	PlaybookWebhooksLocal bool

	// AuditSegmentEntries is how many audit entries a sealed, compressed
	// segment holds (0: audit.DefaultSegmentEntries).
	AuditSegmentEntries int64
	// AuditArchive, if set, receives a copy of every sealed segment and
	// checkpoint (an S3 bucket; see package objstore).
	AuditArchive audit.ObjectStore
	// AuditForwardTo, on a replica that does not keep the deployment's
	// audit log, is the API address (host:port) of the one that does:
	// entries are spooled and shipped there (see forward.go).
	AuditForwardTo string

	// Backup, if set, makes backups and drills on a schedule (package backup).
	Backup *BackupConfig

	// ACME configures the ACME server (acmeapi.go).
	ACME ACMEConfig

	// AdminTokenOff refuses the break-glass admin token (operators sign
	// in by name; rampart server --admin-token=off).
	AdminTokenOff bool

	// Issuer is the OAuth/OIDC issuer URL; empty: https://LISTEN (an
	// unspecified host becomes localhost).
	Issuer string
	OAuth  OAuthConfig

	// JWTIssuer, if set, is the iss claim of JWT-SVIDs, and the server
	// publishes OIDC discovery for it (package oidcdiscovery): HTTPS, with
	// a path. Empty: JWT-SVIDs carry no iss and no discovery is served.
	JWTIssuer string

	// Federation configures the bundle endpoint and the refreshing of
	// other trust domains' bundles (federation.go).
	Federation FederationConfig

	Now func() time.Time
	Log *slog.Logger
}

// OAuthConfig tunes the authorization server; zero values take the
// oauth package's defaults.
type OAuthConfig struct {
	Algorithm       jose.SignatureAlgorithm
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	MaxActDepth     int           // hops of token exchange (nested act); 0: oauth.DefaultMaxActDepth
	DeviceInterval  time.Duration // device flow polling interval; 0: oauth.DeviceInterval
}

// Server is a running control plane.
type Server struct {
	cfg Config
	// x509pop verifies x509pop node attestation (nil: off).
	x509pop *nodeattest.X509PoP
	// tpm verifies tpm node attestation (nil: off).
	tpm   *nodeattest.TPMVerifier
	store store.Store
	ca    *identity.CA
	audit *audit.Log
	// keeper signs checkpoints, seals and archives (the replica that
	// keeps the log only).
	keeper *audit.Keeper
	// On the replica that keeps the log, releaseAuditLog gives the store's
	// claim back; on the others, forward ships entries to it.
	releaseAuditLog func()
	forward         *spool.Spool
	intake          *intake.Intake
	refusals        *audit.Refusals // refusals recorded once per kind and interval
	detector        *detect.Detector
	alerts          *detect.AlertAPI
	oauth           *oauth.Provider // nil until the issuer address is known
	accounts        *oauth.Accounts // OAuth clients and users
	operators       *operator.API   // operators and their roles
	operatorAuth    *operator.Authenticator
	registrar       *registration.Registrar
	scan            *inventory.API          // vulnerability database, gates, inventory
	netpol          *netpolapi.API          // placements and the network view
	backup          *backup.Runner          // nil: no backups configured
	acme            *acme.Server            // nil: ACME disabled
	oidc            *oidcdiscovery.Provider // nil: no JWT issuer configured
	kmsAPI          *kms.API                // the key store, its key-use policy and its API
	kmsMaint        *kms.Maintainer         // the key store's schedules
	rekey           *rekey.Rekeyer          // burn-down
	respond         *respond.Service        // playbooks, quarantines, incidents
	quarantine      *mtls.Quarantine        // the identities quarantined, as of the last refresh
	respondAPI      *respond.API
	caMaint         *identity.Maintainer
	wrapper         *keywrap.Wrapper
	log             *slog.Logger
	now             func() time.Time
	metrics         *metrics
	reg             *prometheus.Registry

	adminTokenHash [32]byte
	// metricsTokenHash: the bearer token /metrics wants (DATA/metrics.token).
	metricsTokenHash [32]byte

	cert  *identity.ServerCert // the API's own certificate
	peers *identity.Verifier   // callers' SVIDs

	feed *feed // the store's revision, long polls' wake-up

	fed *federationState // relationships with other trust domains
}

// New initialises (first start) or opens (restart) the data directory, the
// store and the CA.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: a data directory is required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("server: a trust domain is required")
	}
	cfg = withDefaults(cfg)
	// The data dir holds the admin token, the keys and the audit log: no
	// other local user may be able to replace it or what is in it.
	dataDir, err := safedir.Make(cfg.DataDir, "the server's data directory", os.Geteuid(), 0o700)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	cfg.DataDir = dataDir
	if err := checkPrivateFiles(cfg); err != nil {
		return nil, err
	}
	if err := checkTrustDomain(cfg.DataDir, cfg.TrustDomain); err != nil {
		return nil, err
	}
	wrapper, err := keywrap.Load(cfg.Master)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	var st store.Store
	if cfg.PostgresDSN != "" {
		st, err = store.OpenPostgres(ctx, cfg.PostgresDSN)
	} else {
		st, err = store.OpenSQLite(filepath.Join(cfg.DataDir, "rampart.db"))
	}
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s, err := newWithStore(ctx, cfg, st, wrapper)
	if err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

func withDefaults(cfg Config) Config {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.KEKFile == "" {
		cfg.KEKFile = filepath.Join(cfg.DataDir, "keys", "kek")
	}
	if cfg.Master.File == "" {
		cfg.Master.File = cfg.KEKFile
	}
	if cfg.Master.SealedFile == "" {
		cfg.Master.SealedFile = filepath.Join(cfg.DataDir, "keys", "kek.sealed")
	}
	if cfg.DefaultX509TTL == 0 {
		cfg.DefaultX509TTL = DefaultX509TTL
	}
	if cfg.DefaultJWTTTL == 0 {
		cfg.DefaultJWTTTL = DefaultJWTTTL
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = DefaultAgentTTL
	}
	if cfg.JoinTokenTTL == 0 {
		cfg.JoinTokenTTL = DefaultJoinTokenTTL
	}
	return cfg
}

func newWithStore(ctx context.Context, cfg Config, st store.Store, wrapper *keywrap.Wrapper) (*Server, error) {
	up, err := identity.LoadUpstream(cfg.UpstreamCertFile, cfg.UpstreamKeyFile)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.JWTIssuer != "" {
		if _, err := oidcdiscovery.ParseIssuer(cfg.JWTIssuer); err != nil {
			return nil, fmt.Errorf("server: --jwt-issuer: %w", err)
		}
	}
	ca, err := identity.New(ctx, identity.Config{
		TrustDomain: cfg.TrustDomain, Store: st, Wrapper: wrapper, Now: cfg.Now, Log: cfg.Log,
		RootTTL: cfg.RootTTL, IntermediateTTL: cfg.IntermediateTTL, JWTKeyTTL: cfg.JWTKeyTTL, Upstream: up,
		JWTIssuer: cfg.JWTIssuer, Downstream: cfg.DownstreamMaxTTL > 0,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{
		cfg: cfg, store: st, ca: ca, log: cfg.Log, now: cfg.Now, wrapper: wrapper,
		feed: newFeed(), reg: prometheus.NewRegistry(), quarantine: &mtls.Quarantine{},
	}
	s.refusals = audit.NewRefusals(cfg.Now, s.record)
	if len(cfg.NodeAttestX509PoPCAs) > 0 {
		if s.x509pop, err = nodeattest.LoadX509PoP(cfg.NodeAttestX509PoPCAs); err != nil {
			return nil, fmt.Errorf("server: --node-attest-x509pop-ca: %w", err)
		}
	}
	if len(cfg.NodeAttestTPMEKHashes) > 0 {
		if s.tpm, err = nodeattest.NewTPMVerifier(cfg.NodeAttestTPMEKHashes); err != nil {
			return nil, fmt.Errorf("server: --node-attest-tpm-ek-hash: %w", err)
		}
	}
	if cfg.JWTIssuer != "" {
		if s.oidc, err = oidcdiscovery.New(cfg.JWTIssuer, ca.JWTBundle); err != nil {
			return nil, fmt.Errorf("server: --jwt-issuer: %w", err)
		}
	}
	s.metrics = newMetrics(s.reg, ca)
	s.registrar = &registration.Registrar{TrustDomain: cfg.TrustDomain, Store: st, CA: ca, MaxTTL: cfg.IntermediateTTL,
		JoinTokenTTL: cfg.JoinTokenTTL, AgentTTL: cfg.AgentTTL, X509TTL: cfg.DefaultX509TTL, JWTTTL: cfg.DefaultJWTTTL, Now: cfg.Now}
	s.alerts = &detect.AlertAPI{Store: st, Event: s.event, Now: cfg.Now, Log: cfg.Log}
	s.accounts = &oauth.Accounts{Store: st, Wrapper: wrapper, Tokens: s.tokens, Event: s.event, Now: cfg.Now, Log: cfg.Log}
	ops, ok := store.Operators(st)
	if !ok {
		return nil, errors.New("server: the store has no operator tables")
	}
	s.operators = &operator.API{Store: operatorStore{st, ops}, TrustDomain: cfg.TrustDomain, Caller: callerFrom, Event: s.event, Now: cfg.Now,
		RevokeSessions: func(ctx context.Context, username, reason string) error {
			if s.oauth == nil {
				return errors.New("the authorization server is not running")
			}
			_, err := s.oauth.RevokeUser(ctx, username, reason)
			return err
		}}
	s.operatorAuth = &operator.Authenticator{Store: operatorStore{st, ops}, Now: cfg.Now, Verify: s.verifyOperatorToken,
		ServesHost: func(host string) bool { return s.cert.Serves(host) },
		DPoP:       &dpop.Checker{Now: cfg.Now, Replay: operator.StoreReplay{Store: st, Quota: operator.DefaultProofQuota, Now: cfg.Now}}}
	s.caMaint = &identity.Maintainer{CA: ca, Changed: s.notify, Now: cfg.Now, Log: cfg.Log, Registry: s.reg}
	keys, err := kms.New(ctx, kms.Config{Store: st, Wrapper: wrapper, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.kmsAPI = kms.NewAPI(kms.API{Service: keys, Access: kms.NewAccess(cfg.TrustDomain), Caller: agentFrom, Append: s.appendAudit, Event: s.event,
		Refused: s.refused, Now: cfg.Now, Log: cfg.Log}, s.reg)
	s.kmsMaint = &kms.Maintainer{Service: keys, Actor: audit.Actor{SpiffeID: kms.ServiceID(cfg.TrustDomain).String()},
		Record: s.record, Changed: s.notify, Now: cfg.Now, Log: cfg.Log}
	s.cert = &identity.ServerCert{CA: ca, DNSNames: cfg.DNSNames, Listen: cfg.Listen, Now: cfg.Now, Log: cfg.Log,
		OnIssue: s.metrics.svidsIssued.WithLabelValues("server").Inc}
	s.peers = &identity.Verifier{CA: ca, Now: cfg.Now}
	if s.rekey, err = s.newRekeyer(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.scan = &inventory.API{Entries: st, Caller: agentFrom, Record: s.record, Event: s.event, Refused: s.refused,
		Actor: audit.Actor{SpiffeID: identity.ServerID(cfg.TrustDomain).String()}, Operator: operatorActor, Now: cfg.Now, Log: cfg.Log}
	if ss, ok := store.Scan(st); ok { // nil: the store has no scan tables
		s.scan.Inventory = &inventory.Inventory{Store: ss, Now: cfg.Now}
	}
	s.netpol = &netpolapi.API{Policies: st, Entries: st, Caller: agentFrom, Refused: s.refused, Now: cfg.Now, Log: cfg.Log}
	if ns, ok := store.Netpol(st); ok {
		s.netpol.Placements = ns
	}
	if err := s.newFederation(); err != nil {
		return nil, err
	}
	if err := s.newRespond(cfg.AuditForwardTo == ""); err != nil {
		return nil, err
	}
	if cfg.AuditForwardTo == "" {
		err = s.openAuditLog(ctx)
	} else {
		err = s.openForwarder(cfg.AuditForwardTo)
	}
	if err != nil {
		return nil, err
	}
	// From here on a failed start gives the audit log (or the spool)
	// back, so that the process can try again.
	started := false
	defer func() {
		if !started {
			s.closeAudit()
		}
	}()
	if err := s.startBackup(); err != nil {
		return nil, err
	}
	for file, hash := range map[string]*[32]byte{"admin.token": &s.adminTokenHash, "metrics.token": &s.metricsTokenHash} {
		token, err := secretfile.LoadOrCreateToken(filepath.Join(cfg.DataDir, file), "rpa_")
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		*hash = sha256.Sum256([]byte(token))
	}
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	if err := s.startACME(ctx, wrapper); err != nil {
		return nil, err
	}
	if iss := issuerFor(cfg, cfg.Listen); iss != "" && !strings.HasSuffix(iss, ":0") {
		if err := s.startOAuth(ctx, iss, wrapper); err != nil {
			return nil, err
		}
	}
	started = true
	return s, nil
}

// openAuditLog claims the deployment's audit log in the store and opens
// it, with its ingestion state, archive and detection.
func (s *Server) openAuditLog(ctx context.Context) error {
	release, err := store.WaitHoldAuditLog(ctx, s.store)
	if errors.Is(err, store.ErrAuditLogHeld) {
		return fmt.Errorf("server: %w: a deployment keeps one audit log; start this replica with --audit-forward-to HOLDER-ADDRESS (the API address of the replica that keeps it)", err)
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.releaseAuditLog = release
	var signer note.Signer
	if s.audit, signer, err = openAudit(s.cfg); err != nil {
		release()
		return err
	}
	s.keeper = &audit.Keeper{Log: s.audit, Signer: signer, Refusals: s.refusals, Record: s.record, Now: s.now, Logger: s.log, Registry: s.reg,
		Actor: audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()}, Source: "server"}
	if s.cfg.AuditArchive != nil {
		s.keeper.Archiver = audit.NewArchiver(filepath.Join(s.cfg.DataDir, "audit"), s.cfg.AuditArchive)
		s.keeper.ArchiveName = fmt.Sprint(s.cfg.AuditArchive)
	}
	s.intake, err = intake.Load(intake.Config{TrustDomain: s.cfg.TrustDomain, StatePath: filepath.Join(s.cfg.DataDir, "audit-streams.json"),
		Policies: s.store, Revision: s.feed.current, Append: s.appendAudit, Now: s.now, Log: s.log, Registry: s.reg}, s.audit)
	if err != nil {
		s.closeAudit()
		return fmt.Errorf("server: %w", err)
	}
	s.keeper.AfterCheckpoint = s.intake.Snapshot
	s.detector, err = detect.NewDetector(detect.DetectorConfig{Rules: s.cfg.DetectRules, Dir: filepath.Join(s.cfg.DataDir, "audit"),
		Store: s.store, Append: s.appendAudit, OnAlert: s.respond.OnAlert, Now: s.now, Log: s.log, Registry: s.reg})
	if err != nil {
		s.closeAudit()
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// closeAudit publishes a last checkpoint and closes the log (or the
// forwarding spool) and gives the claim back.
func (s *Server) closeAudit() error {
	var err error
	if s.keeper != nil {
		err = s.keeper.Close()
	}
	if s.forward != nil {
		err = errors.Join(err, s.forward.Close())
	}
	if s.releaseAuditLog != nil {
		s.releaseAuditLog()
	}
	return err
}

// OAuth returns the authorization server (nil before Serve when the
// listen port was 0).
func (s *Server) OAuth() *oauth.Provider { return s.oauth }

// Store returns the server's store (for tests and benchmarks).
func (s *Server) Store() store.Store { return s.store }

// CA returns the server's CA.
func (s *Server) CA() *identity.CA { return s.ca }

// Registry returns the server's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Close publishes a final audit checkpoint and releases the audit log (or
// stops forwarding) and the store.
func (s *Server) Close() error {
	err := s.closeAudit()
	if s.detector != nil {
		s.detector.Close()
	}
	return errors.Join(err, s.store.Close())
}

// Audit returns the server's audit log.
func (s *Server) Audit() *audit.Log { return s.audit }

// Serve serves the API on ln until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.oauth == nil {
		if err := s.startOAuth(ctx, issuerFor(s.cfg, ln.Addr().String()), s.wrapper); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.tlsConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // the whole request; an ingest batch is at most 16 MiB
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	bg, stop := context.WithCancel(ctx)
	// The loops may still record audit entries as they end: Serve returns
	// (and Close signs the final checkpoint) only after they have.
	var loops sync.WaitGroup
	defer loops.Wait()
	defer stop()
	for name, run := range s.loops() {
		loops.Go(func() {
			if err := run(bg); err != nil {
				s.log.Error("a background loop stopped", "loop", name, "err", err)
			}
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("server listening", "addr", ln.Addr().String(), "trust_domain", s.cfg.TrustDomain.Name())
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Long polls end when ctx is done (BaseContext), so shutdown does not
	// wait for them.
	return srv.Shutdown(shutdownCtx)
}

// loops is the work that runs beside the API until Serve's context ends,
// each owned by the package whose data it keeps.
func (s *Server) loops() map[string]func(context.Context) error {
	ls := map[string]func(context.Context) error{
		"ca":         s.caMaint.Run,       // rotation schedule, expiry warnings
		"oauth":      s.oauth.Run,         // signing keys, refused-login records
		"kms":        s.kmsMaint.Run,      // scheduled rotations and destructions
		"rekey":      s.runRekey,          // a burn-down's waits
		"refusals":   s.refusals.Run,      // aggregated refusals into the log
		"prune":      s.prune,             // expired records out of the store
		"sync":       s.pollRevision,      // other replicas' changes
		"respond":    s.respond.Run,       // playbook runs (waiting ones resume on approval)
		"federation": s.fed.refresher.Run, // other trust domains' bundles
	}
	if s.cfg.Federation.Listen != "" {
		ls["federation-endpoint"] = s.serveFederation // our bundle, for them
	}
	if s.keeper != nil { // the replica that keeps the audit log
		ls["audit"] = s.keeper.Run    // checkpoints, seals, archive copies
		ls["detect"] = s.detector.Run // rules over the log, alerts
	}
	if s.backup != nil {
		ls["backup"] = func(ctx context.Context) error { s.backup.Run(ctx); return nil }
	}
	if s.acme != nil {
		ls["acme"] = s.acme.Run // pruning, certificate gauges; waits for validations
	}
	return ls
}

// prune deletes expired records (join tokens, revocations past their
// certificates' expiry, ...) every 30 s.
func (s *Server) prune(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.store.PruneExpired(ctx, s.now()); err != nil {
			s.log.Warn("pruning expired records failed", "err", err)
		}
	}
}

func (s *Server) pollRevision(ctx context.Context) error {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rev, err := s.store.Revision(ctx)
		if err != nil {
			continue
		}
		if rev != s.feed.current() {
			// Another replica changed something: its CA keys may have rotated.
			if err := s.ca.Reload(ctx); err != nil {
				s.log.Error("reloading CA failed", "err", err)
			}
			if s.oauth != nil {
				if err := s.oauth.Reload(ctx); err != nil {
					s.log.Error("reloading OAuth keys and revocations failed", "err", err)
				}
			}
			if err := s.kmsAPI.Service.Reload(ctx); err != nil {
				s.log.Error("reloading key store keys failed", "err", err)
			}
			s.notify(ctx)
		}
	}
}

// notify refreshes cached state from the store and wakes long polls.
func (s *Server) notify(ctx context.Context) {
	if err := s.refresh(ctx); err != nil {
		s.log.Error("refreshing state failed", "err", err)
	}
}

// refresh reloads revocations and evictions and, if the revision moved,
// wakes every agent waiting in a long poll.
func (s *Server) refresh(ctx context.Context) error {
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	revoked, err := s.peers.Load(ctx, s.store)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := s.kmsAPI.Access.Load(ctx, s.store); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if s.respond != nil {
		qs, err := s.respond.Quarantined(ctx)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		if !slices.Equal(qs, s.quarantine.Patterns()) {
			s.quarantine.Set(qs)
		}
	}
	bundle := identity.EncodePEM(s.ca.X509Bundle())
	// The bundle may have changed with the revision.
	writeBundle := s.feed.set(rev, bundle, s.peers.Reset)
	if writeBundle {
		s.peers.Reset()
	}
	s.metrics.revocations.Set(float64(revoked))
	if writeBundle {
		if err := atomicfile.Write(filepath.Join(s.cfg.DataDir, "bundle.pem"), bundle, 0o644); err != nil {
			return fmt.Errorf("server: write bundle.pem: %w", err)
		}
	}
	return nil
}

// checkPrivateFiles refuses to start while a file of the data directory
// that holds a secret or the store may be read by group or others (each is
// created 0600; one left readable by hand, a copy or a restore is refused,
// with the chmod that fixes it).
func checkPrivateFiles(cfg Config) error {
	files := []struct{ path, what string }{
		{filepath.Join(cfg.DataDir, "keys", "audit.key"), "the audit log's checkpoint signing key"},
		{filepath.Join(cfg.DataDir, "keys", "backup.key"), "the backup signing key"},
		{filepath.Join(cfg.DataDir, "backup", "identity.age"), "the backup identity"},
		{cfg.KEKFile, "the key-encryption key"},
		{cfg.Master.SealedFile, "the sealed key-encryption key"},
		{filepath.Join(cfg.DataDir, "rampart.db"), "the store: wrapped CA and OAuth keys, token hashes"},
		{filepath.Join(cfg.DataDir, "rampart.db-wal"), "the store's write-ahead log"},
		{filepath.Join(cfg.DataDir, "rampart.db-shm"), "the store's shared memory"},
		{filepath.Join(cfg.DataDir, "admin.token"), "the admin token"},
		{filepath.Join(cfg.DataDir, "metrics.token"), "the metrics token"},
	}
	for _, f := range files {
		if err := secretfile.CheckPrivate(f.path, f.what); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	return nil
}

func checkTrustDomain(dir string, td spiffeid.TrustDomain) error {
	path := filepath.Join(dir, "trust_domain")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return atomicfile.Write(path, []byte(td.Name()+"\n"), 0o600)
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if got := strings.TrimSpace(string(b)); got != td.Name() {
		return fmt.Errorf("server: data dir %s belongs to trust domain %q, not %q; use another --data or the same --trust-domain", dir, got, td.Name())
	}
	return nil
}
