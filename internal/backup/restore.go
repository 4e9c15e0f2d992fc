package backup

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// Source is where restores, verifies and drills read backups: the
// destinations, the backup public key (from outside them) and what
// decrypts (identities, or the passphrase).
type Source struct {
	Destinations []Destination
	Verifier     note.Verifier
	Identities   []age.Identity
	Passphrase   func() ([]byte, error)
}

// ErrRollback refuses a backup older than one already seen.
var ErrRollback = errors.New("backup: rollback")

// Chosen is the backup a restore or verify reads.
type Chosen struct {
	Manifest *Manifest
	Signed   []byte
	From     Destination
	// Newest is the highest seq a destination holds (signed by the key).
	Newest int64
}

// Choose reads backup seq (0: the newest any destination holds) from the
// first destination that has it. It consults every destination, so one
// that lost its newest backups (or an attacker who deleted them there)
// does not make an older one look newest.
func (s Source) Choose(ctx context.Context, seq int64) (*Chosen, error) {
	if s.Verifier == nil {
		return nil, errors.New("backup: the backup public key is required (DATA/backup.pub, kept outside the destinations)")
	}
	c := &Chosen{}
	holders := map[int64][]Destination{}
	var errs []string
	for _, d := range s.Destinations {
		seqs, err := listSeqs(ctx, d)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, q := range seqs {
			holders[q] = append(holders[q], d)
		}
		if l := len(seqs); l > 0 {
			// Only a manifest signed by the key counts as seen.
			if lt, err := newest(ctx, d, s.Verifier); err == nil {
				c.Newest = max(c.Newest, lt.seq)
			} else {
				errs = append(errs, err.Error())
			}
		}
	}
	want := seq
	if want == 0 {
		want = c.Newest
	}
	if want == 0 {
		if len(errs) > 0 {
			return nil, fmt.Errorf("backup: no backup can be read: %s", strings.Join(errs, "; "))
		}
		return nil, errors.New("backup: the destinations hold no backup")
	}
	var lastErr error
	for _, d := range holders[want] {
		signed, err := d.Get(ctx, ManifestKey(want), MaxManifest)
		if err != nil {
			lastErr = fmt.Errorf("backup: %s: %w", d, err)
			continue
		}
		m, err := ParseManifest(signed, s.Verifier)
		if err != nil {
			lastErr = fmt.Errorf("%w (%s in %s)", err, ManifestKey(want), d)
			continue
		}
		if m.Seq != want {
			lastErr = fmt.Errorf("backup: %s in %s holds backup %d", ManifestKey(want), d, m.Seq)
			continue
		}
		c.Manifest, c.Signed, c.From = m, signed, d
		return c, nil
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, fmt.Errorf("backup: no destination holds backup %d", want)
}

// identities are what decrypts: the given ones, and the passphrase
// identity from the destination.
func (s Source) identities(ctx context.Context, d Destination) ([]age.Identity, error) {
	ids := append([]age.Identity(nil), s.Identities...)
	if s.Passphrase != nil {
		p, err := s.Passphrase()
		if err != nil {
			return nil, fmt.Errorf("backup: passphrase: %w", err)
		}
		id, err := openPassphraseIdentity(ctx, d, p)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// checkObjects checks that d lists every part of m at its size.
func checkObjects(ctx context.Context, d Destination, m *Manifest) error {
	have, err := objectSizes(ctx, d)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	for _, f := range m.Files {
		for _, p := range f.Parts {
			n, ok := have[p.Key()]
			if !ok {
				return &PartError{f.Path, p.Key(), fmt.Sprintf("is missing from %s", d)}
			}
			if n != p.Size {
				return &PartError{f.Path, p.Key(), fmt.Sprintf("in %s is %d bytes, the manifest says %d", d, n, p.Size)}
			}
		}
	}
	return nil
}

// Seen is the highest backup seq seen per backup key, kept by whoever
// restores (by default in ~/.local/state/rampart/backup-seen.json),
// outside every destination: an attacker who controls the destinations
// can hide newer backups there, not here.
type Seen map[string]int64

// LoadSeen reads a seen file (a missing one is empty).
func LoadSeen(path string) (Seen, error) {
	s := Seen{}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("backup: %s: %w", path, err)
	}
	return s, nil
}

// Record raises the highest seq seen for v's key and saves it.
func (s Seen) Record(path string, v note.Verifier, seq int64) error {
	k := fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
	if path == "" || s[k] >= seq {
		return nil
	}
	s[k] = seq
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return atomicfile.Write(path, b, 0o600)
}

// Highest is the highest seq seen for v's key.
func (s Seen) Highest(v note.Verifier) int64 {
	return s[fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())]
}

// RestoreConfig says what to restore and where.
type RestoreConfig struct {
	Source
	// Seq is the backup to restore (0: the newest).
	Seq int64
	// SeenFile keeps the highest seq seen (see Seen); MinSeq adds one
	// known otherwise. A backup older than either, or than the newest a
	// destination holds, is refused unless AllowRollback.
	SeenFile      string
	MinSeq        int64
	AllowRollback bool
	// DataDir must not exist or be empty.
	DataDir string
	// PostgresDSN names the empty schema a PostgreSQL backup loads into.
	PostgresDSN string
	// The key-encryption key: the file source's KEK from outside (when
	// the backup does not include it), or the passphrase or HSM that
	// opens keys/kek.sealed.
	KEKFile          string
	MasterPassphrase func() ([]byte, error)
	PKCS11           keywrap.PKCS11Config
	// Wrapper, when set, is the KEK itself (a drill inside the server,
	// which holds it, asks for no passphrase or HSM again).
	Wrapper *keywrap.Wrapper
	// Actor names who restores, in the backup.restore entry.
	Actor    audit.Actor
	Reason   string
	Now      func() time.Time
	Progress io.Writer
}

// RestoreResult says what was restored.
type RestoreResult struct {
	Seq       int64            `json:"seq"`
	Hash      string           `json:"manifest_sha256"`
	Created   time.Time        `json:"created"`
	From      string           `json:"from"`
	Files     int              `json:"files"`
	Bytes     int64            `json:"bytes"`
	AuditSize int64            `json:"audit_size"` // before the backup.restore entry
	Tables    map[string]int64 `json:"tables"`
	Rollback  bool             `json:"rollback"` // an older backup, allowed
	Manifest  *Manifest        `json:"-"`
}

// Restore restores a backup into an empty data directory. It refuses a
// manifest whose signature does not verify with the key given, an object
// that is missing or differs from the manifest, a file whose size or hash
// differs, an audit log whose tree is not the one the manifest signed, a
// store whose row counts differ, and a backup older than one seen (unless
// AllowRollback). It writes into DATA.partial and renames it into place
// at the end, so a refused restore leaves no data directory behind (a
// PostgreSQL schema, once loaded, stays: drop it before trying again).
// The restored log gets a backup.restore entry and a checkpoint.
func Restore(ctx context.Context, cfg RestoreConfig) (*RestoreResult, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if ents, err := os.ReadDir(cfg.DataDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("backup: restore into %s: the directory is not empty; a restore writes into an empty data directory only", cfg.DataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("backup: %w", err)
	}
	c, err := cfg.Choose(ctx, cfg.Seq)
	if err != nil {
		return nil, err
	}
	m := c.Manifest
	seen, err := LoadSeen(cfg.SeenFile)
	if err != nil {
		return nil, err
	}
	floor := max(seen.Highest(cfg.Verifier), cfg.MinSeq, c.Newest)
	rollback := m.Seq < floor
	if rollback && !cfg.AllowRollback {
		return nil, fmt.Errorf("%w: backup %d is older than backup %d, already seen (a destination, the seen file %s, or --min-seq): restoring it would bring back what changed since (revoked credentials, old policies); --allow-rollback restores it anyway and records that", ErrRollback, m.Seq, floor, cfg.SeenFile)
	}
	if err := seen.Record(cfg.SeenFile, cfg.Verifier, max(m.Seq, c.Newest)); err != nil {
		return nil, err
	}
	if err := checkObjects(ctx, c.From, m); err != nil {
		return nil, err
	}
	ids, err := cfg.identities(ctx, c.From)
	if err != nil {
		return nil, err
	}
	partial := filepath.Clean(cfg.DataDir) + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := os.MkdirAll(partial, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	res, err := restoreInto(ctx, cfg, c, ids, partial, rollback)
	if err != nil {
		os.RemoveAll(partial)
		return nil, err
	}
	if err := syncTree(partial); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	os.Remove(cfg.DataDir) // empty, or absent
	if err := os.Rename(partial, cfg.DataDir); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := syncTree(filepath.Dir(cfg.DataDir)); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return res, nil
}

func restoreInto(ctx context.Context, cfg RestoreConfig, c *Chosen, ids []age.Identity, dir string, rollback bool) (*RestoreResult, error) {
	m := c.Manifest
	res := &RestoreResult{Seq: m.Seq, Hash: Hash(c.Signed), Created: m.Created, From: c.From.String(), Files: len(m.Files), Manifest: m, Rollback: rollback}
	prog := newProgress(cfg.Progress, "restore", cfg.Now)
	var sealed, rest []File
	for _, f := range m.Files {
		res.Bytes += f.Size
		switch f.Kind {
		case KindSealed:
			sealed = append(sealed, f)
		case KindStore:
			if err := restoreFile(ctx, cfg, m, c.From, f, ids, dir, prog, res); err != nil {
				return nil, err
			}
		default:
			rest = append(rest, f)
		}
	}
	// The other files are independent: two at a time (fetching,
	// decrypting and decompressing one keeps a core busy).
	if err := parallel(ctx, 2, rest, func(ctx context.Context, f File) error {
		return restoreFile(ctx, cfg, m, c.From, f, ids, dir, prog, res)
	}); err != nil {
		return nil, err
	}
	prog.finish()
	// The KEK: included, from outside, or sealed (passphrase, HSM).
	wrapper, err := loadKEK(cfg, m, dir)
	if err != nil {
		return nil, err
	}
	for _, f := range sealed {
		data, err := readAll(ctx, c.From, f, ids)
		if err != nil {
			return nil, err
		}
		plain, err := wrapper.Open(sealID(f.Path), data)
		if err != nil {
			return nil, fmt.Errorf("backup: %s does not open with the key-encryption key given (is it this deployment's?): %w", f.Path, err)
		}
		if err := writeFileAt(dir, f, plain); err != nil {
			return nil, err
		}
	}
	if err := restoreAudit(cfg, m, dir, res); err != nil {
		return nil, err
	}
	st := &state{Seq: max(m.Seq, c.Newest), Hash: Hash(c.Signed), Made: m.Created}
	if c.Newest > m.Seq {
		st.Hash = "" // the chain continues from the newest, read at the next backup
	}
	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	// The deployment's passphrase identity goes back too, so the restored
	// server encrypts its next backups to the same one.
	if enc, err := c.From.Get(ctx, identityKey, 1<<16); err == nil {
		if err := writeFileAt(dir, File{Path: "backup/identity.age", Mode: "0600"}, enc); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func restoreFile(ctx context.Context, cfg RestoreConfig, m *Manifest, d Destination, f File, ids []age.Identity, dir string, prog *progress, res *RestoreResult) error {
	fr, err := openFile(ctx, d, f, ids)
	if err != nil {
		return err
	}
	defer fr.Close()
	r := io.TeeReader(fr, prog)
	switch f.Kind {
	case KindStore:
		if f.Path == "store.dump" {
			if cfg.PostgresDSN == "" {
				return errors.New("backup: this backup's store is PostgreSQL: give the empty schema to load it into (--postgres)")
			}
			info, err := store.LoadPostgresDump(ctx, cfg.PostgresDSN, r)
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, r); err != nil { // the hash check at EOF
				return err
			}
			return checkCounts(m, info, res)
		}
		if err := writeStream(dir, f, r); err != nil {
			return err
		}
		st, err := store.OpenSQLite(filepath.Join(dir, f.Path))
		if err != nil {
			return err
		}
		defer st.Close()
		info, err := st.(store.Snapshotter).Counts(ctx)
		if err != nil {
			return err
		}
		return checkCounts(m, info, res)
	case KindArchive:
		return extractTar(dir, r, fr)
	default:
		return writeStream(dir, f, r)
	}
}

func checkCounts(m *Manifest, info store.SnapshotInfo, res *RestoreResult) error {
	res.Tables = info.Tables
	if m == nil {
		return nil
	}
	for t, n := range m.Store.Tables {
		if info.Tables[t] != n {
			return fmt.Errorf("backup: the restored store's table %s holds %d rows, the manifest says %d", t, info.Tables[t], n)
		}
	}
	return nil
}

// writeStream writes r to f's path in dir (at f.Offset, the file sparse
// before it), then checks nothing was left unread.
func writeStream(dir string, f File, r io.Reader) error {
	p := filepath.Join(dir, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	mode, err := parseMode(f.Mode)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer out.Close()
	if f.Offset > 0 {
		if err := out.Truncate(f.Offset); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if _, err := out.Seek(f.Offset, io.SeekStart); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	if _, err := io.Copy(out, r); err != nil {
		return err
	}
	return out.Sync()
}

func writeFileAt(dir string, f File, data []byte) error {
	mode, err := parseMode(f.Mode)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return atomicfile.Write(p, data, mode)
}

func parseMode(s string) (os.FileMode, error) {
	var mode uint32
	if _, err := fmt.Sscanf(s, "%o", &mode); err != nil || mode > 0o777 {
		return 0, fmt.Errorf("backup: mode %q", s)
	}
	return os.FileMode(mode), nil
}

// readAll reads a small file of the backup whole.
func readAll(ctx context.Context, d Destination, f File, ids []age.Identity) ([]byte, error) {
	if f.Size > 1<<20 {
		return nil, fmt.Errorf("backup: %s: %d bytes is too large for a secret", f.Path, f.Size)
	}
	fr, err := openFile(ctx, d, f, ids)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	return io.ReadAll(fr)
}

// extractTar writes the members of an archive file, each a path under
// audit/, then reads fr to its end (the hash check).
func extractTar(dir string, r io.Reader, fr *fileReader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("backup: archive: %w", err)
		}
		if checkPath(h.Name) != nil || !strings.HasPrefix(h.Name, "audit/") || h.Typeflag != tar.TypeReg {
			return fmt.Errorf("backup: archive: member %q is not a file under audit/", h.Name)
		}
		if h.Size > 1<<30 {
			return fmt.Errorf("backup: archive: member %q is %d bytes", h.Name, h.Size)
		}
		if err := writeStream(dir, File{Path: h.Name, Mode: fmt.Sprintf("%04o", h.Mode&0o777)}, tr); err != nil {
			return err
		}
	}
	_, err := io.Copy(io.Discard, fr)
	return err
}

// loadKEK returns the key-encryption key the restored data directory uses.
func loadKEK(cfg RestoreConfig, m *Manifest, dir string) (*keywrap.Wrapper, error) {
	if cfg.Wrapper != nil {
		return cfg.Wrapper, nil
	}
	mc := keywrap.MasterConfig{Passphrase: cfg.MasterPassphrase, PKCS11: cfg.PKCS11, SealedFile: filepath.Join(dir, "keys", "kek.sealed")}
	var err error
	if mc.Source, err = keywrap.ParseSource(m.KEK.Source); err != nil {
		return nil, fmt.Errorf("backup: manifest: %w", err)
	}
	if mc.Source != keywrap.SourceFile {
		return keywrap.Load(mc)
	}
	if m.KEK.Included {
		mc.File = filepath.Join(dir, "keys", "kek")
	} else {
		if cfg.KEKFile == "" {
			return nil, errors.New("backup: this backup does not include the key-encryption key (the default): give the copy kept apart from the backups (--kek-file)")
		}
		if _, err := os.Stat(cfg.KEKFile); err != nil {
			return nil, fmt.Errorf("backup: --kek-file: %w", err)
		}
		mc.File = cfg.KEKFile
	}
	w, err := keywrap.Load(mc)
	if err != nil {
		return nil, err
	}
	if !m.KEK.Included && m.KEK.InDataDir {
		data, err := os.ReadFile(cfg.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		if err := writeFileAt(dir, File{Path: "keys/kek", Mode: "0600"}, data); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// restoreAudit rebuilds the restored log, checks it is the tree the
// manifest names, verifies it, and records the restore in it.
func restoreAudit(cfg RestoreConfig, m *Manifest, dir string, res *RestoreResult) error {
	logDir := filepath.Join(dir, "audit")
	if m.Audit.Origin == "" { // a forwarding replica's backup: no log
		return nil
	}
	n, root, err := audit.Rebuild(logDir)
	if err != nil {
		return err
	}
	if n != m.Audit.Size || hex.EncodeToString(root[:]) != m.Audit.Root {
		return fmt.Errorf("backup: the restored audit log holds %d entries with root %x; the manifest says %d entries, root %s", n, root, m.Audit.Size, m.Audit.Root)
	}
	pub, err := os.ReadFile(filepath.Join(dir, "audit.pub"))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		return fmt.Errorf("backup: audit.pub: %w", err)
	}
	// Rebuild re-derived the tree from every entry and it is the root the
	// manifest signed; every checkpoint must be signed by the log's key
	// and name a root of that tree. (A drill runs the full verify.)
	if _, err := audit.CheckCheckpoints(logDir, v); err != nil {
		return fmt.Errorf("backup: the restored audit log does not verify: %w", err)
	}
	res.AuditSize = n
	skey, err := os.ReadFile(filepath.Join(dir, "keys", "audit.key"))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return fmt.Errorf("backup: audit.key: %w", err)
	}
	l, err := audit.OpenWith(logDir, m.Audit.Origin, audit.Options{Actor: cfg.Actor, Now: cfg.Now})
	if err != nil {
		return err
	}
	actor := cfg.Actor
	if actor == (audit.Actor{}) {
		actor = audit.Actor{User: "operator"}
	}
	e := &audit.Entry{V: audit.SchemaVersion, Time: cfg.Now(), Actor: actor, Action: "backup.restore", Target: "backup", Outcome: audit.OutcomeSuccess,
		Reason: cfg.Reason, Source: "server", Details: map[string]string{"seq": fmt.Sprint(m.Seq), "manifest_sha256": res.Hash,
			"created": m.Created.UTC().Format(time.RFC3339), "from": res.From, "rollback": fmt.Sprint(res.Rollback)}}
	if _, err := l.AppendEntries(context.Background(), e); err != nil {
		l.Close()
		return err
	}
	_, err = l.CloseWithCheckpoint(signer)
	return err
}

// parallel runs fn on each item, n at a time, and returns the first error
// (the others are cancelled).
func parallel[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, it); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
