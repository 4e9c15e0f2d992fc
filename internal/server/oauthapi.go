package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
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
		Record: s.record, Changed: s.notify, Now: s.now, Log: s.log.With("component", "oauth"),
		PeerCertificate: s.peerSVID, Registerer: s.reg,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.oauth = p
	return nil
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

func oauthClientToAPI(c store.OAuthClient) api.OAuthClient {
	return api.OAuthClient{ID: c.ID, Name: c.Name, AuthMethod: c.AuthMethod, RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes,
		Scopes: c.Scopes, Audience: c.Audience, JWKS: c.JWKS, SPIFFEID: c.SPIFFEID, Disabled: c.Disabled, CreatedAt: c.CreatedAt}
}

// revokeOAuth revokes what was issued for a user or to a client that is
// being disabled or deleted, and returns how many grant families went.
// Before the authorization server runs there is nothing to revoke.
func (s *Server) revokeOAuth(r *http.Request, user, client, reason string) (int, error) {
	if s.oauth == nil {
		return 0, nil
	}
	if user != "" {
		return s.oauth.RevokeUser(r.Context(), user, reason)
	}
	return s.oauth.RevokeClient(r.Context(), client, reason)
}

func (s *Server) handleUpdateOAuthClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClientUpdate
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	c, err := s.store.GetOAuthClient(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no OAuth client "+id)
		return
	}
	if err != nil {
		s.internalError(w, fmt.Errorf("get oauth client: %w", err))
		return
	}
	if req.Disabled == nil {
		writeProblem(w, http.StatusBadRequest, "disabled: required (the only attribute that can change)")
		return
	}
	c.Disabled = *req.Disabled
	if err := s.store.UpdateOAuthClient(r.Context(), c); err != nil {
		s.internalError(w, fmt.Errorf("update oauth client: %w", err))
		return
	}
	revoked := 0
	if c.Disabled {
		// After the flag: from here on the client cannot authenticate,
		// so nothing new is issued to it while its tokens are revoked.
		if revoked, err = s.revokeOAuth(r, "", c.ID, "client "+c.ID+" disabled"); err != nil {
			s.internalError(w, fmt.Errorf("revoke oauth client's tokens: %w", err))
			return
		}
	}
	s.event(r, "oauth.client_update", "client_id", c.ID, "target", c.ID, "disabled", c.Disabled, "revoked_families", revoked)
	writeJSON(w, http.StatusOK, oauthClientToAPI(c))
}

func oauthUserToAPI(u store.OAuthUser) api.OAuthUser {
	return api.OAuthUser{Username: u.Username, Name: u.Name, Email: u.Email, Groups: u.Groups, Disabled: u.Disabled,
		TOTP: u.TOTPSecret != nil, FailedLogins: u.FailedLogins, LockedUntil: u.LockedUntil, CreatedAt: u.CreatedAt}
}

