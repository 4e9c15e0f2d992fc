package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/objstore"
	"github.com/rampartsec/rampart/internal/store"
)

// AuditLog is the audit log a backup copies (audit.Log).
type AuditLog interface {
	Backup(signer note.Signer, fn func(*audit.BackupView) error) error
}

// Sealer seals secrets with the key-encryption key (keywrap.Wrapper).
type Sealer interface {
	Seal(id string, secret []byte) ([]byte, error)
}

// Unsealer opens what a Sealer sealed.
type Unsealer interface {
	Open(id string, sealed []byte) ([]byte, error)
}

// Config is what a backup reads and where it writes.
type Config struct {
	DataDir     string
	TrustDomain string
	Store       store.Snapshotter
	// Audit is the audit log (nil on a replica that forwards its
	// entries: the holder's backups carry the log). AuditSigner signs
	// the checkpoint the backup takes; AuditOrigin is the log's origin.
	Audit       AuditLog
	AuditSigner note.Signer
	AuditOrigin string
	// KEK seals the data directory's secrets inside the backup.
	KEK          Sealer
	MasterSource string // file, passphrase or pkcs11
	// KEKFile is the file source's KEK; IncludeKEK puts it in the backup
	// (off by default: see docs/backup.md, "Keys").
	KEKFile    string
	IncludeKEK bool

	Destinations []Destination
	// Recipients (with their text forms) every object is encrypted to;
	// Passphrase, when set, adds the deployment's passphrase identity.
	Recipients     []age.Recipient
	RecipientNames []string
	Passphrase     func() ([]byte, error)
	PartSize       int
	Now            func() time.Time
	Log            *slog.Logger
	// Progress, when set (a terminal), hears how far a backup has come.
	Progress io.Writer
}

// Backuper makes backups.
type Backuper struct {
	cfg    Config
	signer note.Signer
	pub    string
	verify note.Verifier
}

