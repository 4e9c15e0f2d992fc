package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
)

// serverCertTTL is the life of the server's own TLS certificate; it is
// replaced at half life.
const serverCertTTL = 24 * time.Hour

// tlsState holds the server's rotating certificate.
type tlsState struct {
	s    *Server
	mu   sync.Mutex
	cert *tls.Certificate
}

func newTLSState(s *Server) *tlsState { return &tlsState{s: s} }

// config returns the HTTPS configuration: TLS 1.3 only; a client certificate
// is optional (admin calls use a bearer token) but, when one is sent, it must
// be an agent SVID that chains to the current bundle, or the handshake fails.
func (t *tlsState) config() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetCertificate:        t.getCertificate,
		ClientAuth:            tls.RequestClientCert,
		VerifyPeerCertificate: t.verifyClient,
		NextProtos:            []string{"h2", "http/1.1"},
	}
}

func (t *tlsState) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.s.now()
	if t.cert != nil {
		leaf := t.cert.Leaf
		if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
			return t.cert, nil
		}
	}
	c, err := t.issue()
	if err != nil {
		if t.cert != nil && now.Before(t.cert.Leaf.NotAfter) {
			t.s.log.Error("renewing the server certificate failed; serving the current one", "err", err)
			return t.cert, nil
		}
		return nil, err
	}
	t.cert = c
	return c, nil
}

func (t *tlsState) issue() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	dns := append([]string{"localhost"}, t.s.cfg.DNSNames...)
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host, _, err := net.SplitHostPort(t.s.cfg.Listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			ips = append(ips, ip)
		}
	}
	chain, err := t.s.ca.SignX509SVID(identity.ServerID(t.s.cfg.TrustDomain), key.Public(), serverCertTTL, dns, ips)
	if err != nil {
		return nil, fmt.Errorf("server: issue TLS certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, cert := range chain {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	t.s.metrics.svidsIssued.WithLabelValues("server").Inc()
	return c, nil
}

// verifyClient checks a client certificate, when one is sent, against the
// current bundle: it must be an SVID of this trust domain, not revoked, and
// not an evicted agent's. Which SVIDs may call what is decided per route.
func (t *tlsState) verifyClient(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	if _, err := t.s.verifyPeer(raw); err != nil {
		t.s.metrics.handshakeFailures.WithLabelValues(reasonOf(err)).Inc()
		// A revoked SVID still in use is named by its SPIFFE ID (its chain
		// verified); a certificate of another CA only claims one, and is
		// "unknown" (refusedCertActor).
		e := &audit.Entry{V: audit.SchemaVersion, Time: t.s.now(), Action: "tls.client_auth", Outcome: audit.OutcomeDenied,
			Reason: err.Error(), Source: "server", Details: map[string]string{"reason": reasonOf(err)}}
		if c, perr := x509.ParseCertificate(raw[0]); perr == nil {
			refusedCertActor(e, c, err)
			e.Details["serial"] = e.Details["cert_serial"]
		} else {
			e.Actor.User = "unknown"
		}
		t.s.recordRefusal(context.Background(), e, "")
		return err
	}
	return nil
}

var (
	errUntrusted = errors.New("client certificate does not chain to this trust domain's bundle")
	errNotAgent  = errors.New("client certificate is not an agent SVID")
	errRevoked   = errors.New("client certificate is revoked")
	errEvicted   = errors.New("agent is evicted")
)

func reasonOf(err error) string {
	switch {
	case errors.Is(err, errUntrusted):
		return "untrusted"
	case errors.Is(err, errNotAgent):
		return "not_agent"
	case errors.Is(err, errRevoked):
		return "revoked"
	case errors.Is(err, errEvicted):
		return "evicted"
	}
	return "other"
}

// verifyPeer verifies a raw client chain as an SVID of this trust domain:
// it chains to the bundle, is not revoked, and if it is an agent's, the agent
// is not evicted.
//
// Services call the API many times over one connection, and each request
// is checked again (a revocation may have happened since the handshake), so
// the signature checks are cached per leaf certificate until the chain's
// earliest expiry; refresh drops the cache whenever the revision (and so
// possibly the bundle) changes. Revocation and eviction are looked up on
// every call.
func (s *Server) verifyPeer(raw [][]byte) (spiffeid.ID, error) {
	td := s.cfg.TrustDomain
	now := s.now()
	sum := sha256.Sum256(raw[0])
	p, ok := s.peers.get(sum, now)
	if !ok {
		bundle := x509bundle.FromX509Authorities(td, s.ca.X509Bundle())
		id, chains, err := x509svid.ParseAndVerify(raw, bundle, x509svid.WithTime(now))
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("%w: %v", errUntrusted, err)
		}
		p = verifiedPeer{id: id, serial: chains[0][0].SerialNumber.Text(16), notAfter: chains[0][0].NotAfter}
		for _, c := range chains[0][1:] {
			if c.NotAfter.Before(p.notAfter) {
				p.notAfter = c.NotAfter
			}
		}
		s.peers.put(sum, p)
	}
	if s.isRevoked(p.serial) {
		return spiffeid.ID{}, fmt.Errorf("%w: serial %s", errRevoked, p.serial)
	}
	if identity.IsAgentID(td, p.id) && s.isEvicted(p.id.String()) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s", errEvicted, p.id)
	}
	return p.id, nil
}

type verifiedPeer struct {
	id       spiffeid.ID
	serial   string
	notAfter time.Time
}

// maxPeerCache bounds the verified-chain cache; when full it starts over.
const maxPeerCache = 16384

// peerCache remembers chains whose signatures verified.
type peerCache struct {
	mu sync.Mutex
	m  map[[32]byte]verifiedPeer
}

func (c *peerCache) get(sum [32]byte, now time.Time) (verifiedPeer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[sum]
	if ok && !now.Before(p.notAfter) {
		delete(c.m, sum)
		return verifiedPeer{}, false
	}
	return p, ok
}

func (c *peerCache) put(sum [32]byte, p verifiedPeer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxPeerCache {
		c.m = make(map[[32]byte]verifiedPeer)
	}
	c.m[sum] = p
}

func (c *peerCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

// verifyAgentChain is verifyPeer plus: the SVID must be an agent's.
func (s *Server) verifyAgentChain(raw [][]byte) (spiffeid.ID, error) {
	id, err := s.verifyPeer(raw)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !identity.IsAgentID(s.cfg.TrustDomain, id) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s", errNotAgent, id)
	}
	return id, nil
}
