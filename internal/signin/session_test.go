package signin

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSessionFiles(t *testing.T) {
	dir := Dir(t.TempDir(), "127.0.0.1:8443")
	if !strings.HasSuffix(dir, filepath.Join("rampart", "operators", "127.0.0.1_8443")) {
		t.Fatalf("Dir = %s", dir)
	}
	if _, err := Load(dir); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Load of nothing: %v", err)
	}
	key, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{Dir: dir, Server: "127.0.0.1:8443", Tokens: Tokens{AccessToken: "at", RefreshToken: "rt", ExpiresAt: time.Unix(1e9, 0).UTC()}, Key: key}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, sessionFile): 0o600, filepath.Join(dir, keyFile): 0o600} {
		fi, err := os.Stat(name)
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", name, err, fi.Mode(), want)
		}
	}
	got, err := Load(dir)
	if err != nil || got.AccessToken != "at" || got.RefreshToken != "rt" || !got.Key.Equal(key) {
		t.Fatalf("Load: %v %+v", err, got)
	}
	// The key is kept: a second login binds to the same key.
	if k2, _ := LoadKey(dir); !k2.Equal(key) {
		t.Fatal("LoadKey made a new key")
	}
	// A file others may read is refused, not used.
	os.Chmod(filepath.Join(dir, sessionFile), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable session file: %v", err)
	}
	os.Chmod(filepath.Join(dir, sessionFile), 0o600)
	os.Chmod(filepath.Join(dir, keyFile), 0o640)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable key file: %v", err)
	}
	// Tokens without their key are refused with the reason.
	os.Remove(filepath.Join(dir, keyFile))
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "bound to that key") {
		t.Fatalf("tokens without the key: %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after Remove: %v", err)
	}
}

// An expired session with no refresh token says to log in again, and
// sends nothing.
func TestAuthorizeExpired(t *testing.T) {
	dir := t.TempDir()
	key, _ := LoadKey(dir)
	now := time.Unix(2e9, 0)
	s := &Session{Dir: dir, Tokens: Tokens{AccessToken: "at", ExpiresAt: now.Add(-time.Second)}, Key: key,
		Client: &Client{Now: func() time.Time { return now }}}
	req, _ := newRequest()
	if err := s.Authorize(req); err == nil || !strings.Contains(err.Error(), "login again") || req.Header.Get("Authorization") != "" {
		t.Fatalf("Authorize: %v, header %q", err, req.Header.Get("Authorization"))
	}
}

func newRequest() (*http.Request, error) {
	return http.NewRequest(http.MethodGet, "https://127.0.0.1:8443/v1/entries?x=1", nil)
}