// New checks cfg and loads (or makes) the backup signing key.
func New(cfg Config) (*Backuper, error) {
	switch {
	case cfg.DataDir == "" || cfg.TrustDomain == "" || cfg.Store == nil:
		return nil, errors.New("backup: a data directory, a trust domain and a store are required")
	case len(cfg.Destinations) == 0:
		return nil, errors.New("backup: no destination")
	case len(cfg.Recipients) == 0 && cfg.Passphrase == nil:
		return nil, errors.New("backup: no recipient and no passphrase: backups are always encrypted")
	case cfg.KEK == nil:
		return nil, errors.New("backup: the key-encryption key is required (it seals the secrets in a backup)")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	signer, pub, err := signingKey(cfg.DataDir, cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	v, err := ParseVerifier(pub)
	if err != nil {
		return nil, err
	}
	return &Backuper{cfg: cfg, signer: signer, pub: pub, verify: v}, nil
}

// PublicKey is the backup public key (DATA/backup.pub).
func (b *Backuper) PublicKey() string { return b.pub }

// Destinations are the configured destinations.
func (b *Backuper) Destinations() []Destination { return b.cfg.Destinations }

// Result says what Create made.
type Result struct {
	Seq      int64         `json:"seq"`
	Hash     string        `json:"manifest_sha256"`
	Created  time.Time     `json:"created"`
	Files    int           `json:"files"`
	Bytes    int64         `json:"bytes"`  // plaintext bytes in the backup
	Stored   int64         `json:"stored"` // bytes written to each destination (new objects)
	Reused   int           `json:"reused"` // files whose objects an earlier backup had stored
	Duration time.Duration `json:"duration_ns"`
	// Warnings: what is wrong but did not stop the backup (a destination
	// whose newest backup is older than one this server made).
	Warnings []string  `json:"warnings,omitempty"`
	Manifest *Manifest `json:"-"`
}

// state is what the server remembers of its backups (DATA/backup/state.json).
type state struct {
	Seq  int64  `json:"seq"`  // the last seq used
	Hash string `json:"hash"` // its manifest's hash
	// Made is when the last backup every destination holds was made.
	Made time.Time `json:"made"`
	// Drill bookkeeping (see Runner).
	Since        time.Time `json:"since"`
	LastAttempt  time.Time `json:"last_attempt"`
	LastDrill    time.Time `json:"last_drill"`
	LastDrillOK  time.Time `json:"last_drill_ok"`
	LastOverdue  time.Time `json:"last_overdue"`
	LastBOverdue time.Time `json:"last_backup_overdue"`
	// Unreferenced objects seen by the last prune: deleted by the next
	// one if still unreferenced (a grace period for a backup being
	// written by another process).
	Unreferenced map[string][]string `json:"unreferenced,omitempty"`
}

func statePath(dataDir string) string { return filepath.Join(dataDir, "backup", "state.json") }

func loadState(dataDir string) (*state, error) {
	b, err := os.ReadFile(statePath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return &state{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("backup: %s: %w", statePath(dataDir), err)
	}
	return &s, nil
}

func saveState(dataDir string, s *state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(statePath(dataDir)), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return atomicfile.Write(statePath(dataDir), b, 0o600)
}

// latest is the newest manifest a destination holds.
type latest struct {
	seq    int64
	signed []byte
	m      *Manifest
}

// newest reads the newest manifest of d that verifies with v; a
// destination with none gives seq 0.
func newest(ctx context.Context, d Destination, v note.Verifier) (latest, error) {
	seqs, err := listSeqs(ctx, d)
	if err != nil || len(seqs) == 0 {
		return latest{}, err
	}
	seq := seqs[len(seqs)-1]
	signed, err := d.Get(ctx, ManifestKey(seq), MaxManifest)
	if err != nil {
		return latest{}, fmt.Errorf("backup: %s: %w", d, err)
	}
	m, err := ParseManifest(signed, v)
	if err != nil {
		return latest{}, fmt.Errorf("backup: %s: %s: %w", d, ManifestKey(seq), err)
	}
	if m.Seq != seq {
		return latest{}, fmt.Errorf("backup: %s: %s holds backup %d (renamed?)", d, ManifestKey(seq), m.Seq)
	}
	return latest{seq: seq, signed: signed, m: m}, nil
}

// listSeqs lists the backups (manifest seqs) a destination holds, sorted.
func listSeqs(ctx context.Context, d Destination) ([]int64, error) {
	objs, err := d.List(ctx, "manifests/")
	if err != nil {
		return nil, fmt.Errorf("backup: %s: %w", d, err)
	}
	var out []int64
	for _, o := range objs {
		var seq int64
		name := strings.TrimPrefix(o.Key, "manifests/")
		if _, err := fmt.Sscanf(name, "%d", &seq); err != nil || ManifestKey(seq) != o.Key {
			continue
		}
		out = append(out, seq)
	}
	slices.Sort(out)
	return out, nil
}

// Create makes one backup and stores it in every destination: the objects
// first, the manifest last, then it checks that every destination lists
// every object at its size and holds the manifest as signed. A backup
// counts as made only when all of that holds in every destination.
func (b *Backuper) Create(ctx context.Context) (*Result, error) {
	start := b.cfg.Now()
	res, err := b.create(ctx)
	if res != nil {
		res.Duration = b.cfg.Now().Sub(start)
	}
	return res, err
}

func (b *Backuper) create(ctx context.Context) (*Result, error) {
	cfg := b.cfg
	st, err := loadState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	res := &Result{Created: cfg.Now().UTC()}
	// The chain continues from the newest backup anywhere: this server's
	// record or a destination (after a restore, the record is the
	// backup's; destinations may hold newer ones).
	prevSeq, prevHash := st.Seq, st.Hash
	var base *Manifest
	for _, d := range cfg.Destinations {
		l, err := newest(ctx, d, b.verify)
		if err != nil {
			return nil, err
		}
		if l.seq < st.Seq && st.Seq > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s: the newest backup there is %d, but this server made %d: backups were deleted there", d, l.seq, st.Seq))
		}
		if l.m != nil && (l.seq > prevSeq || (l.seq == prevSeq && (prevHash == "" || Hash(l.signed) == prevHash))) {
			prevSeq, prevHash, base = l.seq, Hash(l.signed), l.m
		}
	}
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, TrustDomain: cfg.TrustDomain, Seq: prevSeq + 1,
		Prev: prevHash, Created: res.Created, KEK: KEKInfo{Source: cfg.MasterSource}}
	if m.Seq == 1 {
		m.Prev = ""
	}
	recipients := slices.Clone(cfg.Recipients)
	m.Recipients = slices.Clone(cfg.RecipientNames)
	var identityFile []byte
	if cfg.Passphrase != nil {
		r, name, file, err := passphraseIdentity(cfg.DataDir, cfg.Passphrase)
		if err != nil {
			return nil, err
		}
		recipients = append(recipients, r)
		m.Recipients = append(m.Recipients, name)
		identityFile = file
	}
	if identityFile != nil {
		for _, d := range cfg.Destinations {
			// Written once: replacing it would orphan every backup
			// encrypted to the identity it holds.
			have, err := d.Get(ctx, identityKey, 1<<16)
			switch {
			case err == nil && bytes.Equal(have, identityFile):
				continue
			case err == nil:
				return nil, fmt.Errorf("backup: %s holds another passphrase identity (%s) than DATA/backup/identity.age: not replaced (restore the data directory's, or use another destination)", d, identityKey)
			case !errors.Is(err, objstore.ErrNotFound):
				return nil, fmt.Errorf("backup: %s: %w", d, err)
			}
			if err := d.Put(ctx, identityKey, identityFile); err != nil {
				return nil, fmt.Errorf("backup: %s: %w", d, err)
			}
		}
	}
	scratch := filepath.Join(cfg.DataDir, "backup", "tmp")
	os.RemoveAll(scratch)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(scratch)

	prog := newProgress(cfg.Progress, "backup", cfg.Now)
	ow := newObjectWriter(ctx, cfg.Destinations, recipients, cfg.PartSize, prog)
	err = b.collect(ctx, ow, m, base, scratch, res)
	if cerr := ow.close(); err == nil {
		err = cerr
	}
	prog.finish()
	if err != nil {
		return nil, err
	}
	res.Stored = ow.sent
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	signed, err := m.Sign(b.signer)
	if err != nil {
		return nil, err
	}
	// The seq is spent before any destination sees it: never reused.
	st.Seq, st.Hash = m.Seq, Hash(signed)
	if err := saveState(cfg.DataDir, st); err != nil {
		return nil, err
	}
	res.Seq, res.Hash, res.Manifest, res.Files = m.Seq, st.Hash, m, len(m.Files)
	for _, f := range m.Files {
		res.Bytes += f.Size
	}
	var failed []string
	for _, d := range cfg.Destinations {
		if err := d.Put(ctx, ManifestKey(m.Seq), signed); err != nil {
			failed = append(failed, err.Error())
			continue
		}
		if err := checkHeld(ctx, d, m, signed); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("backup: backup %d is not held by every destination: %s", m.Seq, strings.Join(failed, "; "))
	}
	st.Made = res.Created
	if err := saveState(cfg.DataDir, st); err != nil {
		return res, err
	}
	return res, nil
}

// checkHeld checks, after a write, that d lists every object of m at its
// size and returns the manifest as it was signed.
func checkHeld(ctx context.Context, d Destination, m *Manifest, signed []byte) error {
	got, err := d.Get(ctx, ManifestKey(m.Seq), MaxManifest)
	if err != nil {
		return fmt.Errorf("%s: read back the manifest: %w", d, err)
	}
	if !bytes.Equal(got, signed) {
		return fmt.Errorf("%s: the manifest read back differs from the one written", d)
	}
	have, err := objectSizes(ctx, d)
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		for _, p := range f.Parts {
			if n, ok := have[p.Key()]; !ok || n != p.Size {
				return fmt.Errorf("%s: object %s of %s is missing or of the wrong size after writing", d, p.Key(), f.Path)
			}
		}
	}
	return nil
}

