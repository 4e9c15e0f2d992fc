package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/acme"
	"github.com/rampartsec/rampart/internal/keywrap"
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

// startACME builds the ACME server unless it is disabled; routes.go
// serves its endpoints.
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
		Record: s.record, Refused: s.recordRefusal, Event: s.event, Changed: s.notify, Registerer: s.reg, Now: s.now,
		Log: s.log.With("component", "acme"),
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.acme = a
	return nil
}

// ownNames are the names and addresses this server answers at (its TLS
// certificate's): ACME never issues them, or an account could impersonate
// the server to everyone who trusts the bundle.
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
	// A name that is not a valid pattern (a host name with an underscore)
	// cannot be ordered either.
	var out []string
	for _, n := range names {
		if _, err := acme.ParsePatterns([]string{n}); err == nil {
			out = append(out, n)
		}
	}
	return out
}
