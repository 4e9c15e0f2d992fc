package keywrap

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// Source is where the KEK comes from.
type Source string

// Sources of the KEK.
const (
	// SourceFile: the KEK itself in a file (0600). Simple; whoever reads
	// the file and the database has every key.
	SourceFile Source = "file"
	// SourcePassphrase: a random KEK sealed under a key derived from an
	// operator's passphrase (argon2id); the passphrase is asked at every
	// start (the unseal step) and never stored.
	SourcePassphrase Source = "passphrase"
	// SourcePKCS11: a random KEK sealed by an AES key that never leaves a
	// PKCS#11 token (an HSM; SoftHSM in tests). The token unseals it once
	// at start.
	SourcePKCS11 Source = "pkcs11"
)

// ParseSource parses a --master-key value.
func ParseSource(s string) (Source, error) {
	switch Source(s) {
	case SourceFile, SourcePassphrase, SourcePKCS11:
		return Source(s), nil
	case "":
		return SourceFile, nil
	}
	return "", fmt.Errorf("master key source %q: want file, passphrase or pkcs11", s)
}

// MinPassphrase is the shortest passphrase accepted when a KEK is first
// sealed.
const MinPassphrase = 12

// Argon2id parameters for the passphrase: RFC 9106's second recommended
// option (64 MiB, t=3), four lanes. Stored in the sealed file, so they
// can be raised later without locking out existing data dirs.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 4
)

// MasterConfig says where the KEK comes from.
type MasterConfig struct {
	Source Source
	// File is the plaintext KEK (SourceFile).
	File string
	// SealedFile is the sealed KEK (SourcePassphrase, SourcePKCS11).
	SealedFile string
	// Passphrase returns the operator's passphrase; called once, at
	// start, and only for SourcePassphrase.
	Passphrase func() ([]byte, error)
	PKCS11     PKCS11Config
}

// PKCS11Config names the token and key that seal the KEK.
type PKCS11Config struct {
	Module     string // path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel string
	KeyLabel   string // label of the AES key on the token; generated if absent
	// PIN returns the user PIN; called once, at start.
	PIN func() ([]byte, error)
}

// sealedKEK is the JSON document in SealedFile.
type sealedKEK struct {
	Version int    `json:"version"`
	Source  Source `json:"source"`
	// Passphrase: argon2id parameters.
	Salt    []byte `json:"salt,omitempty"`
	Time    uint32 `json:"time,omitempty"`
	Memory  uint32 `json:"memory_kib,omitempty"`
	Threads uint8  `json:"threads,omitempty"`
	// PKCS#11: which key on which token.
	TokenLabel string `json:"token_label,omitempty"`
	KeyLabel   string `json:"key_label,omitempty"`
	// Sealed is the KEK sealed with kekAAD as its ID: by a Wrapper over the
	// passphrase-derived key, or by AES-GCM inside the token (nonce |
	// ciphertext and tag).
	Sealed []byte `json:"sealed"`
}

var kekAAD = []byte("rampart key-encryption key v1")

// ErrWrongPassphrase is returned when the passphrase does not open the
// sealed KEK.
var ErrWrongPassphrase = errors.New("keywrap: wrong passphrase (the sealed key-encryption key does not open)")

