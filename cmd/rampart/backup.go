package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/backup"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/server"
	"github.com/rampartsec/rampart/internal/store"
)

const backupUsage = `Usage: rampart backup create|list|verify|restore|drill [flags]

  create [--json]
      Asks the running server (RAMPART_SERVER, RAMPART_ADMIN_TOKEN_FILE,
      RAMPART_CA_BUNDLE) to make a backup now, to every destination of its
      --backup-config. With --data DIR --config FILE the server is stopped
      and the backup is made here.
  list --dest URL... --pubkey FILE [--json]
      Lists the backups the destinations hold, each manifest checked
      against the backup public key (DATA/backup.pub, kept elsewhere).
  verify --dest URL... --pubkey FILE [-i IDENTITY | --passphrase-file F] [--seq N] [--json]
      Checks a backup (default: the newest) in every destination: the
      signature, every object's SHA-256, and with an identity every file
      decrypted against its SHA-256. Exit status 1 on any problem.
  restore --dest URL... --pubkey FILE (-i IDENTITY | --passphrase-file F) --data NEWDIR
          [--kek-file F | --master-key passphrase|pkcs11 ...] [--postgres DSN] [--seq N]
          [--seen FILE] [--min-seq N] [--allow-rollback] [--json]
      Restores a backup into an empty data directory (and, for a
      PostgreSQL store, an empty schema), refusing anything that does not
      verify and a backup older than one seen. Start the server on it next.
  drill [--json]
      Asks the running server to run a restore drill now. With --dest,
      --pubkey, -i and --trust-domain, runs one here: restore into a
      scratch directory, start a server on it on loopback, check it.

Destinations: a directory path, file:///PATH, or s3://BUCKET/PREFIX?endpoint=URL
(credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). See docs/backup.md.
`

func runBackup(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(env.stdout, backupUsage)
		if len(args) == 0 {
			return usagef("a subcommand is required")
		}
		return nil
	}
	switch args[0] {
	case "create":
		return backupCreate(ctx, env, args[1:])
	case "list":
		return backupList(ctx, env, args[1:])
	case "verify":
		return backupVerify(ctx, env, args[1:])
	case "restore":
		return backupRestore(ctx, env, args[1:])
	case "drill":
		return backupDrill(ctx, env, args[1:])
	}
	return usagef("unknown subcommand %q (create, list, verify, restore, drill)", args[0])
}

// backupConfigFile is the YAML file given to rampart server --backup-config.
type backupConfigFile struct {
	Destinations   []string      `yaml:"destinations"`
	RecipientsFile string        `yaml:"recipients_file"`
	PassphraseFile string        `yaml:"passphrase_file"`
	IncludeKEK     bool          `yaml:"include_kek"`
	Every          time.Duration `yaml:"every"`
	Retention      struct {
		Daily  int `yaml:"daily"`
		Weekly int `yaml:"weekly"`
	} `yaml:"retention"`
	Drill struct {
		Every        time.Duration `yaml:"every"`
		MaxAge       time.Duration `yaml:"max_age"`
		IdentityFile string        `yaml:"identity_file"`
		Postgres     string        `yaml:"postgres"`
	} `yaml:"drill"`
	PartSize int `yaml:"part_size"`
}

