package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store/storetest"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// site is a data directory laid out as the server lays it out, with a
// store, an audit log (some of it sealed) and keys.
type site struct {
	dir      string
	st       store.Store
	log      *audit.Log
	signer   note.Signer
	wrapper  *keywrap.Wrapper
	identity *age.X25519Identity
	dests    []Destination
	clock    *fakeclock.Clock
	b        *Backuper
	seenFile string
}

func newSite(t *testing.T) *site {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "keys"), 0o700))
	w, err := keywrap.LoadOrCreateFile(filepath.Join(dir, "keys", "kek"))
	must(err)
	st := storetest.SQLite(t, dir)
	ctx := context.Background()
	must(st.PutCAKey(ctx, store.CAKey{ID: "root", Kind: store.KindRoot, State: store.StateActive, CertDER: []byte{1}, WrappedKey: []byte{2}, NotBefore: t0, NotAfter: t0.Add(time.Hour), CreatedAt: t0}))
	_, err = st.PutPolicy(ctx, store.Policy{Service: "spiffe://example.org/orders", Version: "v1", Source: []byte("rules: []\n"), CreatedAt: t0})
	must(err)
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.org/audit")
	must(err)
	signer, _ := note.NewSigner(skey)
	must(os.WriteFile(filepath.Join(dir, "keys", "audit.key"), []byte(skey+"\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "audit.pub"), []byte(vkey+"\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "admin.token"), []byte("rpa_secret-admin-token-0123456789abcdef\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "trust_domain"), []byte("example.org\n"), 0o600))
	l, err := audit.OpenWith(filepath.Join(dir, "audit"), "example.org/audit", audit.Options{SegmentEntries: 256})
	must(err)
	t.Cleanup(func() { l.Close() })
	s := &site{dir: dir, st: st, log: l, signer: signer, wrapper: w, clock: fakeclock.New(t0)}
	s.append(t, 700)
	_, err = l.Checkpoint(signer)
	must(err)
	_, err = l.Seal()
	must(err)
	s.append(t, 10)
	s.identity, err = age.GenerateX25519Identity()
	must(err)
	for _, name := range []string{"dest-a", "dest-b"} {
		d, err := NewDir(filepath.Join(t.TempDir(), name))
		must(err)
		s.dests = append(s.dests, d)
	}
	s.b, err = New(s.config())
	must(err)
	return s
}

func (s *site) config() Config {
	return Config{DataDir: s.dir, TrustDomain: "example.org", Store: s.st.(store.Snapshotter), Audit: s.log, AuditSigner: s.signer,
		AuditOrigin: "example.org/audit", KEK: s.wrapper, MasterSource: "file", KEKFile: filepath.Join(s.dir, "keys", "kek"),
		Destinations: s.dests, Recipients: []age.Recipient{s.identity.Recipient()}, RecipientNames: []string{s.identity.Recipient().String()},
		PartSize: 4096, Now: s.clock.Now}
}

func (s *site) append(t *testing.T, n int) {
	t.Helper()
	es := make([]*audit.Entry, n)
	for i := range es {
		es[i] = &audit.Entry{V: 1, Time: s.clock.Now(), Actor: audit.Actor{SpiffeID: "spiffe://example.org/orders"}, Action: "authz.decision",
			Target: "spiffe://example.org/payments", Outcome: audit.OutcomeSuccess, Details: map[string]string{"i": strings.Repeat("x", i%50)}}
	}
	if _, err := s.log.AppendEntries(context.Background(), es...); err != nil {
		t.Fatal(err)
	}
}

func (s *site) verifier(t *testing.T) note.Verifier {
	t.Helper()
	v, err := ParseVerifier(s.b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (s *site) source(t *testing.T) Source {
	return Source{Destinations: s.dests, Verifier: s.verifier(t), Identities: []age.Identity{s.identity}}
}

func (s *site) kekCopy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "keys", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *site) restore(t *testing.T, cfg RestoreConfig) (*RestoreResult, error) {
	t.Helper()
	cfg.Source = s.source(t)
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "restored")
	}
	if cfg.KEKFile == "" {
		cfg.KEKFile = s.kekCopy(t)
	}
	cfg.Now = s.clock.Now
	return Restore(context.Background(), cfg)
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	r1, err := s.b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Seq != 1 || r1.Manifest.Prev != "" || r1.Manifest.Audit.Size != 710 || r1.Manifest.Audit.Sealed != 512 || r1.Manifest.Store.Tables["policies"] != 1 {
		t.Fatalf("first backup: %+v, manifest %+v", r1, r1.Manifest)
	}
	// The KEK is not in the backup unless asked; the secrets are sealed.
	for _, f := range r1.Manifest.Files {
		switch f.Path {
		case "keys/kek":
			t.Fatal("the KEK is in a backup that did not ask for it")
		case "admin.token", "keys/audit.key", "keys/backup.key":
			if f.Kind != KindSealed {
				t.Fatalf("%s is %s, want sealed", f.Path, f.Kind)
			}
		}
	}
	s.clock.Add(time.Hour)
	s.append(t, 300)
	r2, err := s.b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Seq != 2 || r2.Manifest.Prev != r1.Hash || r2.Reused != 2 {
		t.Fatalf("second backup: seq %d prev %q (want %q), reused %d segments (want 2: they were stored by the first)", r2.Seq, r2.Manifest.Prev, r1.Hash, r2.Reused)
	}

	res, err := s.restore(t, RestoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq != 2 || res.AuditSize != 1010 || res.Tables["ca_keys"] != 1 {
		t.Fatalf("restore: %+v", res)
	}
}

func TestRestoreWritesAWorkingDataDir(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	if _, err := s.b.Create(ctx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := s.restore(t, RestoreConfig{DataDir: dir, Actor: audit.Actor{User: "alice"}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"admin.token", "keys/audit.key", "keys/backup.key", "keys/kek", "trust_domain", "audit.pub", "backup.pub"} {
		want, _ := os.ReadFile(filepath.Join(s.dir, f))
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s restored as %q (%v), want %q", f, got, err, want)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v, %v", fi.Mode(), err)
	}
	// The log verifies, holds the restore, and goes on.
	v, _ := note.NewVerifier(strings.TrimSpace(string(must(os.ReadFile(filepath.Join(dir, "audit.pub"))))))
	rep, err := audit.Verify(filepath.Join(dir, "audit"), v)
	if err != nil || !rep.Clean() || rep.Entries != 711 {
		t.Fatalf("verify after restore: %+v, %v", rep, err)
	}
	last, err := audit.Count(filepath.Join(dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	var got *audit.Entry
	audit.Scan(filepath.Join(dir, "audit"), last-1, func(i int64, e []byte) error {
		got, _ = audit.ParseEntry(e)
		return nil
	})
	if got == nil || got.Action != "backup.restore" || got.Actor.User != "alice" || got.Details["seq"] != "1" {
		t.Fatalf("last entry %+v, want backup.restore by alice", got)
	}
	st, err := store.OpenSQLite(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p, err := st.GetPolicy(ctx, "spiffe://example.org/orders")
	if err != nil || string(p.Source) != "rules: []\n" {
		t.Fatalf("policy after restore: %+v, %v", p, err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestRestoreRefusesTampering is the attack table: each way of changing a
// backup in a destination, and what the restore says.
func TestRestoreRefusesTampering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, s *site)
		cfg    RestoreConfig
		want   string
	}{{
		name: "one byte of an object changed",
		attack: func(t *testing.T, s *site) {
			m := latestManifest(t, s)
			for _, d := range s.dests {
				flipByte(t, d, m.Files[0].Parts[0].Key())
			}
		},
		want: "does not match its SHA-256 in the manifest",
	}, {
		name: "manifest edited",
		attack: func(t *testing.T, s *site) {
			for _, d := range s.dests {
				editObject(t, d, ManifestKey(1), func(b []byte) []byte {
					return bytes.Replace(b, []byte(`"policies": 1`), []byte(`"policies": 2`), 1)
				})
			}
		},
		want: "the manifest was changed after it was signed",
	}, {
		name: "an object missing",
		attack: func(t *testing.T, s *site) {
			m := latestManifest(t, s)
			for _, d := range s.dests {
				d.Delete(context.Background(), m.Files[len(m.Files)-1].Parts[0].Key())
			}
		},
		want: "is missing from",
	}, {
		name: "signed by another key",
		attack: func(t *testing.T, s *site) {
			m := latestManifest(t, s)
			skey, _, _ := note.GenerateKey(rand.Reader, "example.org/backup")
			other, _ := note.NewSigner(skey)
			signed, err := m.Sign(other)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range s.dests {
				d.Put(context.Background(), ManifestKey(1), signed)
			}
		},
		want: "not signed by the backup key given (it is signed by example.org/backup+",
	}, {
		name: "an older backup replayed: newer ones deleted in every destination",
		attack: func(t *testing.T, s *site) {
			s.clock.Add(time.Hour)
			if _, err := s.b.Create(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The operator saw backup 2 (listed it): the seen file keeps it.
			seen := Seen{}
			if err := seen.Record(s.seenFile, s.verifier(t), 2); err != nil {
				t.Fatal(err)
			}
			for _, d := range s.dests {
				d.Delete(context.Background(), ManifestKey(2))
			}
		},
		want: "backup: rollback: backup 1 is older than backup 2",
	}, {
		name: "an older backup asked for while a newer one is held",
		attack: func(t *testing.T, s *site) {
			s.clock.Add(time.Hour)
			if _, err := s.b.Create(context.Background()); err != nil {
				t.Fatal(err)
			}
		},
		cfg:  RestoreConfig{Seq: 1},
		want: "backup: rollback: backup 1 is older than backup 2",
	}, {
		name:   "the wrong KEK",
		attack: func(t *testing.T, s *site) {},
		cfg:    RestoreConfig{KEKFile: otherKEK(t)},
		want:   "does not open with the key-encryption key given",
	}, {
		name: "a segment swapped for another log's",
		attack: func(t *testing.T, s *site) {
			m := latestManifest(t, s)
			for _, f := range m.Files {
				if f.Kind == KindSegment {
					for _, d := range s.dests {
						d.Put(context.Background(), f.Parts[0].Key(), []byte("not this log's segment"))
					}
					return
				}
			}
			t.Fatal("no segment")
		},
		want: "is 22 bytes, the manifest says",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			s.seenFile = filepath.Join(t.TempDir(), "seen.json")
			if _, err := s.b.Create(context.Background()); err != nil {
				t.Fatal(err)
			}
			tc.attack(t, s)
			cfg := tc.cfg
			cfg.SeenFile = s.seenFile
			dir := filepath.Join(t.TempDir(), "restored")
			cfg.DataDir = dir
			_, err := s.restore(t, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v\nwant an error containing %q", err, tc.want)
			}
			if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
				t.Fatalf("a refused restore left %s behind", dir)
			}
		})
	}
}

func TestRestoreIntoANonEmptyDirIsRefused(t *testing.T) {
	s := newSite(t)
	if _, err := s.b.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rampart.db"), []byte("live"), 0o600)
	_, err := s.restore(t, RestoreConfig{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("restore into a used data dir: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "rampart.db")); string(b) != "live" {
		t.Fatal("the live file was touched")
	}
}

func TestRollbackAllowedIsRecorded(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	s.b.Create(ctx)
	s.clock.Add(time.Hour)
	s.b.Create(ctx)
	dir := filepath.Join(t.TempDir(), "restored")
	res, err := s.restore(t, RestoreConfig{Seq: 1, AllowRollback: true, DataDir: dir})
	if err != nil || !res.Rollback {
		t.Fatalf("allowed rollback: %+v, %v", res, err)
	}
	// The restored server numbers its next backup after the newest seen.
	st, err := loadState(dir)
	if err != nil || st.Seq != 2 {
		t.Fatalf("state after restoring 1 while 2 exists: %+v, %v", st, err)
	}
}

func latestManifest(t *testing.T, s *site) *Manifest {
	t.Helper()
	l, err := newest(context.Background(), s.dests[0], s.verifier(t))
	if err != nil || l.m == nil {
		t.Fatalf("newest: %v", err)
	}
	return l.m
}

func editObject(t *testing.T, d Destination, key string, edit func([]byte) []byte) {
	t.Helper()
	b, err := d.Get(context.Background(), key, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	nb := edit(bytes.Clone(b))
	if bytes.Equal(nb, b) {
		t.Fatalf("edit of %s changed nothing", key)
	}
	if err := d.Put(context.Background(), key, nb); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, d Destination, key string) {
	editObject(t, d, key, func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b })
}

func otherKEK(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kek")
	if _, err := keywrap.LoadOrCreateFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// With a passphrase, the server asks for it once (to seal the deployment's
// identity), never for a scheduled backup; a restore opens that identity
// from the destination with the passphrase.
func TestPassphraseBackups(t *testing.T) {
	s := newSite(t)
	asked := 0
	cfg := s.config()
	cfg.Recipients, cfg.RecipientNames = nil, nil
	cfg.Passphrase = func() ([]byte, error) { asked++; return []byte("correct horse battery staple"), nil }
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		if _, err := b.Create(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if asked != 1 {
		t.Fatalf("the passphrase was asked %d times, want once", asked)
	}
	src := Source{Destinations: s.dests, Verifier: s.verifier(t), Passphrase: func() ([]byte, error) { return []byte("correct horse battery staple"), nil }}
	if _, err := Restore(ctx, RestoreConfig{Source: src, DataDir: filepath.Join(t.TempDir(), "r"), KEKFile: s.kekCopy(t), Now: s.clock.Now}); err != nil {
		t.Fatal(err)
	}
	src.Passphrase = func() ([]byte, error) { return []byte("wrong horse battery staple"), nil }
	_, err = Restore(ctx, RestoreConfig{Source: src, DataDir: filepath.Join(t.TempDir(), "r"), KEKFile: s.kekCopy(t), Now: s.clock.Now})
	if err == nil || !strings.Contains(err.Error(), "the passphrase does not open keys/identity.age") {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

// After a restore, the server's next backup continues the chain from the
// newest backup (even one newer than the restored), and a passphrase
// deployment keeps its identity.
func TestChainContinuesAfterRestore(t *testing.T) {
	s := newSite(t)
	cfg := s.config()
	cfg.Passphrase = func() ([]byte, error) { return []byte("correct horse battery staple"), nil }
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b.Create(ctx)
	s.clock.Add(time.Hour)
	r2, err := b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := s.restore(t, RestoreConfig{Seq: 1, AllowRollback: true, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "backup", "identity.age")); err != nil {
		t.Fatalf("the passphrase identity was not restored: %v", err)
	}
	st, err := store.OpenSQLite(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := audit.OpenWith(filepath.Join(dir, "audit"), "example.org/audit", audit.Options{SegmentEntries: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w, _ := keywrap.LoadOrCreateFile(filepath.Join(dir, "keys", "kek"))
	cfg2 := cfg
	cfg2.DataDir, cfg2.Store, cfg2.Audit, cfg2.KEK, cfg2.KEKFile = dir, st.(store.Snapshotter), l, w, filepath.Join(dir, "keys", "kek")
	cfg2.Passphrase = func() ([]byte, error) { t.Fatal("the passphrase was asked again after a restore"); return nil, nil }
	b2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := b2.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r3.Seq != 3 || r3.Manifest.Prev != r2.Hash {
		t.Fatalf("after restoring 1 while 2 exists: seq %d prev %.12s, want 3 after %.12s", r3.Seq, r3.Manifest.Prev, r2.Hash)
	}
	list, err := List(ctx, s.source(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Problem != "" {
			t.Fatalf("backup %d: %s", e.Seq, e.Problem)
		}
	}
}
