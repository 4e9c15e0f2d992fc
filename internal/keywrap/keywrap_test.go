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
)

func newWrapper(t *testing.T) *Wrapper {
	t.Helper()
	w, err := LoadOrCreateFile(filepath.Join(t.TempDir(), "keys", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRoundTrip(t *testing.T) {
	w := newWrapper(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrapped, err := w.Wrap("root-1", key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Unwrap("root-1", wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
		t.Fatal("unwrapped key differs")
	}
}

// Attacks on wrapped keys: each must fail with ErrUnwrap.
func TestUnwrapRefusesTampering(t *testing.T) {
	w := newWrapper(t)
	other := newWrapper(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrapped, _ := w.Wrap("root-1", key)
	flip := func(i int) []byte {
		b := append([]byte(nil), wrapped...)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name string
		w    *Wrapper
		id   string
		data []byte
	}{
		{"moved to another row", w, "root-2", wrapped},
		{"other KEK", other, "root-1", wrapped},
		{"truncated", w, "root-1", wrapped[:len(wrapped)-1]},
		{"empty", w, "root-1", nil},
		{"magic edited", w, "root-1", flip(0)},
		{"nonce edited", w, "root-1", flip(5)},
		{"ciphertext edited", w, "root-1", flip(len(wrapped) - 20)},
		{"tag edited", w, "root-1", flip(len(wrapped) - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.w.Unwrap(tt.id, tt.data); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("Unwrap = %v, want ErrUnwrap", err)
			}
		})
	}
}

func TestKEKFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	w1, err := LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %v, want 0600", fi.Mode().Perm())
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrapped, _ := w1.Wrap("k", key)
	w2, err := LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Unwrap("k", wrapped); err != nil {
		t.Fatalf("reloaded KEK cannot unwrap: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable KEK accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadOrCreateFile(path); err == nil || !strings.Contains(err.Error(), "want 32") {
		t.Fatalf("short KEK accepted: %v", err)
	}
}

func FuzzUnwrap(f *testing.F) {
	kek := make([]byte, KeySize)
	w, _ := New(kek)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrapped, _ := w.Wrap("id", key)
	f.Add(wrapped)
	f.Add([]byte("rwk1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := w.Unwrap("id", b)
		if err == nil && k == nil {
			t.Fatal("nil key without error")
		}
	})
}