// loadBackupConfig reads a backup configuration file strictly.
func loadBackupConfig(path string) (*server.BackupConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f backupConfigFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("backup config %s: %w", path, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("backup config %s: "+format, append([]any{path}, a...)...)
	}
	if len(f.Destinations) == 0 {
		return nil, bad("destinations: at least one is required (two, in different places, are better)")
	}
	bc := &server.BackupConfig{IncludeKEK: f.IncludeKEK, Every: f.Every, DrillEvery: f.Drill.Every, DrillMaxAge: f.Drill.MaxAge,
		DrillPostgresDSN: f.Drill.Postgres, PartSize: f.PartSize, Retention: backup.Retention{Daily: f.Retention.Daily, Weekly: f.Retention.Weekly}}
	if f.Every < 0 || f.Drill.Every < 0 || f.Drill.MaxAge < 0 || f.PartSize < 0 || f.Retention.Daily < 0 || f.Retention.Weekly < 0 {
		return nil, bad("durations, counts and sizes cannot be negative")
	}
	if f.PartSize != 0 && f.PartSize < 1<<16 {
		return nil, bad("part_size %d: at least 65536", f.PartSize)
	}
	reg := backup.DefaultRegistry()
	for i, u := range f.Destinations {
		d, err := reg.Open(u)
		if err != nil {
			return nil, bad("destinations[%d]: %v", i, err)
		}
		bc.Destinations = append(bc.Destinations, d)
	}
	if f.RecipientsFile != "" {
		fh, err := os.Open(f.RecipientsFile)
		if err != nil {
			return nil, bad("recipients_file: %v", err)
		}
		bc.Recipients, bc.RecipientNames, err = backup.ParseRecipients(fh)
		fh.Close()
		if err != nil {
			return nil, bad("%v", err)
		}
	}
	if f.PassphraseFile != "" {
		p := f.PassphraseFile
		bc.Passphrase = func() ([]byte, error) { s, err := readPassword(p); return []byte(s), err }
	}
	if len(bc.Recipients) == 0 && bc.Passphrase == nil {
		return nil, bad("recipients_file or passphrase_file: backups are always encrypted")
	}
	if f.Drill.IdentityFile != "" {
		b, err := os.ReadFile(f.Drill.IdentityFile)
		if err != nil {
			return nil, bad("drill.identity_file: %v", err)
		}
		if bc.DrillIdentities, err = backup.ParseIdentities(b); err != nil {
			return nil, bad("drill.identity_file: %v", err)
		}
	} else if f.Drill.Every > 0 {
		if bc.Passphrase == nil {
			return nil, bad("drill.every needs drill.identity_file (an identity among the recipients) or passphrase_file")
		}
		bc.DrillPassphrase = bc.Passphrase
	}
	return bc, nil
}

// sourceFlags are the read side's flags: where, the key to check with,
// what decrypts.
type sourceFlags struct {
	dests      repeatFlag
	pubkey     string
	identities repeatFlag
	passFile   string
}

func addSourceFlags(fs *flag.FlagSet, s *sourceFlags) {
	fs.Var(&s.dests, "dest", "a destination: directory, file:///PATH or s3://BUCKET/PREFIX?endpoint=URL (repeatable)")
	fs.StringVar(&s.pubkey, "pubkey", "", "the backup public key (DATA/backup.pub, kept outside the destinations); required")
	fs.Var(&s.identities, "i", "an age identity file (age-keygen) or an unencrypted SSH private key (repeatable)")
	fs.StringVar(&s.passFile, "passphrase-file", "", "the backups' passphrase, from a file (- for standard input)")
}

func (s *sourceFlags) source(needIdentity bool) (backup.Source, error) {
	var src backup.Source
	if len(s.dests) == 0 {
		return src, usagef("--dest is required (where the backups are)")
	}
	if s.pubkey == "" {
		return src, usagef("--pubkey is required: the backup public key (DATA/backup.pub) kept outside the destinations, so that a replaced backup cannot bring its own key")
	}
	b, err := os.ReadFile(s.pubkey)
	if err != nil {
		return src, fmt.Errorf("--pubkey: %w", err)
	}
	if src.Verifier, err = backup.ParseVerifier(string(b)); err != nil {
		return src, err
	}
	reg := backup.DefaultRegistry()
	for _, u := range s.dests {
		d, err := reg.Open(u)
		if err != nil {
			return src, usagef("--dest: %v", err)
		}
		src.Destinations = append(src.Destinations, d)
	}
	for _, p := range s.identities {
		b, err := os.ReadFile(p)
		if err != nil {
			return src, fmt.Errorf("-i: %w", err)
		}
		ids, err := backup.ParseIdentities(b)
		if err != nil {
			return src, fmt.Errorf("-i %s: %w", p, err)
		}
		src.Identities = append(src.Identities, ids...)
	}
	if s.passFile != "" {
		p := s.passFile
		src.Passphrase = func() ([]byte, error) { s, err := readPassword(p); return []byte(s), err }
	}
	if needIdentity && len(src.Identities) == 0 && src.Passphrase == nil {
		return src, usagef("-i IDENTITY or --passphrase-file is required to decrypt")
	}
	return src, nil
}

func defaultSeenFile(env *cliEnv) string {
	if d := env.getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "rampart", "backup-seen.json")
	}
	if h := env.getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "rampart", "backup-seen.json")
	}
	return ""
}

