package acme

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

// The operator's endpoints (/v1/acme/...): EAB keys and issued
// certificates. The server's route table puts each behind the admin check
// and its permission (acme.read, acme.enrol, acme.revoke); every change is
// audited as the operator's (Config.Event).

// EABKeyToAPI is an EAB key as the API shows it (never its HMAC key).
func EABKeyToAPI(k store.ACMEEABKey) api.ACMEEABKey {
	return api.ACMEEABKey{KeyID: k.KeyID, Label: k.Label, AllowedNames: k.AllowedNames, ClientAuth: k.ClientAuth, Reusable: k.Reusable,
		Accounts: k.Accounts, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

// CertToAPI is an issued certificate as the API shows it.
func CertToAPI(c CertInfo) api.ACMECert {
	out := api.ACMECert{Serial: c.Serial, CertID: c.CertID, Account: c.AccountID, Order: c.OrderID, Names: c.Names, Status: c.Status,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: c.IssuedAt, RevokedAt: c.RevokedAt, ReplacedBy: c.ReplacedBy}
	if !c.RevokedAt.IsZero() {
		out.RevocationReason = ReasonName(c.RevocationReason)
	}
	return out
}

// writeError answers an operator call's error: what was wrong for the
// caller's mistakes, nothing of the store's.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	detail := func(sentinel error) string { return strings.TrimPrefix(err.Error(), sentinel.Error()+": ") }
	switch {
	case errors.Is(err, ErrInvalid):
		api.WriteProblem(w, http.StatusBadRequest, detail(ErrInvalid))
	case errors.Is(err, ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, detail(ErrNotFound))
	case errors.Is(err, ErrAlreadyRevoked):
		api.WriteProblem(w, http.StatusConflict, detail(ErrAlreadyRevoked)+" (nothing changed)")
	default:
		api.InternalError(w, s.cfg.Log, err)
	}
}

// HandleCreateEABKey serves POST /v1/acme/eab-keys: the answer carries
// the HMAC key, the one time it is shown.
func (s *Server) HandleCreateEABKey(w http.ResponseWriter, r *http.Request) {
	var req api.ACMEEABKeyRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(MaxEABTTL/time.Second) {
		api.WriteProblem(w, http.StatusBadRequest, "ttl_seconds: between 1 and "+MaxEABTTL.String()+" in seconds (0 for the default)")
		return
	}
	k, mac, err := s.CreateEABKey(r.Context(), NewEABKey{Label: req.Label, AllowedNames: req.AllowedNames, ClientAuth: req.ClientAuth,
		Reusable: req.Reusable, TTL: time.Duration(req.TTLSeconds) * time.Second})
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.cfg.Event(r, "acme.eab_create", "target", k.KeyID, "allowed_names", strings.Join(k.AllowedNames, ","), "label", k.Label,
		"client_auth", k.ClientAuth, "reusable", k.Reusable, "expires_at", k.ExpiresAt)
	out := EABKeyToAPI(k)
	out.HMACKey, out.Directory = mac, s.url(r, "directory")
	api.WriteJSON(w, http.StatusCreated, out)
}

// HandleListEABKeys serves GET /v1/acme/eab-keys.
func (s *Server) HandleListEABKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.EABKeys(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(ks, EABKeyToAPI))
}

// HandleRevokeEABKey serves POST /v1/acme/eab-keys/{kid}/revoke.
func (s *Server) HandleRevokeEABKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.RevokeEABKey(r.Context(), r.PathValue("kid"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.cfg.Event(r, "acme.eab_revoke", "target", k.KeyID, "accounts", k.Accounts)
	api.WriteJSON(w, http.StatusOK, EABKeyToAPI(k))
}

// HandleListCerts serves GET /v1/acme/certs (?account= &all=true).
func (s *Server) HandleListCerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cs, err := s.Certs(r.Context(), store.ACMECertFilter{AccountID: q.Get("account"), Expired: q.Get("all") == "true", Limit: 10000})
	if err != nil {
		s.writeError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(cs, CertToAPI))
}

// HandleRevokeCert serves POST /v1/acme/certs/{serial}/revoke.
func (s *Server) HandleRevokeCert(w http.ResponseWriter, r *http.Request) {
	var req api.ACMERevokeRequest
	if r.ContentLength != 0 && !api.ReadJSON(w, r, &req) {
		return
	}
	reason, err := RevocationReason(req.Reason)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "reason: "+strings.TrimPrefix(err.Error(), "acme: "))
		return
	}
	c, err := s.RevokeCert(r.Context(), r.PathValue("serial"), reason)
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.cfg.Event(r, "acme.certificate_revoke", "target", strings.Join(c.Names, ","), "serial", c.Serial, "reason", ReasonName(reason),
		"revoked_by", "operator", "account", c.AccountID)
	api.WriteJSON(w, http.StatusOK, CertToAPI(c))
}
