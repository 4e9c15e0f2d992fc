package acme

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// Certificates: download (§7.4.2), revocation (§7.6) and renewal
// information (RFC 9773).

func (s *Server) handleCert(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	if !req.postAsGet() {
		return malformed("a certificate is read with POST-as-GET (an empty payload)")
	}
	c, err := s.st.GetACMECert(r.Context(), r.PathValue("serial"))
	if errors.Is(err, store.ErrNotFound) || err == nil && c.AccountID != req.acct.ID {
		return notFound("certificate")
	}
	if err != nil {
		return internal("cannot read the certificate")
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.WriteHeader(http.StatusOK)
	w.Write(c.Chain)
	return nil
}

// leafOf parses the first certificate of a stored PEM chain.
func leafOf(c store.ACMECert) (*x509.Certificate, error) {
	b, _ := pem.Decode(c.Chain)
	if b == nil {
		return nil, errors.New("acme: stored chain has no PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// Revocation reasons a subscriber may give (RFC 5280 §5.3.1, as Let's
// Encrypt accepts them): unspecified, keyCompromise, affiliationChanged,
// superseded, cessationOfOperation.
var revocationReasons = map[int]string{0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation"}

// RevocationReason parses a reason name or code for the admin API.
func RevocationReason(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if _, ok := revocationReasons[n]; ok {
			return n, nil
		}
	}
	for n, name := range revocationReasons {
		if strings.EqualFold(name, s) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("acme: revocation reason %q: want unspecified, keyCompromise, affiliationChanged, superseded or cessationOfOperation", s)
}

// handleRevokeCert revokes a certificate at the request of the account
// that ordered it (kid) or of the holder of its key (jwk).
func (s *Server) handleRevokeCert(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byEither)
	if p != nil {
		return p
	}
	var pl struct {
		Certificate string `json:"certificate"`
		Reason      *int   `json:"reason"`
	}
	if p := decodePayload(req.payload, &pl); p != nil {
		return p
	}
	der, err := decodeB64(pl.Certificate)
	if err != nil {
		return malformed("certificate: not base64url DER")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return malformed("certificate: %v", err)
	}
	reason := 0
	if pl.Reason != nil {
		reason = *pl.Reason
		if _, ok := revocationReasons[reason]; !ok {
			return problem(http.StatusBadRequest, errBadRevocationReason, "reason %d: want 0, 1, 3, 4 or 5 (RFC 5280)", reason)
		}
	}
	serial := svid.SerialString(cert.SerialNumber)
	c, err := s.st.GetACMECert(r.Context(), serial)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("certificate issued through ACME")
	}
	if err != nil {
		return internal("cannot read the certificate")
	}
	if leaf, err := leafOf(c); err != nil || !bytes.Equal(leaf.Raw, der) {
		return notFound("certificate issued through ACME")
	}
	actor, by := "", "account"
	if req.acct != nil {
		if req.acct.ID != c.AccountID {
			return unauthorized("only the account that ordered a certificate, or the holder of its key, may revoke it")
		}
		actor = req.acct.ID
	} else {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if k, ok := cert.PublicKey.(equaler); !ok || !k.Equal(req.key.Key) {
			return unauthorized("the request is not signed with the certificate's key")
		}
		actor, by = "cert-key", "certificate key"
	}
	switch err := s.st.RevokeACMECert(r.Context(), serial, reason, s.cfg.Now()); {
	case errors.Is(err, store.ErrStateConflict):
		return problem(http.StatusBadRequest, errAlreadyRevoked, "certificate %s is already revoked", serial)
	case err != nil:
		return internal("cannot revoke the certificate")
	}
	s.cfg.Changed(r.Context())
	s.metrics.revoked.Inc()
	s.record(r.Context(), s.entry(r, "acme.certificate_revoke", audit.OutcomeSuccess, revocationReasons[reason], actor,
		"target", strings.Join(c.Names, ","), "serial", serial, "reason", revocationReasons[reason], "revoked_by", by, "account", c.AccountID))
	w.WriteHeader(http.StatusOK)
	return nil
}

// CertIDs (RFC 9773 §4.1): base64url(AKI keyIdentifier) "." base64url(the
// serial's DER content octets).

func certIDOf(c store.ACMECert) string {
	n, ok := new(big.Int).SetString(c.Serial, 16)
	if !ok {
		return ""
	}
	return certID(c.AKI, n)
}

func certID(aki []byte, serial *big.Int) string {
	b := serial.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		b = append([]byte{0}, b...) // DER: a positive integer's first bit is 0
	}
	return base64.RawURLEncoding.EncodeToString(aki) + "." + base64.RawURLEncoding.EncodeToString(b)
}

// parseCertID returns a CertID's AKI and serial (as stored: hex).
func parseCertID(id string) ([]byte, string, error) {
	a, sn, ok := strings.Cut(id, ".")
	if !ok || strings.Contains(sn, ".") {
		return nil, "", fmt.Errorf("CertID %q: want base64url(AKI).base64url(serial)", id)
	}
	aki, err1 := decodeB64(a)
	serial, err2 := decodeB64(sn)
	if err1 != nil || err2 != nil || len(aki) == 0 || len(serial) == 0 || len(aki) > 64 || len(serial) > 21 {
		return nil, "", fmt.Errorf("CertID %q: want base64url(AKI).base64url(serial)", id)
	}
	// DER: minimal, positive.
	if serial[0]&0x80 != 0 || len(serial) > 1 && serial[0] == 0 && serial[1]&0x80 == 0 {
		return nil, "", fmt.Errorf("CertID %q: the serial is not a DER positive integer", id)
	}
	return aki, svid.SerialString(new(big.Int).SetBytes(serial)), nil
}

type renewalInfo struct {
	SuggestedWindow struct {
		Start string `json:"start"`
		End   string `json:"end"`
	} `json:"suggestedWindow"`
	ExplanationURL string `json:"explanationURL,omitempty"`
}

// renewalWindow is when a certificate should be renewed: from two thirds
// to three quarters of its life; for a revoked one, at once (a window in
// the past, RFC 9773 §4.2).
func renewalWindow(c store.ACMECert) (start, end time.Time) {
	if !c.RevokedAt.IsZero() {
		return c.NotBefore, c.RevokedAt
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3), c.NotBefore.Add(life * 3 / 4)
}

// handleRenewalInfo answers an unauthenticated GET for a certificate's
// renewal window (RFC 9773 §4.2).
func (s *Server) handleRenewalInfo(w http.ResponseWriter, r *http.Request) *Problem {
	aki, serial, err := parseCertID(r.PathValue("certid"))
	if err != nil {
		return malformed("%v", err)
	}
	c, err := s.st.GetACMECert(r.Context(), serial)
	if errors.Is(err, store.ErrNotFound) || err == nil && !bytes.Equal(c.AKI, aki) {
		return notFound("certificate")
	}
	if err != nil {
		return internal("cannot read the certificate")
	}
	var out renewalInfo
	start, end := renewalWindow(c)
	out.SuggestedWindow.Start, out.SuggestedWindow.End = rfc3339(start), rfc3339(end)
	// Ask again in six hours, or an eighth of the life if that is sooner.
	retry := min(6*time.Hour, c.NotAfter.Sub(c.NotBefore)/8)
	w.Header().Set("Retry-After", strconv.Itoa(max(60, int(retry.Seconds()))))
	return writeJSON(w, http.StatusOK, out)
}
