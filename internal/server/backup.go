package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// BackupConfig turns on backups (package backup) for this server.
type BackupConfig = backup.Plan

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
		Record:   func(ctx context.Context, e *audit.Entry) { s.record(ctx, e) },
		Operator: operatorActor}
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
		dsn, drop, err := store.ScratchSchema(ctx, base)
		if err != nil {
			return &backup.DrillReport{Error: err.Error()}
		}
		defer drop()
		dc.PostgresDSN = dsn
	}
	return backup.Drill(ctx, dc)
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
		hs := &http.Server{Handler: srv.Handler(), TLSConfig: srv.tlsConfig(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		done := make(chan struct{})
		go func() { hs.ServeTLS(ln, "", ""); close(done) }()
		defer func() {
			hs.Close()
			<-done
			srv.Close()
		}()
		check("api", backup.ProbeAPI(ctx, ln.Addr().String(), dir), "GET /healthz over TLS 1.3, verified with the restored bundle")
		check("ca-signs", srv.CA().SelfTest(), "signed a test X.509-SVID that chains to the restored roots")
		var oerr error
		if srv.OAuth() == nil {
			oerr = errors.New("the OAuth server did not start")
		}
		check("oauth-keys", oerr, "OAuth signing keys unwrapped")
		check("audit-verify", backup.VerifyRestoredLog(dir, m), fmt.Sprintf("the restored log verifies (%d entries in the backup)", m.Audit.Size))
		return rep, nil
	}
}

// drillRules: a drill's server raises no alert and notifies no sink (its
// log replays entries that already raised theirs on the live server).
var drillRules = []byte("rules:\n  - name: drill-quiet\n    description: A restore drill's server raises nothing.\n    severity: low\n    actions: [rampart.drill_never]\n")