func objectSizes(ctx context.Context, d Destination) (map[string]int64, error) {
	objs, err := d.List(ctx, "objects/")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	have := make(map[string]int64, len(objs))
	for _, o := range objs {
		have[o.Key] = o.Size
	}
	return have, nil
}

// collect stores every file of the backup and lists it in m.
func (b *Backuper) collect(ctx context.Context, ow *objectWriter, m *Manifest, base *Manifest, scratch string, res *Result) error {
	cfg := b.cfg
	add := func(path, kind string, mode os.FileMode, offset int64, r io.Reader, compress bool) error {
		f, err := ow.file(r, compress)
		if err != nil {
			return fmt.Errorf("backup: %s: %w", path, err)
		}
		f.Path, f.Kind, f.Mode, f.Offset = path, kind, fmt.Sprintf("%04o", mode.Perm()), offset
		m.Files = append(m.Files, f)
		return nil
	}

	// The store first: the audit log copied after it holds a record of
	// every change the store snapshot has (and of some it may not).
	pr, pw := io.Pipe()
	infoc := make(chan store.SnapshotInfo, 1)
	errc := make(chan error, 1)
	go func() {
		info, err := cfg.Store.Snapshot(ctx, scratch, pw)
		pw.CloseWithError(err)
		infoc <- info
		errc <- err
	}()
	name := "rampart.db"
	if err := add(name, KindStore, 0o600, 0, pr, true); err != nil {
		pr.CloseWithError(err)
		<-errc
		return err
	}
	info := <-infoc
	if err := <-errc; err != nil {
		return err
	}
	if info.Backend == "postgres" {
		m.Files[len(m.Files)-1].Path = "store.dump"
	}
	m.Store = StoreInfo{Backend: info.Backend, SchemaVersion: info.SchemaVersion, Tables: info.Tables}

	if err := b.collectDataDir(add, m); err != nil {
		return err
	}
	if cfg.Audit == nil {
		m.Audit = AuditInfo{Root: hex.EncodeToString(make([]byte, 32))}
		return nil
	}
	return cfg.Audit.Backup(cfg.AuditSigner, func(v *audit.BackupView) error {
		m.Audit = AuditInfo{Origin: cfg.AuditOrigin, Size: v.Size, Root: hex.EncodeToString(v.Root[:]), Sealed: v.Sealed}
		reuse, err := b.reusable(ctx, base)
		if err != nil {
			return err
		}
		for _, seg := range v.Segments {
			path := "audit/segments/" + filepath.Base(seg)
			fi, err := os.Stat(seg)
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if f, ok := reuse[path]; ok && f.Size == fi.Size() {
				m.Files = append(m.Files, f)
				res.Reused++
				continue
			}
			fh, err := os.Open(seg)
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			err = add(path, KindSegment, 0o600, 0, fh, false) // already zstd
			fh.Close()
			if err != nil {
				return err
			}
		}
		eh, err := os.Open(filepath.Join(v.Dir, "entries.log"))
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		err = add("audit/entries.log", KindTail, 0o600, v.TailStart, io.NewSectionReader(eh, v.TailStart, v.TailEnd-v.TailStart), true)
		eh.Close()
		if err != nil {
			return err
		}
		if err := add("audit/checkpoint", KindFile, 0o644, 0, bytes.NewReader(v.Checkpoint), false); err != nil {
			return err
		}
		// Checkpoints and the quarantine: one tar.
		var members []string
		for _, c := range v.Checkpoints {
			members = append(members, "audit/checkpoints/"+filepath.Base(c))
		}
		for _, q := range v.Quarantine {
			members = append(members, "audit/"+q)
		}
		tr, tw := io.Pipe()
		go func() { tw.CloseWithError(writeTar(tw, filepath.Dir(v.Dir), members)) }()
		err = add("audit/checkpoints.tar", KindArchive, 0o600, 0, tr, true)
		tr.CloseWithError(err)
		return err
	})
}

