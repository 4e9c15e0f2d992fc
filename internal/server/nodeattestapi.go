package server

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/nodeattest"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// challengeQuota bounds the live challenges of one would-be agent: anyone
// holding a copy of a node's (public) certificate can ask in its name.
const challengeQuota = 8

// handleX509PoPChallenge verifies a node's certificate chain and issues
// a single-use nonce for it to sign.
func (s *Server) handleX509PoPChallenge(w http.ResponseWriter, r *http.Request) {
	if s.x509pop == nil {
		api.WriteProblem(w, http.StatusNotFound, "x509pop node attestation is not enabled on this server (rampart server --node-attest-x509pop-ca FILE)")
		return
	}
	var req api.X509PoPChallengeRequest
	if err := api.Decode(r, &req); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	node, err := s.x509pop.Verify(s.cfg.TrustDomain, req.Chain, now)
	if err != nil {
		s.nodeRefused(w, r, "x509pop", err)
		return
	}
	nonce := make([]byte, nodeattest.NonceSize)
	rand.Read(nonce)
	hash := sha256.Sum256(nonce)
	c := store.AttestChallenge{Hash: hash[:], Kind: nodeattest.KindX509PoP, Subject: node.AgentID.String(),
		ExpiresAt: now.Add(nodeattest.ChallengeTTL), CreatedAt: now}
	if err := s.store.CreateAttestChallenge(r.Context(), c, now, challengeQuota); err != nil {
		if errors.Is(err, store.ErrQuota) {
			s.refused(r, "agent.attest", "x509pop: too many open challenges", "agent_id", node.AgentID.String())
			api.WriteProblem(w, http.StatusTooManyRequests, "too many open challenges for this certificate; answer one or wait a minute")
			return
		}
		s.internalError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.X509PoPChallengeResponse{Nonce: nonce, ExpiresAt: c.ExpiresAt})
}

// handleX509PoPAttest checks the answer to a challenge and returns the
// agent's first SVID. The nonce is consumed before anything else is
// checked: a wrong answer spends it too.
func (s *Server) handleX509PoPAttest(w http.ResponseWriter, r *http.Request) {
	if s.x509pop == nil {
		api.WriteProblem(w, http.StatusNotFound, "x509pop node attestation is not enabled on this server (rampart server --node-attest-x509pop-ca FILE)")
		return
	}
	var req api.X509PoPAttestRequest
	c, now, ok := s.nodeChallenge(w, r, &req, nodeattest.KindX509PoP, func() []byte { return req.Nonce })
	if !ok {
		return
	}
	node, err := s.x509pop.Verify(s.cfg.TrustDomain, req.Chain, now)
	if err != nil {
		s.nodeRefused(w, r, "x509pop", err)
		return
	}
	if c.Subject != node.AgentID.String() {
		// Attack: a nonce obtained with one certificate, answered with
		// another (whose key the caller holds).
		s.nodeRefused(w, r, "x509pop", errors.New("the nonce was issued to another certificate"), "agent_id", node.AgentID.String())
		return
	}
	if err := nodeattest.CheckSignature(node.Leaf, req.Nonce, req.Signature); err != nil {
		s.nodeRefused(w, r, "x509pop", err, "agent_id", node.AgentID.String())
		return
	}
	s.attestNode(w, r, "x509pop", node.AgentID, req.CSR, "selectors", strings.Join(node.Selectors, " "))
}

// nodeChallenge decodes an attestation answer into req and consumes the
// challenge its nonce names (kind: the method), before anything else is
// checked: a wrong answer spends the nonce too. false: it answered.
func (s *Server) nodeChallenge(w http.ResponseWriter, r *http.Request, req any, kind string, nonce func() []byte) (store.AttestChallenge, time.Time, bool) {
	if err := api.Decode(r, req); err != nil {
		s.metrics.attestations.WithLabelValues("bad_request").Inc()
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return store.AttestChallenge{}, time.Time{}, false
	}
	now := s.now()
	hash := sha256.Sum256(nonce())
	c, err := s.store.ConsumeAttestChallenge(r.Context(), hash[:], kind, now)
	if err != nil {
		if !errors.Is(err, store.ErrTokenInvalid) {
			s.internalError(w, err)
		} else {
			s.nodeRefused(w, r, kind, errors.New("the nonce is unknown, already answered, or expired"))
		}
		return c, now, false
	}
	return c, now, true
}

