package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// BackupConfig turns on backups (package backup) for this server: where,
// encrypted to whom, how often, what is kept, and the drills.
type BackupConfig struct {
	Destinations   []backup.Destination
	Recipients     []age.Recipient
	RecipientNames []string
	Passphrase     func() ([]byte, error)
	IncludeKEK     bool
	PartSize       int
	Every          time.Duration
	Retention      backup.Retention
	// Drills need what decrypts (an identity among the recipients kept on
	// this machine, or the passphrase); without it, none are scheduled.
	DrillEvery      time.Duration
	DrillMaxAge     time.Duration
	DrillIdentities []age.Identity
	DrillPassphrase func() ([]byte, error)
	// DrillPostgresDSN is where a drill of a PostgreSQL store makes its
	// scratch schema (default: the store's own database).
	DrillPostgresDSN string
}

// startBackup constructs the backup runner; Serve runs it.
func (s *Server) startBackup() error {
	bc := s.cfg.Backup
	if bc == nil {
		return nil
	}
	var l backup.AuditLog
	var signer note.Signer
	if s.keeper != nil {
		l, signer = s.audit, s.keeper.Signer
	}
	b, err := backup.New(backup.Config{DataDir: s.cfg.DataDir, TrustDomain: s.cfg.TrustDomain.Name(), Store: s.store.(store.Snapshotter),
		Audit: l, AuditSigner: signer, AuditOrigin: s.cfg.TrustDomain.Name() + "/audit", KEK: s.wrapper,
		MasterSource: string(s.cfg.Master.Source), KEKFile: s.cfg.Master.File, IncludeKEK: bc.IncludeKEK,
		Destinations: bc.Destinations, Recipients: bc.Recipients, RecipientNames: bc.RecipientNames, Passphrase: bc.Passphrase,
		PartSize: bc.PartSize, Now: s.now, Log: s.log})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	r := &backup.Runner{Backuper: b, Every: bc.Every, Retention: bc.Retention, DrillEvery: bc.DrillEvery, DrillMaxAge: bc.DrillMaxAge,
		Actor: audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()}, Now: s.now, Log: s.log, Registry: s.reg,
		Record: func(ctx context.Context, e *audit.Entry) { s.record(ctx, e) }}
	if len(bc.DrillIdentities) > 0 || bc.DrillPassphrase != nil {
		r.Drill = s.drill
	}
	s.backup = r
	return nil
}

// drill restores the newest backup into a scratch directory under
// DATA/backup and boots a server on it.
func (s *Server) drill(ctx context.Context) *backup.DrillReport {
	bc := s.cfg.Backup
	pub, err := os.ReadFile(filepath.Join(s.cfg.DataDir, "backup.pub"))
	if err != nil {
		return &backup.DrillReport{Error: err.Error()}
	}
	v, err := backup.ParseVerifier(string(pub))
	if err != nil {
		return &backup.DrillReport{Error: err.Error()}
	}
	dc := backup.DrillConfig{Source: backup.Source{Destinations: bc.Destinations, Verifier: v, Identities: bc.DrillIdentities, Passphrase: bc.DrillPassphrase},
		Scratch: filepath.Join(s.cfg.DataDir, "backup", "drills"), Wrapper: s.wrapper, Now: s.now,
		Boot: DrillBoot(s.cfg.TrustDomain, s.wrapper, s.log)}
	if s.cfg.PostgresDSN != "" {
		base := bc.DrillPostgresDSN
		if base == "" {
			base = s.cfg.PostgresDSN
		}
		dsn, drop, err := ScratchSchema(ctx, base)
		if err != nil {
			return &backup.DrillReport{Error: err.Error()}
		}
		defer drop()
		dc.PostgresDSN = dsn
	}
	return backup.Drill(ctx, dc)
}