func backupCreate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "backup create", "rampart backup create [--json] | rampart backup create --data DIR --config FILE --trust-domain TD [--json]")
	af := addAdminFlags(fs)
	data := fs.String("data", "", "with the server stopped: its data directory (the backup is made here, not by the server)")
	cfgFile := fs.String("config", "", "with --data: the backup configuration (the server's --backup-config file)")
	td := fs.String("trust-domain", "", "with --data: the server's trust domain")
	pg := fs.String("postgres", "", "with --data: the server's PostgreSQL store, if it has one")
	kekFile := fs.String("kek-file", "", "with --data and --master-key file: the KEK (default DATA/keys/kek)")
	masterKey := fs.String("master-key", "file", "with --data: file, passphrase or pkcs11, as the server was started")
	passFile := fs.String("master-passphrase-file", "", "with --master-key passphrase: file holding the passphrase")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	var res *backup.Result
	if *data == "" {
		c, err := af.client(env)
		if err != nil {
			return err
		}
		res = &backup.Result{}
		if err := c.Do(ctx, http.MethodPost, "/v1/backups", nil, res); err != nil {
			return err
		}
	} else {
		if *cfgFile == "" || *td == "" {
			return usagef("--data needs --config and --trust-domain")
		}
		var err error
		if res, err = createOffline(ctx, env, *data, *cfgFile, *td, *pg, *kekFile, *masterKey, *passFile); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(env, res)
	}
	if err := printFields(env, "backup", strconv.FormatInt(res.Seq, 10), "manifest", res.Hash, "created", fmtTime(res.Created),
		"files", strconv.Itoa(res.Files), "bytes", strconv.FormatInt(res.Bytes, 10), "stored", strconv.FormatInt(res.Stored, 10),
		"reused", strconv.Itoa(res.Reused)+" files already stored", "took", res.Duration.Round(time.Millisecond).String()); err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(env.stderr, "WARNING:", w)
	}
	return nil
}

// createOffline makes a backup of a stopped server's data directory.
func createOffline(ctx context.Context, env *cliEnv, data, cfgFile, tdName, pg, kekFile, masterKey, passFile string) (*backup.Result, error) {
	bc, err := loadBackupConfig(cfgFile)
	if err != nil {
		return nil, err
	}
	tdom, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, usagef("--trust-domain: %v", err)
	}
	src, err := keywrap.ParseSource(masterKey)
	if err != nil {
		return nil, usagef("--master-key: %v", err)
	}
	if kekFile == "" {
		kekFile = filepath.Join(data, "keys", "kek")
	}
	mc := keywrap.MasterConfig{Source: src, File: kekFile, SealedFile: filepath.Join(data, "keys", "kek.sealed"),
		Passphrase: secretReader(env, passFile, "Passphrase of the key-encryption key: ")}
	if src == keywrap.SourceFile {
		if _, err := os.Stat(kekFile); err != nil {
			return nil, fmt.Errorf("the KEK: %w", err)
		}
	}
	w, err := keywrap.Load(mc)
	if err != nil {
		return nil, err
	}
	var st store.Store
	if pg != "" {
		st, err = store.OpenPostgres(ctx, pg)
	} else {
		p := filepath.Join(data, "rampart.db")
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s is not a server data directory: %w", data, err)
		}
		st, err = store.OpenSQLite(p)
	}
	if err != nil {
		return nil, err
	}
	defer st.Close()
	skey, err := os.ReadFile(filepath.Join(data, "keys", "audit.key"))
	if err != nil {
		return nil, fmt.Errorf("the audit key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, err
	}
	origin := tdom.Name() + "/audit"
	l, err := audit.OpenWith(filepath.Join(data, "audit"), origin, audit.Options{Actor: audit.Actor{User: "operator"}})
	if err != nil {
		return nil, fmt.Errorf("%w (is the server running? then run rampart backup create without --data)", err)
	}
	defer l.CloseWithCheckpoint(signer)
	b, err := backup.New(backup.Config{DataDir: data, TrustDomain: tdom.Name(), Store: st.(store.Snapshotter), Audit: l, AuditSigner: signer,
		AuditOrigin: origin, KEK: w, MasterSource: string(src), KEKFile: kekFile, IncludeKEK: bc.IncludeKEK,
		Destinations: bc.Destinations, Recipients: bc.Recipients, RecipientNames: bc.RecipientNames, Passphrase: bc.Passphrase,
		PartSize: bc.PartSize, Progress: progressTo(env)})
	if err != nil {
		return nil, err
	}
	r := &backup.Runner{Backuper: b, Record: func(ctx context.Context, e *audit.Entry) {
		if _, err := l.AppendEntries(ctx, e); err != nil {
			fmt.Fprintln(env.stderr, "rampart backup: AUDIT LOG WRITE FAILED:", err)
		}
	}}
	return r.CreateNow(ctx, audit.Actor{User: "operator"})
}