func (s *Server) handleCreateOAuthClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClient
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Secret != "" {
		writeProblem(w, http.StatusBadRequest, "secret: the server generates client secrets; do not send one")
		return
	}
	c := store.OAuthClient{ID: req.ID, Name: req.Name, AuthMethod: req.AuthMethod, RedirectURIs: req.RedirectURIs,
		GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audience: req.Audience, JWKS: req.JWKS, SPIFFEID: req.SPIFFEID, CreatedAt: s.now()}
	if err := oauth.ValidateClient(c); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	secret := ""
	if strings.HasPrefix(c.AuthMethod, "client_secret_") {
		secret = oauth.NewSecret()
		c.SecretHash = oauth.HashSecret(secret)
	}
	if err := s.store.CreateOAuthClient(r.Context(), c); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeProblem(w, http.StatusConflict, "an OAuth client with id "+c.ID+" already exists")
			return
		}
		s.internalError(w, fmt.Errorf("create oauth client: %w", err))
		return
	}
	s.event(r, "oauth.client_create", "client_id", c.ID, "auth_method", c.AuthMethod, "grant_types", strings.Join(c.GrantTypes, " "),
		"target", c.ID)
	out := oauthClientToAPI(c)
	out.Secret = secret // shown once; only its hash is kept
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListOAuthClients(w http.ResponseWriter, r *http.Request) {
	cs, err := s.store.ListOAuthClients(r.Context())
	if err != nil {
		s.internalError(w, fmt.Errorf("list oauth clients: %w", err))
		return
	}
	out := make([]api.OAuthClient, 0, len(cs))
	for _, c := range cs {
		out = append(out, oauthClientToAPI(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetOAuthClient(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.GetOAuthClient(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no OAuth client "+r.PathValue("id"))
		return
	}
	if err != nil {
		s.internalError(w, fmt.Errorf("get oauth client: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, oauthClientToAPI(c))
}

func (s *Server) handleDeleteOAuthClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.store.GetOAuthClient(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no OAuth client "+id)
		return
	}
	// A client ID can be registered again: what the old one was issued
	// must not live on under the new registration.
	if _, err := s.revokeOAuth(r, "", id, "client "+id+" deleted"); err != nil {
		s.internalError(w, fmt.Errorf("revoke oauth client's tokens: %w", err))
		return
	}
	if err := s.store.DeleteOAuthClient(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeProblem(w, http.StatusNotFound, "no OAuth client "+id)
			return
		}
		s.internalError(w, fmt.Errorf("delete oauth client: %w", err))
		return
	}
	s.event(r, "oauth.client_delete", "client_id", id, "target", id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleCreateOAuthUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUser
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Password == "" {
		writeProblem(w, http.StatusBadRequest, "password: required")
		return
	}
	if err := oauth.ValidateUser(req.Username, req.Password); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	hash, err := oauth.HashPassword(req.Password)
	if err != nil {
		s.internalError(w, fmt.Errorf("hash password: %w", err))
		return
	}
	u := store.OAuthUser{Username: req.Username, PasswordHash: hash, Name: req.Name, Email: req.Email, Groups: req.Groups,
		Disabled: req.Disabled, CreatedAt: s.now()}
	if err := s.store.CreateOAuthUser(r.Context(), u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeProblem(w, http.StatusConflict, "user "+u.Username+" already exists")
			return
		}
		s.internalError(w, fmt.Errorf("create oauth user: %w", err))
		return
	}
	s.event(r, "oauth.user_create", "username", u.Username, "target", u.Username)
	writeJSON(w, http.StatusCreated, oauthUserToAPI(u))
}

func (s *Server) handleListOAuthUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.store.ListOAuthUsers(r.Context())
	if err != nil {
		s.internalError(w, fmt.Errorf("list oauth users: %w", err))
		return
	}
	out := make([]api.OAuthUser, 0, len(us))
	for _, u := range us {
		out = append(out, oauthUserToAPI(u))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetOAuthUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.oauthUser(w, r)
	if ok {
		writeJSON(w, http.StatusOK, oauthUserToAPI(u))
	}
}

func (s *Server) oauthUser(w http.ResponseWriter, r *http.Request) (store.OAuthUser, bool) {
	u, err := s.store.GetOAuthUser(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "no user "+r.PathValue("name"))
		return u, false
	}
	if err != nil {
		s.internalError(w, fmt.Errorf("get oauth user: %w", err))
		return u, false
	}
	return u, true
}

func (s *Server) handleUpdateOAuthUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUserUpdate
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	u, ok := s.oauthUser(w, r)
	if !ok {
		return
	}
	var changed []string
	if req.Password != nil {
		if err := oauth.ValidateUser(u.Username, *req.Password); err != nil || *req.Password == "" {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("password: at least %d characters", oauth.MinPasswordLength))
			return
		}
		hash, err := oauth.HashPassword(*req.Password)
		if err != nil {
			s.internalError(w, fmt.Errorf("hash password: %w", err))
			return
		}
		u.PasswordHash = hash
		changed = append(changed, "password")
	}
	if req.Name != nil {
		u.Name = *req.Name
		changed = append(changed, "name")
	}
	if req.Email != nil {
		u.Email = *req.Email
		changed = append(changed, "email")
	}
	if req.Groups != nil {
		u.Groups = *req.Groups
		changed = append(changed, "groups")
	}
	disabling := false
	if req.Disabled != nil {
		disabling = *req.Disabled && !u.Disabled
		u.Disabled = *req.Disabled
		if disabling {
			// Voids every login session begun until now.
			u.RevokedAt = s.now()
		}
		changed = append(changed, fmt.Sprintf("disabled=%v", u.Disabled))
	}
	var totpURI string
	switch req.TOTP {
	case "":
	case "enable":
		secret, b32 := oauth.NewTOTPSecret()
		sealed, err := oauth.SealTOTP(s.wrapper, u.Username, secret)
		if err != nil {
			s.internalError(w, fmt.Errorf("seal totp: %w", err))
			return
		}
		u.TOTPSecret, u.TOTPLastStep = sealed, 0
		totpURI = oauth.TOTPURI("Rampart", u.Username, b32)
		changed = append(changed, "totp enabled")
	case "disable":
		u.TOTPSecret, u.TOTPLastStep = nil, 0
		changed = append(changed, "totp disabled")
	default:
		writeProblem(w, http.StatusBadRequest, "totp: want enable or disable")
		return
	}
	err := s.store.UpdateOAuthUser(r.Context(), u)
	if err != nil {
		s.internalError(w, fmt.Errorf("update oauth user: %w", err))
		return
	}
	revoked := 0
	if disabling {
		// After the flag: refresh, exchange and userinfo refuse the user
		// from here on, so nothing new is issued while the old goes.
		if revoked, err = s.revokeOAuth(r, u.Username, "", "user "+u.Username+" disabled"); err != nil {
			s.internalError(w, fmt.Errorf("revoke oauth user's tokens: %w", err))
			return
		}
	}
	if req.Unlock {
		if err := s.store.LoginSucceeded(r.Context(), u.Username); err != nil {
			s.internalError(w, fmt.Errorf("unlock oauth user: %w", err))
			return
		}
		changed = append(changed, "unlocked")
		if u, err = s.store.GetOAuthUser(r.Context(), u.Username); err != nil {
			s.internalError(w, err)
			return
		}
	}
	s.event(r, "oauth.user_update", "username", u.Username, "target", u.Username, "changed", strings.Join(changed, ", "), "revoked_families", revoked)
	writeJSON(w, http.StatusOK, api.OAuthUserUpdateResponse{User: oauthUserToAPI(u), TOTPURI: totpURI})
}

func (s *Server) handleDeleteOAuthUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.oauthUser(w, r); !ok {
		return
	}
	// A username can be created again: the old user's tokens must not
	// speak for the new one.
	if _, err := s.revokeOAuth(r, name, "", "user "+name+" deleted"); err != nil {
		s.internalError(w, fmt.Errorf("revoke oauth user's tokens: %w", err))
		return
	}
	if err := s.store.DeleteOAuthUser(r.Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeProblem(w, http.StatusNotFound, "no user "+name)
			return
		}
		s.internalError(w, fmt.Errorf("delete oauth user: %w", err))
		return
	}
	s.event(r, "oauth.user_delete", "username", name, "target", name)
	w.WriteHeader(http.StatusNoContent)
}
