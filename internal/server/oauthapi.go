package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/oauth"
)

// issuerFor returns the OAuth issuer: the configured one, or the API's
// own address (an unspecified host becomes localhost).
func issuerFor(cfg Config, addr string) string {
	if cfg.Issuer != "" {
		return cfg.Issuer
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// startOAuth creates the authorization server for issuer.
func (s *Server) startOAuth(ctx context.Context, issuer string, wrapper *keywrap.Wrapper) error {
	p, err := oauth.New(ctx, oauth.Config{
		Issuer: issuer, Store: s.store, Wrapper: wrapper, Algorithm: s.cfg.OAuth.Algorithm,
		AccessTokenTTL: s.cfg.OAuth.AccessTokenTTL, RefreshTokenTTL: s.cfg.OAuth.RefreshTokenTTL, MaxActDepth: s.cfg.OAuth.MaxActDepth,
		DeviceInterval: s.cfg.OAuth.DeviceInterval,
		Record:         s.record, Refusals: s.refusals, Changed: s.notify, Now: s.now, Log: s.log.With("component", "oauth"),
		PeerCertificate: s.peerSVID, Registerer: s.reg,
		Quarantined: func(id string) bool {
			sid, err := spiffeid.FromString(id)
			return err == nil && s.quarantine.Holds(sid)
		},
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.oauth = p
	return s.ensureCLIClient(ctx)
}

// tokens is what the account handlers revoke through: the authorization
// server, or nothing before it runs (nothing has been issued then).
func (s *Server) tokens() oauth.Revoker {
	if s.oauth == nil {
		return nil
	}
	return s.oauth
}

// peerSVID returns the caller's SVID if it sent one that still verifies
// (the handshake checked it, but it may have been revoked since).
func (s *Server) peerSVID(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	raw := make([][]byte, len(r.TLS.PeerCertificates))
	for i, c := range r.TLS.PeerCertificates {
		raw[i] = c.Raw
	}
	if _, err := s.verifyPeer(raw); err != nil {
		return nil
	}
	return r.TLS.PeerCertificates[0]
}
