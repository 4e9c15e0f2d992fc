package signin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/secretfile"
)

// Files of a session directory.
const (
	sessionFile = "session.json"
	keyFile     = "dpop-key.pem"
)

// ErrNoSession: nobody signed in to this server from here.
var ErrNoSession = errors.New("signin: not signed in (rampart login)")

// Dir is where the session for server (host:port) lives under the user's
// configuration directory (os.UserConfigDir: $XDG_CONFIG_HOME, or
// ~/.config).
func Dir(configDir, server string) string {
	name := strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(server)
	return filepath.Join(configDir, "rampart", "operators", name)
}

// Session is a signed-in operator's tokens and DPoP key for one server.
type Session struct {
	Dir    string `json:"-"`
	Server string `json:"server"`
	Issuer string `json:"issuer,omitempty"`
	Tokens
	Subject string            `json:"subject,omitempty"`
	Key     *ecdsa.PrivateKey `json:"-"`
	// Client refreshes and revokes; set by the caller after Load.
	Client *Client `json:"-"`

	mu sync.Mutex
}

// LoadKey returns the DPoP key in dir, creating one (P-256, 0600) if
// there is none. A key file group or others may read is refused.
func LoadKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, keyFile)
	b, err := secretfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("signin: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("signin: %w", err)
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("signin: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("signin: DPoP key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("signin: %s: not an EC PRIVATE KEY PEM block", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signin: %s: %w", path, err)
	}
	if k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signin: %s: want a P-256 key", path)
	}
	return k, nil
}

// Load reads the session in dir (ErrNoSession if there is none).
func Load(dir string) (*Session, error) {
	b, err := secretfile.Read(filepath.Join(dir, sessionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("signin: %w", err)
	}
	s := &Session{Dir: dir}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("signin: %s: %w", filepath.Join(dir, sessionFile), err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signin: %s has no %s beside it: the tokens are bound to that key; rampart login again", dir, keyFile)
	}
	if s.Key, err = LoadKey(dir); err != nil {
		return nil, err
	}
	return s, nil
}

// Save writes the session (0600).
func (s *Session) Save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, sessionFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("signin: %w", err)
	}
	return nil
}

// Remove deletes the session's tokens and key.
func Remove(dir string) error {
	err1 := os.Remove(filepath.Join(dir, sessionFile))
	err2 := os.Remove(filepath.Join(dir, keyFile))
	if errors.Is(err1, fs.ErrNotExist) {
		err1 = nil
	}
	if errors.Is(err2, fs.ErrNotExist) {
		err2 = nil
	}
	return errors.Join(err1, err2)
}

// refreshBefore: a token with less left than this is refreshed first.
const refreshBefore = time.Minute

// Authorize sets r's Authorization (DPoP scheme) and DPoP proof,
// refreshing the tokens first (and saving them) if the access token is
// about to expire.
func (s *Session) Authorize(r *http.Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Client.now()
	if now.Add(refreshBefore).After(s.ExpiresAt) {
		if s.RefreshToken == "" {
			return fmt.Errorf("signin: the operator token expired at %s and cannot be refreshed; rampart login again", s.ExpiresAt.UTC().Format(time.RFC3339))
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		t, err := s.Client.Refresh(ctx, s.RefreshToken)
		cancel()
		if err != nil {
			return fmt.Errorf("signin: refreshing the operator token: %w; rampart login again", err)
		}
		if t.RefreshToken == "" {
			t.RefreshToken = s.RefreshToken
		}
		s.Tokens = *t
		if err := s.Save(); err != nil {
			return err
		}
	}
	proof, err := dpop.NewProof(s.Key, jose.ES256, r.Method, htu(r.URL), s.AccessToken, "", now)
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "DPoP "+s.AccessToken)
	r.Header.Set("DPoP", proof)
	return nil
}