func backupList(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "backup list", "rampart backup list --dest URL... --pubkey FILE [--json]")
	var sf sourceFlags
	addSourceFlags(fs, &sf)
	seenFile := fs.String("seen", defaultSeenFile(env), "file keeping the highest backup seen (a restore refuses older ones)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	src, err := sf.source(false)
	if err != nil {
		return err
	}
	list, err := backup.List(ctx, src)
	if err != nil {
		return err
	}
	seen, err := backup.LoadSeen(*seenFile)
	if err != nil {
		return err
	}
	for _, e := range list {
		if e.Problem == "" {
			if err := seen.Record(*seenFile, src.Verifier, e.Seq); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		if list == nil {
			list = []backup.Entry{}
		}
		return printJSON(env, list)
	}
	t := table(env, "SEQ", "CREATED", "FILES", "BYTES", "AUDIT", "HELD BY", "MANIFEST")
	bad := 0
	for _, e := range list {
		m := e.Hash
		if len(m) > 12 {
			m = m[:12]
		}
		if e.Problem != "" {
			m, bad = "PROBLEM: "+e.Problem, bad+1
		}
		t.row(strconv.FormatInt(e.Seq, 10), fmtTime(e.Created), strconv.Itoa(e.Files), strconv.FormatInt(e.Bytes, 10),
			strconv.FormatInt(e.AuditSize, 10), strconv.Itoa(len(e.Held))+"/"+strconv.Itoa(len(src.Destinations)), m)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d backups do not verify", bad)
	}
	return nil
}

func backupVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "backup verify", "rampart backup verify --dest URL... --pubkey FILE [-i IDENTITY] [--seq N] [--json]")
	var sf sourceFlags
	addSourceFlags(fs, &sf)
	seq := fs.Int64("seq", 0, "the backup to verify (default: the newest)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	src, err := sf.source(false)
	if err != nil {
		return err
	}
	reps, err := backup.Verify(ctx, src, *seq, progressTo(env))
	if *asJSON && err == nil {
		return printJSON(env, reps)
	}
	for _, r := range reps {
		what := "objects checked (no identity: not decrypted)"
		if r.Decrypted {
			what = fmt.Sprintf("decrypted and checked, %d bytes", r.Bytes)
		}
		fmt.Fprintf(env.stdout, "OK backup %d in %s: signature, %d files, %d objects %s\n", r.Seq, r.From, r.Files, r.Objects, what)
	}
	return err
}

