package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/keywrap"
)

// Boot starts a server on a restored data directory, on loopback, checks
// that it works (the store, the CA signing, keys unwrapping, the audit
// log), stops it, and reports. Package server provides it; a drill takes
// it as a function so this package does not depend on the server.
type Boot func(ctx context.Context, dataDir, postgresDSN string, m *Manifest) (*BootReport, error)

// BootReport is what Boot found.
type BootReport struct {
	Checks []Check
	// Tables are the rows per table the running server's store held.
	Tables map[string]int64
}

// Check is one thing a drill checked.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// DrillConfig says what a drill restores, where, and how it boots it.
type DrillConfig struct {
	Source Source
	// Scratch is the directory the drill's data directory is made in
	// (and removed from).
	Scratch string
	// PostgresDSN: for a PostgreSQL backup, an empty schema to load into
	// (the caller makes and drops it).
	PostgresDSN      string
	KEKFile          string
	MasterPassphrase func() ([]byte, error)
	PKCS11           keywrap.PKCS11Config
	Wrapper          *keywrap.Wrapper
	Boot             Boot
	Now              func() time.Time
}

// DrillReport is the drill's evidence.
type DrillReport struct {
	Seq       int64         `json:"seq"`
	Hash      string        `json:"manifest_sha256,omitempty"`
	Created   time.Time     `json:"created,omitzero"`
	OK        bool          `json:"ok"`
	Error     string        `json:"error,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
	BackupAge time.Duration `json:"backup_age_ns"`
	Checks    []Check       `json:"checks"`
}

// Drill restores the newest backup into a scratch directory, boots a
// server on it and checks it, then removes the scratch directory. A
// failure anywhere is a failed drill, with its reason.
func Drill(ctx context.Context, cfg DrillConfig) *DrillReport {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	start := cfg.Now()
	rep := &DrillReport{}
	err := drill(ctx, cfg, rep)
	rep.Duration = cfg.Now().Sub(start)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.OK = err == nil
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
		if !c.OK && rep.Error == "" {
			rep.Error = c.Name + ": " + c.Detail
		}
	}
	return rep
}

func drill(ctx context.Context, cfg DrillConfig, rep *DrillReport) error {
	if err := os.MkdirAll(cfg.Scratch, 0o700); err != nil {
		return fmt.Errorf("backup: drill: %w", err)
	}
	tmp, err := os.MkdirTemp(cfg.Scratch, "drill-")
	if err != nil {
		return fmt.Errorf("backup: drill: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "data")
	if c, err := cfg.Source.Choose(ctx, 0); err == nil {
		rep.Seq, rep.Hash, rep.Created = c.Manifest.Seq, Hash(c.Signed), c.Manifest.Created
		rep.BackupAge = cfg.Now().Sub(c.Manifest.Created)
	}
	res, err := Restore(ctx, RestoreConfig{Source: cfg.Source, DataDir: dir, PostgresDSN: cfg.PostgresDSN, KEKFile: cfg.KEKFile,
		MasterPassphrase: cfg.MasterPassphrase, PKCS11: cfg.PKCS11, Wrapper: cfg.Wrapper, Actor: audit.Actor{User: "rampart-drill"}, Reason: "restore drill", Now: cfg.Now})
	if err != nil {
		rep.Checks = append(rep.Checks, Check{Name: "restore", Detail: err.Error()})
		return nil
	}
	m := res.Manifest
	rep.Checks = append(rep.Checks,
		Check{Name: "restore", OK: true, Detail: fmt.Sprintf("backup %d: %d files, %d bytes, every hash and the signature checked", res.Seq, res.Files, res.Bytes)},
		Check{Name: "audit-tree", OK: res.AuditSize == m.Audit.Size, Detail: fmt.Sprintf("%d entries, root %.16s... as the manifest says; verified", res.AuditSize, m.Audit.Root)})
	if cfg.Boot == nil {
		return nil
	}
	br, err := cfg.Boot(ctx, dir, cfg.PostgresDSN, m)
	if br != nil {
		rep.Checks = append(rep.Checks, br.Checks...)
	}
	if err != nil {
		rep.Checks = append(rep.Checks, Check{Name: "server", Detail: err.Error()})
		return nil
	}
	c := Check{Name: "store-counts", OK: true, Detail: fmt.Sprintf("%d tables as the manifest says", len(m.Store.Tables))}
	for t, n := range m.Store.Tables {
		if br.Tables[t] != n {
			c = Check{Name: "store-counts", Detail: fmt.Sprintf("table %s: %d rows, the manifest says %d", t, br.Tables[t], n)}
			break
		}
	}
	rep.Checks = append(rep.Checks, c)
	return nil
}
