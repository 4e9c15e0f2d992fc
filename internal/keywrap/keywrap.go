package keywrap

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the KEK size in bytes.
const KeySize = 32

var magic = []byte("rwk1")

// ErrUnwrap is returned for any wrapped key that fails to open: wrong KEK,
// wrong ID, truncated or edited bytes. One error, so nothing is learned from
// which check failed.
var ErrUnwrap = errors.New("keywrap: cannot unwrap key (wrong key-encryption key, wrong id, or damaged data)")

// Wrapper seals and opens private keys under one KEK.
type Wrapper struct {
	aead cipher.AEAD
}

// New returns a Wrapper for a 32-byte KEK.
func New(kek []byte) (*Wrapper, error) {
	if len(kek) != KeySize {
		return nil, fmt.Errorf("keywrap: key-encryption key is %d bytes, want %d", len(kek), KeySize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	return &Wrapper{aead: aead}, nil
}

// LoadOrCreateFile reads the KEK from path, creating it (0600, random) when
// the file does not exist. A file with the wrong size or permissions wider
// than 0600 is refused: a KEK readable by others is not a secret.
func LoadOrCreateFile(path string) (*Wrapper, error) {
	kek, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kek = make([]byte, KeySize)
		if _, err := rand.Read(kek); err != nil {
			return nil, fmt.Errorf("keywrap: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("keywrap: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("keywrap: create %s: %w", path, err)
		}
		_, werr := f.Write(kek)
		serr := f.Sync()
		if cerr := f.Close(); werr == nil && serr == nil {
			werr = cerr
		}
		if err := errors.Join(werr, serr); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("keywrap: write %s: %w", path, err)
		}
		return New(kek)
	}
	if err != nil {
		return nil, fmt.Errorf("keywrap: read %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keywrap: %s has mode %v; a key-encryption key must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	return New(kek)
}

// Wrap seals key under the KEK, bound to id.
func (w *Wrapper) Wrap(id string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keywrap: marshal %s: %w", id, err)
	}
	return w.Seal(id, der)
}

// Unwrap opens a key sealed by Wrap with the same id.
func (w *Wrapper) Unwrap(id string, wrapped []byte) (crypto.Signer, error) {
	der, err := w.Open(id, wrapped)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, ErrUnwrap
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, ErrUnwrap
	}
	return s, nil
}

// Seal encrypts a secret (a TOTP seed, say) under the KEK, bound to id: a
// sealed value moved to another id does not open.
func (w *Wrapper) Seal(id string, secret []byte) ([]byte, error) {
	nonce := make([]byte, w.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	out := append(bytes.Clone(magic), nonce...)
	return w.aead.Seal(out, nonce, secret, []byte(id)), nil
}

// Open decrypts a value sealed by Seal with the same id.
func (w *Wrapper) Open(id string, sealed []byte) ([]byte, error) {
	ns := w.aead.NonceSize()
	if len(sealed) < len(magic)+ns+w.aead.Overhead() || !bytes.Equal(sealed[:len(magic)], magic) {
		return nil, ErrUnwrap
	}
	nonce := sealed[len(magic) : len(magic)+ns]
	out, err := w.aead.Open(nil, nonce, sealed[len(magic)+ns:], []byte(id))
	if err != nil {
		return nil, ErrUnwrap
	}
	return out, nil
}