// ScratchSchema makes an empty schema in the database dsn names and
// returns a DSN whose search_path is that schema, and a function that
// drops it.
func ScratchSchema(ctx context.Context, dsn string) (string, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, fmt.Errorf("server: drill schema: %w", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := "rampart_drill_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("server: drill schema: %w", err)
	}
	drop := func() {
		db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	}
	if !strings.Contains(dsn, "://") {
		return dsn + " search_path=" + schema, drop, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		drop()
		return "", nil, fmt.Errorf("server: drill schema: %w", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}

// DrillBoot returns the drills' Boot: it counts the restored store's rows,
// starts a server on the restored data directory on loopback (with wrapper
// as its KEK, no detection rules and no archive or backups of its own),
// and checks that it answers over TLS with the restored bundle, that its
// CA signs an SVID that chains to the restored roots, that its keys
// unwrapped, and that its audit log verifies.
func DrillBoot(td spiffeid.TrustDomain, wrapper *keywrap.Wrapper, log *slog.Logger) backup.Boot {
	return func(ctx context.Context, dir, dsn string, m *backup.Manifest) (*backup.BootReport, error) {
		rep := &backup.BootReport{}
		check := func(name string, err error, ok string) {
			c := backup.Check{Name: name, OK: err == nil, Detail: ok}
			if err != nil {
				c.Detail = err.Error()
			}
			rep.Checks = append(rep.Checks, c)
		}
		if m.TrustDomain != td.Name() {
			return rep, fmt.Errorf("the backup is of trust domain %q, this server's is %q", m.TrustDomain, td.Name())
		}
		var st store.Store
		var err error
		if dsn != "" {
			st, err = store.OpenPostgres(ctx, dsn)
		} else {
			st, err = store.OpenSQLite(filepath.Join(dir, "rampart.db"))
		}
		if err != nil {
			return rep, err
		}
		info, err := st.(store.Snapshotter).Counts(ctx)
		if err != nil {
			st.Close()
			return rep, err
		}
		rep.Tables = info.Tables
		// Served without Serve's loops: a drill needs no detection replay
		// (seconds per million entries), maintenance or checkpoint timer.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			st.Close()
			return rep, err
		}
		cfg := withDefaults(Config{DataDir: dir, Listen: ln.Addr().String(), TrustDomain: td, PostgresDSN: dsn,
			DetectRules: drillRules, Log: log.With("drill", dir)})
		srv, err := newWithStore(ctx, cfg, st, wrapper)
		if err != nil {
			ln.Close()
			st.Close()
			check("server-start", err, "")
			return rep, nil
		}
		check("server-start", nil, "store opened, CA, OAuth and key store keys unwrapped with the KEK")
		hs := &http.Server{Handler: srv.Handler(), TLSConfig: srv.tls.config(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		done := make(chan struct{})
		go func() { hs.ServeTLS(ln, "", ""); close(done) }()
		defer func() {
			hs.Close()
			<-done
			srv.Close()
		}()
		check("api", probe(ctx, ln.Addr().String(), dir), "GET /healthz over TLS 1.3, verified with the restored bundle")
		check("ca-signs", caSigns(srv.CA(), td), "signed a test X.509-SVID that chains to the restored roots")
		var oerr error
		if srv.OAuth() == nil {
			oerr = errors.New("the OAuth server did not start")
		}
		check("oauth-keys", oerr, "OAuth signing keys unwrapped")
		check("audit-verify", verifyLog(dir, m), fmt.Sprintf("the restored log verifies (%d entries in the backup)", m.Audit.Size))
		return rep, nil
	}
}

// drillRules: a drill's server raises no alert and notifies no sink (its
// log replays entries that already raised theirs on the live server).
var drillRules = []byte("rules:\n  - name: drill-quiet\n    description: A restore drill's server raises nothing.\n    severity: low\n    actions: [rampart.drill_never]\n")

func probe(ctx context.Context, addr, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return errors.New("bundle.pem holds no certificate")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "localhost"}}}
	var last error
	for range 50 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/healthz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return last
}

func caSigns(ca *identity.CA, td spiffeid.TrustDomain) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	id, err := spiffeid.FromSegments(td, "rampart", "drill")
	if err != nil {
		return err
	}
	chain, err := ca.SignX509SVID(id, key.Public(), time.Minute, nil, nil)
	if err != nil {
		return err
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range ca.X509Bundle() {
		roots.AddCert(c)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func verifyLog(dir string, m *backup.Manifest) error {
	if m.Audit.Origin == "" {
		return nil
	}
	pub, err := os.ReadFile(filepath.Join(dir, "audit.pub"))
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		return err
	}
	rep, err := audit.Verify(filepath.Join(dir, "audit"), v)
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("%d problems, the first: %v", len(rep.Problems), rep.Problems[0])
	}
	if rep.Entries < m.Audit.Size {
		return fmt.Errorf("%d entries, the backup holds %d", rep.Entries, m.Audit.Size)
	}
	return nil
}

// Backup API (admin): make a backup now, run a drill now, list backups.

func (s *Server) backupConfigured(w http.ResponseWriter) bool {
	if s.backup == nil {
		writeProblem(w, http.StatusNotFound, "backups are not configured on this server (rampart server --backup-config FILE)")
		return false
	}
	return true
}

func (s *Server) handleBackupCreate(w http.ResponseWriter, r *http.Request) {
	if !s.backupConfigured(w) {
		return
	}
	res, err := s.backup.CreateNow(r.Context(), audit.Actor{User: "admin"})
	if err != nil {
		writeProblem(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleBackupDrill(w http.ResponseWriter, r *http.Request) {
	if !s.backupConfigured(w) {
		return
	}
	rep := s.backup.DrillNow(r.Context(), audit.Actor{User: "admin"})
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) handleBackupList(w http.ResponseWriter, r *http.Request) {
	if !s.backupConfigured(w) {
		return
	}
	v, err := backup.ParseVerifier(s.backup.Backuper.PublicKey())
	if err != nil {
		s.internalError(w, err)
		return
	}
	list, err := backup.List(r.Context(), backup.Source{Destinations: s.backup.Backuper.Destinations(), Verifier: v})
	if err != nil {
		writeProblem(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, list)
}
