package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/identity"
)

// One audit log per deployment. Replicas sharing a PostgreSQL store elect
// nothing: the operator names the replica that keeps the log, and the
// store's lock (Store.HoldAuditLog) refuses a second one. The others are
// started with --audit-forward-to HOLDER: their own entries go to a
// durable spool (DATA/audit-spool, the agents' spool) and are shipped to
// the holder's ingestion API with this replica's server SVID; agents and
// witnesses that reach them are redirected to the holder. While the
// holder is away nothing is lost: the spool keeps the entries until it
// acknowledges them.

// openForwarder starts the spool that ships this replica's entries to the
// holder at addr.
func (s *Server) openForwarder(addr string) error {
	client := &api.Client{BaseURL: "https://" + addr, HTTP: &http.Client{Transport: &http.Transport{
		TLSClientConfig: s.replicaClientTLS(), ForceAttemptHTTP2: true}}}
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(s.cfg.DataDir, "audit-spool"), Log: s.log, Registry: s.reg,
		Sender: spool.APISender{Client: client}})
	if err != nil {
		return fmt.Errorf("server: audit forwarding: %w", err)
	}
	s.forward = sp
	return nil
}

// replicaClientTLS authenticates this replica to another with its server
// SVID and accepts only a server SVID of the trust domain, verified as
// callers are (identity.Verifier: current bundle, expiry, revocation).
func (s *Server) replicaClientTLS() *tls.Config {
	return s.peers.ClientTLS(func() (*tls.Certificate, error) { return s.cert.GetCertificate(nil) }, identity.ServerID(s.cfg.TrustDomain))
}

// appendForwarded writes es to the spool and returns once they are on disk
// (they reach the holder's log later, in order, exactly once).
func (s *Server) appendForwarded(ctx context.Context, es ...*audit.Entry) error {
	for _, e := range es {
		if err := s.forward.Record(e); err != nil {
			return err
		}
	}
	return s.forward.WaitWritten(ctx)
}

// atHolder serves h on the replica that holds the audit log; a forwarding
// replica redirects the request to the holder (307 keeps the method and
// body; agents' spools and witnesses follow it).
func (s *Server) atHolder(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.forward == nil {
			h(w, r)
			return
		}
		u := *r.URL
		u.Scheme, u.Host = "https", s.cfg.AuditForwardTo
		http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	}
}
