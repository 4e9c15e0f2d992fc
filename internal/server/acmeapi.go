package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/acme"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// ACMEConfig configures the ACME server (package acme); zero values take
// its defaults.
type ACMEConfig struct {
	Disabled     bool
	EABOptional  bool     // accounts may register without an EAB key
	AllowedNames []string // the server's name patterns (--acme-allow)
	CertTTL      time.Duration
	HTTPPort     int    // where http-01 is validated (80)
	TLSPort      int    // where tls-alpn-01 is validated (443)
	Resolver     string // DNS server for validations (host:port); empty: the system's
}

// startACME builds the ACME server unless it is disabled.
func (s *Server) startACME(ctx context.Context, wrapper *keywrap.Wrapper) error {
	c := s.cfg.ACME
	if c.Disabled {
		return nil
	}
	st, ok := s.store.(acme.Store)
	if !ok {
		return errors.New("server: the store does not keep ACME state")
	}
	a, err := acme.New(ctx, acme.Config{
		Store: st, CA: s.ca, Sealer: wrapper, Replicated: s.cfg.PostgresDSN != "",
		EABOptional: c.EABOptional, AllowedNames: c.AllowedNames, DeniedNames: s.ownNames(), CertTTL: c.CertTTL,
		HTTPPort: c.HTTPPort, TLSPort: c.TLSPort, Resolver: c.Resolver,
		Record: s.record, Refused: s.recordRefusal, Changed: s.notify, Registerer: s.reg, Now: s.now,
		Log: s.log.With("component", "acme"),
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.acme = a
	return nil
}

// ownNames are the names and addresses this server answers at (tls.go
// puts them in its certificate): ACME never issues them, or an account
// could impersonate the server to everyone who trusts the bundle.
func (s *Server) ownNames() []string {
	names := append([]string{"localhost", "127.0.0.0/8", "::1"}, s.cfg.DNSNames...)
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append(names, strings.ToLower(h))
	}
	if host, _, err := net.SplitHostPort(s.cfg.Listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			names = append(names, ip.String())
		}
	}
	if u, err := url.Parse(s.cfg.Issuer); err == nil && u.Hostname() != "" {
		names = append(names, strings.ToLower(u.Hostname()))
	}
	// A name that is not a valid pattern (a hostname with an underscore)
	// cannot be ordered either.
	var out []string
	for _, n := range names {
		if _, err := acme.ParsePatterns([]string{n}); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// acmeRoutes mounts the protocol (public: requests are signed) and the
// operator calls.
func (s *Server) acmeRoutes(mux *http.ServeMux, route func(string, http.HandlerFunc)) {
	if s.acme != nil {
		s.acme.Register(mux, func(pattern string, h http.HandlerFunc) http.Handler { return s.instrument(pattern, h) })
	}
	route("POST /v1/acme/eab-keys", s.admin(s.withACME(s.handleCreateEABKey)))
	route("GET /v1/acme/eab-keys", s.admin(s.withACME(s.handleListEABKeys)))
	route("POST /v1/acme/eab-keys/{kid}/revoke", s.admin(s.withACME(s.handleRevokeEABKey)))
	route("GET /v1/acme/certs", s.admin(s.withACME(s.handleListACMECerts)))
	route("POST /v1/acme/certs/{serial}/revoke", s.admin(s.withACME(s.handleRevokeACMECert)))
}

func (s *Server) withACME(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.acme == nil {
			writeProblem(w, http.StatusNotFound, "ACME is disabled on this server (--acme=false)")
			return
		}
		h(w, r)
	}
}

func eabToAPI(k store.ACMEEABKey) api.ACMEEABKey {
	return api.ACMEEABKey{KeyID: k.KeyID, Label: k.Label, AllowedNames: k.AllowedNames, ClientAuth: k.ClientAuth, Reusable: k.Reusable,
		Accounts: k.Accounts, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

func acmeProblem(w http.ResponseWriter, err error) {
	detail := func(sentinel error) string { return strings.TrimPrefix(err.Error(), sentinel.Error()+": ") }
	switch {
	case errors.Is(err, acme.ErrInvalid):
		writeProblem(w, http.StatusBadRequest, detail(acme.ErrInvalid))
	case errors.Is(err, acme.ErrNotFound):
		writeProblem(w, http.StatusNotFound, detail(acme.ErrNotFound))
	case errors.Is(err, acme.ErrAlreadyRevoked):
		writeProblem(w, http.StatusConflict, detail(acme.ErrAlreadyRevoked)+" (nothing changed)")
	default:
		writeProblem(w, http.StatusInternalServerError, "ACME: the operation failed; see the server log")
	}
}

func (s *Server) handleCreateEABKey(w http.ResponseWriter, r *http.Request) {
	var req api.ACMEEABKeyRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.TTLSeconds < 0 {
		writeProblem(w, http.StatusBadRequest, "ttl_seconds: must be positive (0 for the default)")
		return
	}
	k, mac, err := s.acme.CreateEABKey(r.Context(), acme.NewEABKey{Label: req.Label, AllowedNames: req.AllowedNames, ClientAuth: req.ClientAuth,
		Reusable: req.Reusable, TTL: time.Duration(req.TTLSeconds) * time.Second})
	if err != nil {
		if !errors.Is(err, acme.ErrInvalid) {
			s.log.Error("create ACME EAB key", "err", err)
		}
		acmeProblem(w, err)
		return
	}
	s.event(r, "acme.eab_create", "target", k.KeyID, "allowed_names", strings.Join(k.AllowedNames, ","), "label", k.Label,
		"client_auth", k.ClientAuth, "reusable", k.Reusable, "expires_at", k.ExpiresAt)
	out := eabToAPI(k)
	out.HMACKey, out.Directory = mac, "https://"+r.Host+acme.PathPrefix+"directory"
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListEABKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.acme.EABKeys(r.Context())
	if err != nil {
		acmeProblem(w, err)
		return
	}
	out := make([]api.ACMEEABKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, eabToAPI(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevokeEABKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.acme.RevokeEABKey(r.Context(), r.PathValue("kid"))
	if err != nil {
		acmeProblem(w, err)
		return
	}
	s.event(r, "acme.eab_revoke", "target", k.KeyID, "accounts", k.Accounts)
	writeJSON(w, http.StatusOK, eabToAPI(k))
}

func certToAPI(c acme.CertInfo) api.ACMECert {
	out := api.ACMECert{Serial: c.Serial, CertID: c.CertID, Account: c.AccountID, Order: c.OrderID, Names: c.Names, Status: c.Status,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: c.IssuedAt, RevokedAt: c.RevokedAt, ReplacedBy: c.ReplacedBy}
	if !c.RevokedAt.IsZero() {
		out.RevocationReason = acme.ReasonName(c.RevocationReason)
	}
	return out
}

func (s *Server) handleListACMECerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.ACMECertFilter{AccountID: q.Get("account"), Expired: q.Get("all") == "true", Limit: 10000}
	cs, err := s.acme.Certs(r.Context(), f)
	if err != nil {
		acmeProblem(w, err)
		return
	}
	out := make([]api.ACMECert, 0, len(cs))
	for _, c := range cs {
		out = append(out, certToAPI(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevokeACMECert(w http.ResponseWriter, r *http.Request) {
	var req api.ACMERevokeRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			writeProblem(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	reason, err := acme.RevocationReason(req.Reason)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "reason: "+strings.TrimPrefix(err.Error(), "acme: "))
		return
	}
	c, err := s.acme.RevokeCert(r.Context(), r.PathValue("serial"), reason)
	if err != nil {
		acmeProblem(w, err)
		return
	}
	s.event(r, "acme.certificate_revoke", "target", strings.Join(c.Names, ","), "serial", c.Serial, "reason", acme.ReasonName(reason),
		"revoked_by", "operator", "account", c.AccountID)
	writeJSON(w, http.StatusOK, certToAPI(c))
}