func backupRestore(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "backup restore", "rampart backup restore --dest URL... --pubkey FILE -i IDENTITY --data NEWDIR [flags]")
	var sf sourceFlags
	addSourceFlags(fs, &sf)
	var cfg backup.RestoreConfig
	fs.StringVar(&cfg.DataDir, "data", "", "the new data directory (must not exist or be empty); required")
	fs.Int64Var(&cfg.Seq, "seq", 0, "the backup to restore (default: the newest)")
	fs.StringVar(&cfg.PostgresDSN, "postgres", "", "for a PostgreSQL store: the empty schema to load it into")
	fs.StringVar(&cfg.KEKFile, "kek-file", "", "the key-encryption key kept apart from the backups (file master key)")
	passFile := fs.String("master-passphrase-file", "", "with a passphrase master key: file holding it (default: ask on the terminal)")
	fs.StringVar(&cfg.PKCS11.Module, "pkcs11-module", "", "with a pkcs11 master key: the PKCS#11 library")
	pinFile := fs.String("pkcs11-pin-file", "", "with a pkcs11 master key: file holding the user PIN")
	fs.StringVar(&cfg.SeenFile, "seen", defaultSeenFile(env), "file keeping the highest backup seen: an older one is refused")
	fs.Int64Var(&cfg.MinSeq, "min-seq", 0, "refuse backups older than this one (known from elsewhere, e.g. the last backup.create entry)")
	fs.BoolVar(&cfg.AllowRollback, "allow-rollback", false, "restore a backup older than one seen, and record that")
	fs.StringVar(&cfg.Reason, "reason", "", "why, for the backup.restore audit entry")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return usagef("--data is required: the new, empty data directory")
	}
	var err error
	if cfg.Source, err = sf.source(true); err != nil {
		return err
	}
	cfg.MasterPassphrase = secretReader(env, *passFile, "Passphrase of the key-encryption key: ")
	cfg.PKCS11.PIN = secretReader(env, *pinFile, "PKCS#11 user PIN: ")
	cfg.Actor = audit.Actor{User: operatorName(env)}
	cfg.Progress = progressTo(env)
	res, err := backup.Restore(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, res)
	}
	fmt.Fprintf(env.stdout, "restored backup %d (made %s, manifest %.12s) from %s into %s: %d files, %d bytes; audit log of %d entries rebuilt and checked against its signed checkpoints\n",
		res.Seq, fmtTime(res.Created), res.Hash, res.From, cfg.DataDir, res.Files, res.Bytes, res.AuditSize)
	if res.Rollback {
		fmt.Fprintln(env.stderr, "WARNING: an older backup than one seen was restored (--allow-rollback); the backup.restore entry says so")
	}
	return nil
}

func operatorName(env *cliEnv) string {
	if u := env.getenv("USER"); u != "" {
		return u
	}
	return "operator"
}

func backupDrill(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "backup drill", "rampart backup drill [--json] | rampart backup drill --dest URL... --pubkey FILE -i IDENTITY --trust-domain TD [flags]")
	af := addAdminFlags(fs)
	var sf sourceFlags
	addSourceFlags(fs, &sf)
	td := fs.String("trust-domain", "", "with --dest: the trust domain of the backups")
	kekFile := fs.String("kek-file", "", "with --dest: the key-encryption key kept apart from the backups")
	pg := fs.String("postgres", "", "with --dest, for a PostgreSQL store: a database where the drill may make (and drop) a scratch schema")
	scratch := fs.String("scratch", os.TempDir(), "with --dest: where the scratch data directory goes")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	var rep *backup.DrillReport
	if len(sf.dests) == 0 {
		c, err := af.client(env)
		if err != nil {
			return err
		}
		rep = &backup.DrillReport{}
		if err := c.Do(ctx, http.MethodPost, "/v1/backups/drill", nil, rep); err != nil {
			return err
		}
	} else {
		src, err := sf.source(true)
		if err != nil {
			return err
		}
		tdom, err := spiffeid.TrustDomainFromString(*td)
		if err != nil {
			return usagef("--trust-domain: %v", err)
		}
		if *kekFile == "" {
			return usagef("--kek-file is required with --dest (the drill's server unwraps the backup's keys with it)")
		}
		w, err := keywrap.Load(keywrap.MasterConfig{Source: keywrap.SourceFile, File: *kekFile})
		if err != nil {
			return err
		}
		dc := backup.DrillConfig{Source: src, Scratch: *scratch, Wrapper: w, Boot: server.DrillBoot(tdom, w, discardLogger())}
		if *pg != "" {
			dsn, drop, err := store.ScratchSchema(ctx, *pg)
			if err != nil {
				return err
			}
			defer drop()
			dc.PostgresDSN = dsn
		}
		rep = backup.Drill(ctx, dc)
	}
	if *asJSON {
		if err := printJSON(env, rep); err != nil {
			return err
		}
	} else {
		for _, c := range rep.Checks {
			mark := "ok    "
			if !c.OK {
				mark = "FAILED"
			}
			fmt.Fprintf(env.stdout, "%s %-13s %s\n", mark, c.Name, c.Detail)
		}
		fmt.Fprintf(env.stdout, "drill of backup %d (%s old) took %s\n", rep.Seq, rep.BackupAge.Round(time.Second), rep.Duration.Round(time.Millisecond))
	}
	if !rep.OK {
		return fmt.Errorf("the drill failed: %s", rep.Error)
	}
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
