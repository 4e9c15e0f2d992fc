package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// ServerCertTTL is the life of the server's own TLS certificate; it is
// replaced at half life.
const ServerCertTTL = 24 * time.Hour

// ServerCert is the control plane's own TLS certificate: an SVID of
// ServerID, for localhost, the host's name, DNSNames, the loopback
// addresses and the listen address, renewed at half life. A renewal that
// fails keeps the current certificate while it is valid.
type ServerCert struct {
	CA       *CA
	DNSNames []string
	Listen   string // host:port the API listens on
	Now      func() time.Time
	Log      *slog.Logger
	OnIssue  func() // counts issuances (may be nil)

	mu   sync.Mutex
	cert *tls.Certificate
}

// GetCertificate returns the current certificate, renewing it at half
// life; it fits tls.Config.GetCertificate.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	if s.cert != nil {
		leaf := s.cert.Leaf
		if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2)) && s.underCurrentIntermediate() {
			return s.cert, nil
		}
	}
	c, err := s.issue()
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.Log.Error("renewing the server certificate failed; serving the current one", "err", err)
			return s.cert, nil
		}
		return nil, err
	}
	s.cert = c
	return c, nil
}

// Serves says whether host (a request's Host: a name or address, with
// or without a port) is one the server's certificate is valid for: the
// only names a client that verified the certificate can have meant.
func (s *ServerCert) Serves(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	c, err := s.GetCertificate(nil)
	if err != nil || c.Leaf == nil {
		return false
	}
	return c.Leaf.VerifyHostname(strings.Trim(host, "[]")) == nil
}

// underCurrentIntermediate says whether the certificate was signed by the
// intermediate the CA signs with now: after a burn-down activated a new
// root (on this replica or another sharing the store), the old chain is
// about to be dropped, so every replica re-issues at its next handshake.
func (s *ServerCert) underCurrentIntermediate() bool {
	inter := s.CA.signingIntermediate()
	return inter == nil || (len(s.cert.Certificate) > 1 && bytes.Equal(s.cert.Certificate[1], inter.Raw))
}

// Renew replaces the certificate now (a burn-down: the one being served
// chains to a root about to be dropped).
func (s *ServerCert) Renew() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.issue()
	if err != nil {
		return err
	}
	s.cert = c
	return nil
}

func (s *ServerCert) issue() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	dns := append([]string{"localhost"}, s.DNSNames...)
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host, _, err := net.SplitHostPort(s.Listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			ips = append(ips, ip)
		}
	}
	chain, err := s.CA.SignX509SVID(ServerID(s.CA.cfg.TrustDomain), key.Public(), ServerCertTTL, dns, ips)
	if err != nil {
		return nil, fmt.Errorf("identity: issue the server's TLS certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, cert := range chain {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	if s.OnIssue != nil {
		s.OnIssue()
	}
	return c, nil
}