// reusable lists the segment files of the base manifest whose objects
// every destination holds at their sizes: a later backup lists them
// without storing them again.
func (b *Backuper) reusable(ctx context.Context, base *Manifest) (map[string]File, error) {
	out := map[string]File{}
	if base == nil {
		return out, nil
	}
	var have []map[string]int64
	for _, d := range b.cfg.Destinations {
		h, err := objectSizes(ctx, d)
		if err != nil {
			return nil, err
		}
		have = append(have, h)
	}
next:
	for _, f := range base.Files {
		if f.Kind != KindSegment {
			continue
		}
		for _, p := range f.Parts {
			for _, h := range have {
				if n, ok := h[p.Key()]; !ok || n != p.Size {
					continue next
				}
			}
		}
		out[f.Path] = f
	}
	return out, nil
}

// collectDataDir adds the data directory's own files: the trust domain,
// public keys, and the secrets (keys/*, *.token), sealed by the KEK. Not
// the store (taken as a snapshot), the audit log (taken through its
// view), caches rebuilt at start (bundle.pem), spools or this package's
// own directory.
func (b *Backuper) collectDataDir(add func(string, string, os.FileMode, int64, io.Reader, bool) error, m *Manifest) error {
	cfg := b.cfg
	kekAbs, _ := filepath.Abs(cfg.KEKFile)
	inData := filepath.Join(cfg.DataDir, "keys", "kek")
	inDataAbs, _ := filepath.Abs(inData)
	m.KEK.InDataDir = cfg.MasterSource == "file" && kekAbs == inDataAbs
	var paths []string
	for _, sub := range []string{"", "keys"} {
		ents, err := os.ReadDir(filepath.Join(cfg.DataDir, sub))
		if err != nil && !(sub == "keys" && errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("backup: %w", err)
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			rel := filepath.ToSlash(filepath.Join(sub, e.Name()))
			switch {
			case strings.HasPrefix(rel, "rampart.db"), rel == "bundle.pem", rel == "keys/kek":
				continue
			}
			paths = append(paths, rel)
		}
	}
	for _, rel := range paths {
		p := filepath.Join(cfg.DataDir, filepath.FromSlash(rel))
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		kind := KindFile
		if (strings.HasPrefix(rel, "keys/") && rel != "keys/kek.sealed") || strings.HasSuffix(rel, ".token") {
			kind = KindSealed
			if data, err = cfg.KEK.Seal(sealID(rel), data); err != nil {
				return fmt.Errorf("backup: seal %s: %w", rel, err)
			}
		}
		if err := add(rel, kind, fi.Mode(), 0, bytes.NewReader(data), false); err != nil {
			return err
		}
	}
	if cfg.IncludeKEK {
		if cfg.MasterSource != "file" {
			return fmt.Errorf("backup: only a file master key can be included (this one is %s: keys/kek.sealed is in every backup)", cfg.MasterSource)
		}
		data, err := os.ReadFile(cfg.KEKFile)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		m.KEK.Included = true
		return add("keys/kek", KindFile, 0o600, 0, bytes.NewReader(data), false)
	}
	return nil
}

// sealID binds a sealed secret to its path.
func sealID(rel string) string { return "rampart-backup:" + rel }

// writeTar writes the files members (paths relative to dataDir) as a tar.
func writeTar(w io.Writer, dataDir string, members []string) error {
	tw := tar.NewWriter(w)
	for _, rel := range members {
		p := filepath.Join(dataDir, filepath.FromSlash(rel))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}
