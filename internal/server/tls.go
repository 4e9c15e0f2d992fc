package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
)

// tlsConfig returns the HTTPS configuration: TLS 1.3 only; a client
// certificate is optional (admin calls use a bearer token) but, when one
// is sent, it must be an SVID that chains to the current bundle, or the
// handshake fails.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetCertificate:        s.cert.GetCertificate,
		ClientAuth:            tls.RequestClientCert,
		VerifyPeerCertificate: s.verifyClient,
		NextProtos:            []string{"h2", "http/1.1"},
	}
}

// verifyClient checks a client certificate, when one is sent, against the
// current bundle: it must be an SVID of this trust domain, not revoked, and
// not an evicted agent's. Which SVIDs may call what is decided per route.
func (s *Server) verifyClient(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	if _, err := s.verifyPeer(raw); err != nil {
		s.metrics.handshakeFailures.WithLabelValues(identity.Reason(err)).Inc()
		// A revoked SVID still in use is named by its SPIFFE ID (its chain
		// verified); a certificate of another CA only claims one, and is
		// "unknown" (refusedCertActor).
		e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: "tls.client_auth", Outcome: audit.OutcomeDenied,
			Reason: err.Error(), Source: "server", Details: map[string]string{"reason": identity.Reason(err)}}
		if c, perr := x509.ParseCertificate(raw[0]); perr == nil {
			refusedCertActor(e, c, err)
			e.Details["serial"] = e.Details["cert_serial"]
		} else {
			e.Actor.User = "unknown"
		}
		s.recordRefusal(context.Background(), e, "")
		return err
	}
	return nil
}

// verifyPeer verifies a raw client chain as an SVID of this trust domain
// (identity.Verifier: bundle, expiry, revocation, eviction).
func (s *Server) verifyPeer(raw [][]byte) (spiffeid.ID, error) { return s.peers.Verify(raw) }