// Load returns a Wrapper over the KEK from cfg's source, creating a KEK
// (and sealing it) on first use. A data dir initialised with one source
// is refused with another, naming the one it needs.
func Load(cfg MasterConfig) (*Wrapper, error) {
	src, err := ParseSource(string(cfg.Source))
	if err != nil {
		return nil, err
	}
	_, plainErr := os.Stat(cfg.File)
	hasPlain := plainErr == nil
	sealedRaw, sealedErr := os.ReadFile(cfg.SealedFile)
	hasSealed := sealedErr == nil
	if sealedErr != nil && !errors.Is(sealedErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("keywrap: read %s: %w", cfg.SealedFile, sealedErr)
	}
	if src == SourceFile {
		if hasSealed {
			var doc sealedKEK
			_ = json.Unmarshal(sealedRaw, &doc)
			return nil, fmt.Errorf("keywrap: this data dir's key-encryption key is sealed (%s holds it, source %q); start with --master-key %s", cfg.SealedFile, doc.Source, doc.Source)
		}
		return LoadOrCreateFile(cfg.File)
	}
	if hasPlain {
		return nil, fmt.Errorf("keywrap: %s holds a plaintext key-encryption key: this data dir uses --master-key file (moving it under a %s is not supported yet)", cfg.File, src)
	}
	if !hasSealed {
		return createSealed(cfg, src)
	}
	var doc sealedKEK
	if err := json.Unmarshal(sealedRaw, &doc); err != nil {
		return nil, fmt.Errorf("keywrap: %s: %w", cfg.SealedFile, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("keywrap: %s: version %d is not supported", cfg.SealedFile, doc.Version)
	}
	if doc.Source != src {
		return nil, fmt.Errorf("keywrap: %s is sealed by %q, not %q; start with --master-key %s", cfg.SealedFile, doc.Source, src, doc.Source)
	}
	if err := checkMode(cfg.SealedFile); err != nil {
		return nil, err
	}
	var kek []byte
	switch src {
	case SourcePassphrase:
		kek, err = openPassphrase(cfg, &doc)
	case SourcePKCS11:
		if cfg.PKCS11.TokenLabel != "" && cfg.PKCS11.TokenLabel != doc.TokenLabel || cfg.PKCS11.KeyLabel != "" && cfg.PKCS11.KeyLabel != doc.KeyLabel {
			return nil, fmt.Errorf("keywrap: %s is sealed by key %q on token %q, not key %q on token %q", cfg.SealedFile, doc.KeyLabel, doc.TokenLabel, cfg.PKCS11.KeyLabel, cfg.PKCS11.TokenLabel)
		}
		p := cfg.PKCS11
		p.TokenLabel, p.KeyLabel = doc.TokenLabel, doc.KeyLabel
		kek, err = pkcs11Open(p, doc.Sealed)
	}
	if err != nil {
		return nil, err
	}
	return New(kek)
}

func checkMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("keywrap: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("keywrap: %s has mode %v; it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	return nil
}

func createSealed(cfg MasterConfig, src Source) (*Wrapper, error) {
	kek := make([]byte, KeySize)
	if _, err := rand.Read(kek); err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	doc := sealedKEK{Version: 1, Source: src}
	var err error
	switch src {
	case SourcePassphrase:
		err = sealPassphrase(cfg, &doc, kek)
	case SourcePKCS11:
		if cfg.PKCS11.TokenLabel == "" || cfg.PKCS11.KeyLabel == "" {
			return nil, errors.New("keywrap: pkcs11: a token label and a key label are required")
		}
		doc.TokenLabel, doc.KeyLabel = cfg.PKCS11.TokenLabel, cfg.PKCS11.KeyLabel
		doc.Sealed, err = pkcs11Seal(cfg.PKCS11, kek)
	}
	if err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.SealedFile), 0o700); err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	if err := atomicfile.Write(cfg.SealedFile, append(raw, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("keywrap: write %s: %w", cfg.SealedFile, err)
	}
	return New(kek)
}

func passphrase(cfg MasterConfig) ([]byte, error) {
	if cfg.Passphrase == nil {
		return nil, errors.New("keywrap: --master-key passphrase needs a passphrase (a terminal to ask it on, or --master-passphrase-file)")
	}
	p, err := cfg.Passphrase()
	if err != nil {
		return nil, fmt.Errorf("keywrap: read passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("keywrap: the passphrase is empty")
	}
	return p, nil
}

func sealPassphrase(cfg MasterConfig, doc *sealedKEK, kek []byte) error {
	p, err := passphrase(cfg)
	if err != nil {
		return err
	}
	if len(p) < MinPassphrase {
		return fmt.Errorf("keywrap: the passphrase is %d characters; use at least %d", len(p), MinPassphrase)
	}
	doc.Salt = make([]byte, 16)
	if _, err := rand.Read(doc.Salt); err != nil {
		return fmt.Errorf("keywrap: %w", err)
	}
	doc.Time, doc.Memory, doc.Threads = argonTime, argonMemory, argonThreads
	w, err := New(argon2.IDKey(p, doc.Salt, doc.Time, doc.Memory, doc.Threads, KeySize))
	if err != nil {
		return err
	}
	doc.Sealed, err = w.Seal(string(kekAAD), kek)
	return err
}

func openPassphrase(cfg MasterConfig, doc *sealedKEK) ([]byte, error) {
	if len(doc.Salt) < 16 || doc.Time == 0 || doc.Memory < 8*1024 || doc.Threads == 0 {
		return nil, fmt.Errorf("keywrap: %s: argon2id parameters missing or too weak", cfg.SealedFile)
	}
	p, err := passphrase(cfg)
	if err != nil {
		return nil, err
	}
	w, err := New(argon2.IDKey(p, doc.Salt, doc.Time, doc.Memory, doc.Threads, KeySize))
	if err != nil {
		return nil, err
	}
	kek, err := w.Open(string(kekAAD), doc.Sealed)
	if err != nil || len(kek) != KeySize {
		return nil, ErrWrongPassphrase
	}
	return kek, nil
}
