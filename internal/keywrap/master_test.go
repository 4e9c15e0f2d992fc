package keywrap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/softhsmtest"
)

func fixed(s string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(s), nil } }

func masterCfg(dir string, src Source) MasterConfig {
	return MasterConfig{Source: src, File: filepath.Join(dir, "kek"), SealedFile: filepath.Join(dir, "kek.sealed")}
}

// roundTrip wraps a key with w1 and checks w2 unwraps it: the same KEK.
func roundTrip(t *testing.T, w1, w2 *Wrapper) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrapped, err := w1.Wrap("k", key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Unwrap("k", wrapped); err != nil {
		t.Fatalf("the reopened KEK differs: %v", err)
	}
}

func TestPassphraseSource(t *testing.T) {
	dir := t.TempDir()
	cfg := masterCfg(dir, SourcePassphrase)
	cfg.Passphrase = fixed("correct horse battery staple")
	w1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(cfg.SealedFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed KEK file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(cfg.SealedFile)
	if strings.Contains(string(raw), "correct horse") {
		t.Fatal("the passphrase is in the sealed file")
	}
	if _, err := os.Stat(cfg.File); err == nil {
		t.Fatal("a plaintext KEK file was written")
	}
	w2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, w1, w2)

	cfg.Passphrase = fixed("correct horse battery stapler")
	if _, err := Load(cfg); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	cfg.Passphrase = nil
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "--master-passphrase-file") {
		t.Fatalf("no passphrase: %v", err)
	}
	// The data dir is sealed: starting with the file source is refused
	// and names the right source.
	if _, err := Load(masterCfg(dir, SourceFile)); err == nil || !strings.Contains(err.Error(), "--master-key passphrase") {
		t.Fatalf("file source on a sealed dir: %v", err)
	}
	if _, err := os.Stat(cfg.File); err == nil {
		t.Fatal("the file source created a second KEK next to the sealed one")
	}
	os.Chmod(cfg.SealedFile, 0o644)
	cfg.Passphrase = fixed("correct horse battery staple")
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable sealed file accepted: %v", err)
	}
}

func TestPassphraseRules(t *testing.T) {
	cfg := masterCfg(t.TempDir(), SourcePassphrase)
	cfg.Passphrase = fixed("short")
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Fatalf("short passphrase: %v", err)
	}
	// A plaintext KEK already there: refuse rather than start a second key.
	dir := t.TempDir()
	if _, err := Load(masterCfg(dir, SourceFile)); err != nil {
		t.Fatal(err)
	}
	cfg = masterCfg(dir, SourcePassphrase)
	cfg.Passphrase = fixed("correct horse battery staple")
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "--master-key file") {
		t.Fatalf("passphrase over a plaintext KEK: %v", err)
	}
	if _, err := ParseSource("vault"); err == nil {
		t.Fatal("unknown source accepted")
	}
}

// Attacks on the sealed file: an edited salt or sealed blob fails.
func TestSealedFileTampering(t *testing.T) {
	cfg := masterCfg(t.TempDir(), SourcePassphrase)
	cfg.Passphrase = fixed("correct horse battery staple")
	if _, err := Load(cfg); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(cfg.SealedFile)
	for _, edit := range []struct{ from, to string }{
		{`"time": 3`, `"time": 1`},
		{`"memory_kib": 65536`, `"memory_kib": 1024`},
		{`"version": 1`, `"version": 2`},
	} {
		if !strings.Contains(string(raw), edit.from) {
			t.Fatalf("sealed file lacks %s:\n%s", edit.from, raw)
		}
		os.WriteFile(cfg.SealedFile, []byte(strings.Replace(string(raw), edit.from, edit.to, 1)), 0o600)
		if _, err := Load(cfg); err == nil {
			t.Fatalf("edited %s accepted", edit.from)
		}
	}
}

func softHSM(t *testing.T) PKCS11Config {
	t.Helper()
	softhsmtest.Token(t, "rampart-test", "1234")
	return PKCS11Config{Module: softhsmtest.Module, TokenLabel: "rampart-test", KeyLabel: "rampart-kek", PIN: fixed("1234")}
}

func TestPKCS11Source(t *testing.T) {
	p := softHSM(t)
	dir := t.TempDir()
	cfg := masterCfg(dir, SourcePKCS11)
	cfg.PKCS11 = p
	w1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, w1, w2)

	bad := cfg
	bad.PKCS11.PIN = fixed("9999")
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "log in") {
		t.Fatalf("wrong PIN: %v", err)
	}
	bad = cfg
	bad.PKCS11.KeyLabel = "other"
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), `not key "other"`) {
		t.Fatalf("other key label: %v", err)
	}
	// A sealed KEK from another token's key does not open here.
	other := masterCfg(t.TempDir(), SourcePKCS11)
	other.PKCS11 = p
	other.PKCS11.KeyLabel = "rampart-kek-2"
	if _, err := Load(other); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(other.SealedFile)
	os.WriteFile(cfg.SealedFile, []byte(strings.Replace(string(raw), "rampart-kek-2", "rampart-kek", 1)), 0o600)
	if _, err := Load(cfg); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("KEK sealed by another key: %v, want ErrUnwrap", err)
	}
}
