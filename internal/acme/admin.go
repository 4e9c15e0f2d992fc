package acme

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/rampartsec/rampart/internal/store"
)

// What operators do (through the admin API, package server): create and
// revoke EAB keys, list and revoke certificates. The caller audits these
// as the operator's actions.

// Errors of the operator calls.
var (
	ErrNotFound       = errors.New("acme: not found")
	ErrAlreadyRevoked = errors.New("acme: already revoked")
	ErrInvalid        = errors.New("acme: invalid request")
)

// Limits of an EAB key.
const (
	MaxEABPatterns = 100
	MaxEABTTL      = 365 * 24 * time.Hour
)

// NewEABKey asks for an EAB key.
type NewEABKey struct {
	Label        string
	AllowedNames []string
	ClientAuth   bool
	Reusable     bool
	// TTL is how long the key may wait to be bound (0: DefaultEABTTL).
	TTL time.Duration
}

func eabSealID(kid string) string { return "acme-eab:" + kid }

// CreateEABKey creates an EAB key and returns it with its HMAC key
// (base64url), which is shown this once and stored only sealed.
func (s *Server) CreateEABKey(ctx context.Context, req NewEABKey) (store.ACMEEABKey, string, error) {
	if len(req.Label) > 100 || strings.IndexFunc(req.Label, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return store.ACMEEABKey{}, "", fmt.Errorf("%w: label: at most 100 printable characters", ErrInvalid)
	}
	if len(req.AllowedNames) > MaxEABPatterns {
		return store.ACMEEABKey{}, "", fmt.Errorf("%w: allowed_names: at most %d patterns", ErrInvalid, MaxEABPatterns)
	}
	pats, err := ParsePatterns(req.AllowedNames)
	if err != nil {
		return store.ACMEEABKey{}, "", fmt.Errorf("%w: allowed_names: %v", ErrInvalid, err)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultEABTTL
	}
	if ttl < 0 || ttl > MaxEABTTL {
		return store.ACMEEABKey{}, "", fmt.Errorf("%w: ttl: between 1s and %v", ErrInvalid, MaxEABTTL)
	}
	names := make([]string, len(pats))
	for i, p := range pats {
		names[i] = strings.ToLower(strings.TrimSpace(p.raw))
	}
	mac := make([]byte, 32)
	if _, err := rand.Read(mac); err != nil {
		return store.ACMEEABKey{}, "", err
	}
	now := s.cfg.Now()
	k := store.ACMEEABKey{KeyID: "kid-" + newID(), Label: req.Label, AllowedNames: names, ClientAuth: req.ClientAuth, Reusable: req.Reusable,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if k.Sealed, err = s.cfg.Sealer.Seal(eabSealID(k.KeyID), mac); err != nil {
		return store.ACMEEABKey{}, "", fmt.Errorf("acme: seal the EAB key: %w", err)
	}
	if err := s.st.CreateACMEEABKey(ctx, k); err != nil {
		return store.ACMEEABKey{}, "", err
	}
	return k, base64.RawURLEncoding.EncodeToString(mac), nil
}

// EABKeys lists the EAB keys (never their HMAC keys).
func (s *Server) EABKeys(ctx context.Context) ([]store.ACMEEABKey, error) {
	return s.st.ListACMEEABKeys(ctx)
}

// RevokeEABKey revokes an EAB key: it binds no more accounts, and the
// accounts bound to it can order and finalize nothing more.
func (s *Server) RevokeEABKey(ctx context.Context, kid string) (store.ACMEEABKey, error) {
	switch err := s.st.RevokeACMEEABKey(ctx, kid, s.cfg.Now()); {
	case errors.Is(err, store.ErrNotFound):
		return store.ACMEEABKey{}, fmt.Errorf("%w: no EAB key %q", ErrNotFound, kid)
	case errors.Is(err, store.ErrStateConflict):
		return store.ACMEEABKey{}, fmt.Errorf("%w: EAB key %q is already revoked", ErrAlreadyRevoked, kid)
	case err != nil:
		return store.ACMEEABKey{}, err
	}
	return s.st.GetACMEEABKey(ctx, kid)
}

// CertInfo describes an issued certificate for operators.
type CertInfo struct {
	store.ACMECert
	CertID string // RFC 9773
	Status string // valid, revoked, expired
}

// Certs lists issued certificates.
func (s *Server) Certs(ctx context.Context, f store.ACMECertFilter) ([]CertInfo, error) {
	cs, err := s.st.ListACMECerts(ctx, f, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	out := make([]CertInfo, len(cs))
	for i, c := range cs {
		out[i] = s.certInfo(c)
	}
	return out, nil
}

func (s *Server) certInfo(c store.ACMECert) CertInfo {
	st := store.ACMEValid
	switch {
	case !c.RevokedAt.IsZero():
		st = store.ACMERevoked
	case !s.cfg.Now().Before(c.NotAfter):
		st = "expired"
	}
	return CertInfo{ACMECert: c, CertID: certIDOf(c), Status: st}
}

// RevokeCert revokes a certificate at an operator's request; its holder
// learns of it through renewal information (a window in the past).
func (s *Server) RevokeCert(ctx context.Context, serial string, reason int) (CertInfo, error) {
	if _, ok := revocationReasons[reason]; !ok {
		return CertInfo{}, fmt.Errorf("%w: reason %d", ErrInvalid, reason)
	}
	switch err := s.st.RevokeACMECert(ctx, serial, reason, s.cfg.Now()); {
	case errors.Is(err, store.ErrNotFound):
		return CertInfo{}, fmt.Errorf("%w: no certificate with serial %q was issued through ACME", ErrNotFound, serial)
	case errors.Is(err, store.ErrStateConflict):
		return CertInfo{}, fmt.Errorf("%w: certificate %s is already revoked", ErrAlreadyRevoked, serial)
	case err != nil:
		return CertInfo{}, err
	}
	s.cfg.Changed(ctx)
	s.metrics.revoked.Inc()
	c, err := s.st.GetACMECert(ctx, serial)
	if err != nil {
		return CertInfo{}, err
	}
	return s.certInfo(c), nil
}

// ReasonName names a revocation reason code.
func ReasonName(code int) string { return revocationReasons[code] }
