package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/acme"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/oauth"
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

	// DetectRules is a detection rules file (nil: the default rules).
	DetectRules []byte

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

	// Backup, if set, makes backups and drills on a schedule (backup.go).
	Backup *BackupConfig

	// ACME configures the ACME server (acmeapi.go).
	ACME ACMEConfig

	// Issuer is the OAuth/OIDC issuer URL; empty: https://LISTEN (an
	// unspecified host becomes localhost).
	Issuer string
	OAuth  OAuthConfig

	Now func() time.Time
	Log *slog.Logger
}

// OAuthConfig tunes the authorization server; zero values take the
// oauth package's defaults.
type OAuthConfig struct {
	Algorithm       jose.SignatureAlgorithm
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	MaxActDepth     int // hops of token exchange (nested act); 0: oauth.DefaultMaxActDepth
}

// Server is a running control plane.
type Server struct {
	cfg   Config
	store store.Store
	ca    *identity.CA
	audit *audit.Log
	// auditSigner signs the audit log's checkpoints.
	auditSigner note.Signer
	// archiver copies sealed segments to cfg.AuditArchive (nil: none).
	// retainMu guards it and the failure flags: the checkpoint loop and
	// Close both run retain.
	retainMu       sync.Mutex
	archiver       *audit.Archiver
	sealFailing    bool
	archiveFailing bool
	// On the replica that keeps the log, releaseAuditLog gives the store's
	// claim back; on the others, forward ships entries to it.
	releaseAuditLog func()
	forward         *spool.Spool
	ingest          *ingest
	refusals        *refusalAgg // refusals recorded once per kind and interval
	detector        *detect.Tailer
	notifier        *detect.Notifier
	oauth           *oauth.Provider // nil until the issuer address is known
	kms             *kms.Service
	backup          *backup.Runner            // nil: no backups configured
	acme            *acme.Server              // nil: ACME disabled
	kmsPolicy       atomic.Pointer[kmsPolicy] // nil: no key-use policy, every use denied
	wrapper         *keywrap.Wrapper
	log             *slog.Logger
	now             func() time.Time
	metrics         *metrics
	reg             *prometheus.Registry

	adminTokenHash [32]byte
	// metricsTokenHash: the bearer token /metrics wants (DATA/metrics.token).
	metricsTokenHash [32]byte

	tls   *tlsState
	peers peerCache // client chains whose signatures verified

	mu       sync.RWMutex
	revision int64
	revoked  map[string]struct{} // serials
	evicted  map[string]struct{} // agent SPIFFE IDs
	changed  chan struct{}       // closed and replaced at each revision change
	bundle   []byte              // last bundle.pem written
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
	up, err := loadUpstream(cfg.UpstreamCertFile, cfg.UpstreamKeyFile)
	if err != nil {
		return nil, err
	}
	ca, err := identity.New(ctx, identity.Config{
		TrustDomain: cfg.TrustDomain, Store: st, Wrapper: wrapper, Now: cfg.Now, Log: cfg.Log,
		RootTTL: cfg.RootTTL, IntermediateTTL: cfg.IntermediateTTL, JWTKeyTTL: cfg.JWTKeyTTL, Upstream: up,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{
		cfg: cfg, store: st, ca: ca, log: cfg.Log, now: cfg.Now, wrapper: wrapper,
		changed: make(chan struct{}), reg: prometheus.NewRegistry(), refusals: newRefusalAgg(cfg.Now),
	}
	s.metrics = newMetrics(s.reg, ca)
	if s.kms, err = kms.New(ctx, kms.Config{Store: st, Wrapper: wrapper, Now: cfg.Now}); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.tls = newTLSState(s)
	if cfg.AuditForwardTo == "" {
		err = s.openAuditLog(ctx)
	} else {
		err = s.openForwarder(cfg.AuditForwardTo)
	}
	if err != nil {
		return nil, err
	}
	if err := s.startBackup(); err != nil {
		s.closeAudit()
		return nil, err
	}
	token, err := loadOrCreateAdminToken(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		return nil, err
	}
	s.adminTokenHash = sha256.Sum256([]byte(token))
	if token, err = loadOrCreateAdminToken(filepath.Join(cfg.DataDir, "metrics.token")); err != nil {
		return nil, err
	}
	s.metricsTokenHash = sha256.Sum256([]byte(token))
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	if err := s.startACME(ctx, wrapper); err != nil {
		s.closeAudit()
		return nil, err
	}
	if iss := issuerFor(cfg, cfg.Listen); iss != "" && !strings.HasSuffix(iss, ":0") {
		if err := s.startOAuth(ctx, iss, wrapper); err != nil {
			s.closeAudit()
			return nil, err
		}
	}
	return s, nil
}

// openAuditLog claims the deployment's audit log in the store and opens
// it, with its ingestion state, archive and detection.
func (s *Server) openAuditLog(ctx context.Context) error {
	release, err := s.store.HoldAuditLog(ctx)
	// A holder that was just killed frees the claim when PostgreSQL sees
	// its session end: give a restart a few seconds for that.
	for tries := 0; errors.Is(err, store.ErrAuditLogHeld) && tries < 20; tries++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		release, err = s.store.HoldAuditLog(ctx)
	}
	if errors.Is(err, store.ErrAuditLogHeld) {
		return fmt.Errorf("server: %w: a deployment keeps one audit log; start this replica with --audit-forward-to HOLDER-ADDRESS (the API address of the replica that keeps it)", err)
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.releaseAuditLog = release
	if s.audit, s.auditSigner, err = openAudit(s.cfg); err != nil {
		release()
		return err
	}
	if s.cfg.AuditArchive != nil {
		s.archiver = audit.NewArchiver(filepath.Join(s.cfg.DataDir, "audit"), s.cfg.AuditArchive)
	}
	if s.ingest, err = loadIngest(s.cfg.DataDir, s.audit); err != nil {
		s.closeAudit()
		return err
	}
	if err := s.startDetect(); err != nil {
		s.closeAudit()
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// closeAudit publishes a last checkpoint and closes the log (or the
// forwarding spool) and gives the claim back.
func (s *Server) closeAudit() error {
	var err error
	if s.audit != nil {
		last := int64(-1)
		s.checkpoint(&last, 15*time.Second) // may seal and archive, and record both
		// The final checkpoint is the last write: it covers those
		// records, and the log takes nothing after it. Copied to the
		// archive, it vouches for the log from off the machine while the
		// server is down.
		_, err = s.audit.CloseWithCheckpoint(s.auditSigner)
		s.archiveLastCheckpoint()
	}
	if s.forward != nil {
		err = errors.Join(err, s.forward.Close())
	}
	if s.releaseAuditLog != nil {
		s.releaseAuditLog()
	}
	return err
}

// archiveLastCheckpoint copies the final checkpoint to the archive when
// the last copy succeeded (so that only the checkpoint is new there: a
// segment copied now could no longer be recorded in the closed log).
func (s *Server) archiveLastCheckpoint() {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	if s.archiver == nil || s.archiveFailing {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := s.archiver.Sync(ctx); err != nil {
		s.log.Error("copying the final audit checkpoint to the archive failed; it is copied at the next start", "err", err)
	}
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
	if s.notifier != nil {
		s.notifier.Close()
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
		TLSConfig:         s.tls.config(),
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
	loops.Go(func() { s.maintain(bg) })
	loops.Go(func() { s.pollRevision(bg) })
	loops.Go(func() { s.flushRefusals(bg) })
	if s.audit != nil { // the replica that keeps the log
		loops.Go(func() { s.checkpointLoop(bg) })
		loops.Go(func() { s.detector.Run(bg) })
	}
	if s.backup != nil {
		loops.Go(func() { s.backup.Run(bg) })
	}
	if s.acme != nil {
		loops.Go(func() { s.acme.Run(bg) })
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

// maintain applies the CA rotation schedule and prunes expired records.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.maintainOnce(ctx)
	}
}

func (s *Server) maintainOnce(ctx context.Context) {
	before := string(identity.EncodePEM(s.ca.X509Bundle()))
	if err := s.ca.Maintain(ctx); err != nil {
		s.log.Error("CA maintenance failed", "err", err)
		s.metrics.caMaintenanceFailures.Inc()
	}
	s.warnExpiry()
	if s.oauth != nil {
		if err := s.oauth.Maintain(ctx); err != nil {
			s.log.Error("OAuth signing key maintenance failed", "err", err)
		}
	}
	s.maintainKMS(ctx)
	if err := s.store.PruneExpired(ctx, s.now()); err != nil {
		s.log.Warn("pruning expired records failed", "err", err)
	}
	if string(identity.EncodePEM(s.ca.X509Bundle())) != before {
		s.notify(ctx)
	}
}

// warnExpiry logs a warning for any root or intermediate close to expiry:
// expired trust anchors are the most common mesh outage, so they are shouted
// about long before.
func (s *Server) warnExpiry() {
	now := s.now()
	for _, k := range s.ca.Status() {
		left := k.NotAfter.Sub(now)
		life := k.NotAfter.Sub(k.NotBefore)
		if k.State == store.StateRetired || k.Kind == store.KindJWT {
			continue
		}
		if left < life/4 || (k.Kind == store.KindRoot && left < 30*24*time.Hour) {
			s.log.Warn("CA certificate expires soon", "kind", k.Kind, "id", k.ID, "not_after", k.NotAfter, "left", left.Round(time.Minute).String())
		}
	}
}

func (s *Server) pollRevision(ctx context.Context) {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rev, err := s.store.Revision(ctx)
		if err != nil {
			continue
		}
		s.mu.RLock()
		same := rev == s.revision
		s.mu.RUnlock()
		if !same {
			// Another replica changed something: its CA keys may have rotated.
			if err := s.ca.Reload(ctx); err != nil {
				s.log.Error("reloading CA failed", "err", err)
			}
			if s.oauth != nil {
				if err := s.oauth.Reload(ctx); err != nil {
					s.log.Error("reloading OAuth keys and revocations failed", "err", err)
				}
			}
			if err := s.kms.Reload(ctx); err != nil {
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
	revs, err := s.store.ListRevocations(ctx, s.now())
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	revoked := make(map[string]struct{}, len(revs))
	for _, r := range revs {
		revoked[r.Serial] = struct{}{}
	}
	evicted := map[string]struct{}{}
	for _, a := range agents {
		if a.Evicted {
			evicted[a.SpiffeID] = struct{}{}
		}
	}
	if err := s.loadKMSPolicy(ctx); err != nil {
		return err
	}
	bundle := identity.EncodePEM(s.ca.X509Bundle())
	s.mu.Lock()
	moved := rev != s.revision
	s.revision, s.revoked, s.evicted = rev, revoked, evicted
	if moved {
		s.peers.reset() // the bundle may have changed with the revision
		close(s.changed)
		s.changed = make(chan struct{})
	}
	writeBundle := string(bundle) != string(s.bundle)
	s.bundle = bundle
	s.mu.Unlock()
	if writeBundle {
		s.peers.reset()
	}
	s.metrics.revocations.Set(float64(len(revoked)))
	if writeBundle {
		if err := atomicfile.Write(filepath.Join(s.cfg.DataDir, "bundle.pem"), bundle, 0o644); err != nil {
			return fmt.Errorf("server: write bundle.pem: %w", err)
		}
	}
	return nil
}

func (s *Server) isRevoked(serial string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.revoked[serial]
	return ok
}

func (s *Server) isEvicted(agentID string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.evicted[agentID]
	return ok
}

// waitChange returns the current revision and a channel closed at the next.
func (s *Server) waitChange() (int64, <-chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revision, s.changed
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

// loadOrCreateAdminToken returns the admin token from path, creating a random
// 256-bit one (0600) on first start. A token file group or others may read
// is refused: anyone who read it is an admin.
func loadOrCreateAdminToken(path string) (string, error) {
	b, err := secretfile.Read(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", fmt.Errorf("server: %s holds a token shorter than 32 characters; delete it to have a new one generated", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("server: admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	tok := "rpa_" + base64.RawURLEncoding.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server: write admin token: %w", err)
	}
	return tok, nil
}

func loadUpstream(certFile, keyFile string) (*identity.Upstream, error) {
	if certFile == "" {
		if keyFile != "" {
			return nil, errors.New("server: --upstream-ca-key needs --upstream-ca-cert")
		}
		return nil, nil
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("server: upstream CA: %w", err)
	}
	roots, err := identity.ParsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("server: upstream CA %s: %w", certFile, err)
	}
	for _, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("server: upstream CA %s: certificate %q is not a CA", certFile, r.Subject)
		}
	}
	up := &identity.Upstream{Roots: roots}
	if keyFile != "" {
		k, err := identity.LoadKeyFile(keyFile)
		if errors.Is(err, fs.ErrNotExist) {
			// Kept offline: the current intermediate keeps signing.
			return up, nil
		}
		if err != nil {
			return nil, fmt.Errorf("server: upstream CA key: %w", err)
		}
		up.Key = k
	}
	return up, nil
}
