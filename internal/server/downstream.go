package server

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// maxDownstreamBody bounds a downstream CA request: one CSR.
const maxDownstreamBody = 64 << 10

// handleDownstream mints a downstream CA (SPIRE's MintX509CA) for a
// workload whose SPIFFE ID is that of an unexpired entry marked
// downstream: a nested server's signing certificate, constrained to the
// trust domain (identity.SignDownstreamCA). The caller authenticated
// with its SVID (AuthWorkload, signed by this server itself: a CA minted
// here cannot mint the next one). Refused: downstream CAs off on this
// server, a quarantined caller, no such entry, a CSR that does not
// verify. Each minted CA is recorded as an issued certificate of the
// caller's SPIFFE ID, so "rampart svid revoke" by serial or by SPIFFE ID
// revokes it.
func (s *Server) handleDownstream(w http.ResponseWriter, r *http.Request) {
	caller := agentFrom(r)
	refuse := func(code int, why string, kv ...any) {
		s.metrics.downstreamCAs.WithLabelValues("refused").Inc()
		s.refused(r, "ca.downstream", why, kv...)
		api.WriteProblem(w, code, why)
	}
	if s.cfg.DownstreamMaxTTL <= 0 {
		refuse(http.StatusForbidden, "downstream CAs are off on this server (start it with --downstream-max-ttl)")
		return
	}
	if s.quarantine.Holds(caller) {
		refuse(http.StatusForbidden, caller.String()+" is quarantined")
		return
	}
	var req api.DownstreamRequest
	r.Body = http.MaxBytesReader(w, r.Body, maxDownstreamBody)
	if !api.ReadJSON(w, r, &req) {
		return
	}
	now := s.now()
	entries, err := s.store.FindEntries(r.Context(), store.EntryFilter{SpiffeID: caller.String()})
	if err != nil {
		s.metrics.downstreamCAs.WithLabelValues("failed").Inc()
		s.internalError(w, err)
		return
	}
	var entry *store.Entry
	for i, e := range entries {
		if e.Downstream && e.SpiffeID == caller.String() && (e.ExpiresAt.IsZero() || now.Before(e.ExpiresAt)) {
			entry = &entries[i]
			break
		}
	}
	if entry == nil {
		refuse(http.StatusForbidden, "no unexpired downstream entry has the SPIFFE ID "+caller.String())
		return
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		refuse(http.StatusBadRequest, "csr: not a PKCS#10 certificate request (DER): "+err.Error(), "entry_id", entry.ID)
		return
	}
	if err := identity.CheckDownstreamCSR(csr); err != nil {
		refuse(http.StatusBadRequest, "csr: "+err.Error(), "entry_id", entry.ID)
		return
	}
	ttl := s.cfg.DownstreamMaxTTL
	if req.TTLSeconds < 0 {
		refuse(http.StatusBadRequest, "ttl_seconds: must be positive, or 0 for the server's maximum", "entry_id", entry.ID)
		return
	}
	if asked := time.Duration(req.TTLSeconds) * time.Second; asked > 0 && asked < ttl {
		ttl = asked
	}
	chain, err := s.ca.SignDownstreamCA(csr, caller, ttl, entry.ExpiresAt)
	if err != nil {
		s.metrics.downstreamCAs.WithLabelValues("failed").Inc()
		if errors.Is(err, identity.ErrDownstreamOff) {
			s.refused(r, "ca.downstream", err.Error(), "entry_id", entry.ID)
			api.WriteProblem(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		s.log.Error("cannot sign a downstream CA", "spiffe_id", caller.String(), "err", err)
		api.WriteProblem(w, http.StatusServiceUnavailable, "the CA cannot sign now")
		return
	}
	serial := svid.SerialString(chain[0].SerialNumber)
	// Recorded before it is handed out: one the store does not know
	// could not be revoked by SPIFFE ID.
	if err := s.store.RecordSVIDs(r.Context(), []store.IssuedSVID{{Serial: serial, SpiffeID: caller.String(), EntryID: entry.ID,
		NotAfter: chain[0].NotAfter, IssuedAt: now}}); err != nil {
		s.metrics.downstreamCAs.WithLabelValues("failed").Inc()
		s.internalError(w, err)
		return
	}
	s.metrics.downstreamCAs.WithLabelValues("minted").Inc()
	s.event(r, "ca.downstream_minted", "entry_id", entry.ID, "serial", serial, "not_after", chain[0].NotAfter.UTC().Format(time.RFC3339),
		"public_key_sha256", fmt.Sprintf("%x", sha256.Sum256(chain[0].RawSubjectPublicKeyInfo)))
	resp := api.DownstreamResponse{Serial: serial, ExpiresAt: chain[0].NotAfter}
	for _, c := range chain {
		resp.Chain = append(resp.Chain, c.Raw)
	}
	for _, c := range s.ca.X509Bundle() {
		resp.Bundle = append(resp.Bundle, c.Raw)
	}
	api.WriteJSON(w, http.StatusOK, resp)
}