// attestNode signs the first SVID of an agent whose node was proven by
// method, unless the agent was evicted: a node attested by what it holds
// (a certificate, a TPM) could otherwise come back at will; once evicted,
// it needs a new credential (so a new agent ID).
func (s *Server) attestNode(w http.ResponseWriter, r *http.Request, method string, agentID spiffeid.ID, csr []byte, kv ...any) {
	if a, err := s.store.GetAgent(r.Context(), agentID.String()); err == nil && a.Evicted {
		s.nodeRefused(w, r, method, errors.New("the agent was evicted; a node evicted stays out until it has a new credential"), "agent_id", agentID.String())
		return
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internalError(w, err)
		return
	}
	chain, ok := s.signAgent(w, r, agentID, csr, false)
	if !ok {
		s.metrics.attestations.WithLabelValues("bad_csr").Inc()
		return
	}
	s.metrics.attestations.WithLabelValues("ok").Inc()
	s.event(r, "agent.attest", append([]any{"agent_id", agentID.String(), "method", method, "serial", svid.SerialString(chain[0].SerialNumber)}, kv...)...)
	api.WriteJSON(w, http.StatusOK, api.AttestResponse{SVID: toAPISVID(agentID, chain), Bundle: s.bundleDER()})
}

// nodeRefused answers a refused node attestation: the reason goes to the
// audit log and the operator's log, the caller learns only that it was
// refused by method.
func (s *Server) nodeRefused(w http.ResponseWriter, r *http.Request, method string, why error, kv ...any) {
	s.metrics.attestations.WithLabelValues("refused").Inc()
	s.log.Warn("node attestation refused", append([]any{"method", method, "remote", r.RemoteAddr, "reason", why.Error()}, kv...)...)
	s.refused(r, "agent.attest", method+": "+why.Error(), kv...)
	api.WriteProblem(w, http.StatusUnauthorized, method+" node attestation refused")
}

// handleTPMChallenge checks a TPM's EK against the allowed ones and its
// AK's attributes, and makes a credential only that TPM can activate.
func (s *Server) handleTPMChallenge(w http.ResponseWriter, r *http.Request) {
	if s.tpm == nil {
		api.WriteProblem(w, http.StatusNotFound, "tpm node attestation is not enabled on this server (rampart server --node-attest-tpm-ek-hash HASH)")
		return
	}
	var req api.TPMChallengeRequest
	if err := api.Decode(r, &req); err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	ch, err := s.tpm.Challenge(s.cfg.TrustDomain, req.EKPublic, req.AKPublic)
	if err != nil {
		s.nodeRefused(w, r, "tpm", err)
		return
	}
	now := s.now()
	hash := sha256.Sum256(ch.Nonce)
	c := store.AttestChallenge{Hash: hash[:], Kind: nodeattest.KindTPM, Subject: ch.AgentID.String(), State: ch.State,
		ExpiresAt: now.Add(nodeattest.ChallengeTTL), CreatedAt: now}
	if err := s.store.CreateAttestChallenge(r.Context(), c, now, challengeQuota); err != nil {
		if errors.Is(err, store.ErrQuota) {
			s.refused(r, "agent.attest", "tpm: too many open challenges", "agent_id", ch.AgentID.String())
			api.WriteProblem(w, http.StatusTooManyRequests, "too many open challenges for this TPM; answer one or wait a minute")
			return
		}
		s.internalError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.TPMChallengeResponse{Nonce: ch.Nonce, CredentialBlob: ch.CredentialBlob,
		EncryptedSecret: ch.EncryptedSecret, ExpiresAt: c.ExpiresAt})
}

// handleTPMAttest checks the activated credential and the quote, and
// returns the agent's first SVID. The nonce is consumed first.
func (s *Server) handleTPMAttest(w http.ResponseWriter, r *http.Request) {
	if s.tpm == nil {
		api.WriteProblem(w, http.StatusNotFound, "tpm node attestation is not enabled on this server (rampart server --node-attest-tpm-ek-hash HASH)")
		return
	}
	var req api.TPMAttestRequest
	c, _, ok := s.nodeChallenge(w, r, &req, nodeattest.KindTPM, func() []byte { return req.Nonce })
	if !ok {
		return
	}
	id, err := s.tpm.Verify(s.cfg.TrustDomain, req.EKPublic, req.AKPublic, req.Nonce, req.Secret, req.Quote, req.Signature, c.State)
	if err != nil {
		s.nodeRefused(w, r, "tpm", err)
		return
	}
	if c.Subject != id.String() {
		s.nodeRefused(w, r, "tpm", errors.New("the nonce was issued to another TPM"), "agent_id", id.String())
		return
	}
	s.attestNode(w, r, "tpm", id, req.CSR, "ek_hash", nodeattest.EKHash(req.EKPublic))
}
