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

func oauthClientToAPI(c store.OAuthClient) api.OAuthClient {
	return api.OAuthClient{ID: c.ID, Name: c.Name, AuthMethod: c.AuthMethod, RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes,
		Scopes: c.Scopes, Audience: c.Audience, JWKS: c.JWKS, SPIFFEID: c.SPIFFEID, Disabled: c.Disabled, CreatedAt: c.CreatedAt}
}

func oauthUserToAPI(u store.OAuthUser) api.OAuthUser {
	return api.OAuthUser{Username: u.Username, Name: u.Name, Email: u.Email, Groups: u.Groups, Disabled: u.Disabled,
		TOTP: u.TOTPSecret != nil, FailedLogins: u.FailedLogins, LockedUntil: u.LockedUntil, CreatedAt: u.CreatedAt}
}

// accountError answers an error of oauth.Accounts: what was asked for
// (400), a missing or existing client or user (404, 409), or the store's.
func (s *Server) accountError(w http.ResponseWriter, err error, missing, exists string) {
	switch {
	case errors.Is(err, oauth.ErrInvalid):
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, missing)
	case errors.Is(err, store.ErrConflict):
		api.WriteProblem(w, http.StatusConflict, exists)
	default:
		s.internalError(w, err)
	}
}

func (s *Server) handleCreateOAuthClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClient
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if req.Secret != "" {
		api.WriteProblem(w, http.StatusBadRequest, "secret: the server generates client secrets; do not send one")
		return
	}
	c, secret, err := s.accounts.CreateClient(r.Context(), store.OAuthClient{ID: req.ID, Name: req.Name, AuthMethod: req.AuthMethod,
		RedirectURIs: req.RedirectURIs, GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audience: req.Audience, JWKS: req.JWKS, SPIFFEID: req.SPIFFEID})
	if err != nil {
		s.accountError(w, err, "", "an OAuth client with id "+c.ID+" already exists")
		return
	}
	s.event(r, "oauth.client_create", "client_id", c.ID, "auth_method", c.AuthMethod, "grant_types", strings.Join(c.GrantTypes, " "),
		"target", c.ID)
	out := oauthClientToAPI(c)
	out.Secret = secret // shown once; only its hash is kept
	api.WriteJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListOAuthClients(w http.ResponseWriter, r *http.Request) {
	cs, err := s.store.ListOAuthClients(r.Context())
	if err != nil {
		s.internalError(w, fmt.Errorf("list oauth clients: %w", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(cs, oauthClientToAPI))
}

func (s *Server) handleGetOAuthClient(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.GetOAuthClient(r.Context(), r.PathValue("id"))
	if err != nil {
		s.accountError(w, err, "no OAuth client "+r.PathValue("id"), "")
		return
	}
	api.WriteJSON(w, http.StatusOK, oauthClientToAPI(c))
}

func (s *Server) handleUpdateOAuthClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClientUpdate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	c, revoked, err := s.accounts.SetClientDisabled(r.Context(), id, req.Disabled)
	if err != nil {
		s.accountError(w, err, "no OAuth client "+id, "")
		return
	}
	s.event(r, "oauth.client_update", "client_id", c.ID, "target", c.ID, "disabled", c.Disabled, "revoked_families", revoked)
	api.WriteJSON(w, http.StatusOK, oauthClientToAPI(c))
}

func (s *Server) handleDeleteOAuthClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.accounts.DeleteClient(r.Context(), id); err != nil {
		s.accountError(w, err, "no OAuth client "+id, "")
		return
	}
	s.event(r, "oauth.client_delete", "client_id", id, "target", id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleCreateOAuthUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUser
	if !api.ReadJSON(w, r, &req) {
		return
	}
	u, err := s.accounts.CreateUser(r.Context(), store.OAuthUser{Username: req.Username, Name: req.Name, Email: req.Email,
		Groups: req.Groups, Disabled: req.Disabled}, req.Password)
	if err != nil {
		s.accountError(w, err, "", "user "+req.Username+" already exists")
		return
	}
	s.event(r, "oauth.user_create", "username", u.Username, "target", u.Username)
	api.WriteJSON(w, http.StatusCreated, oauthUserToAPI(u))
}

func (s *Server) handleListOAuthUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.store.ListOAuthUsers(r.Context())
	if err != nil {
		s.internalError(w, fmt.Errorf("list oauth users: %w", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(us, oauthUserToAPI))
}

func (s *Server) handleGetOAuthUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.store.GetOAuthUser(r.Context(), r.PathValue("name"))
	if err != nil {
		s.accountError(w, err, "no user "+r.PathValue("name"), "")
		return
	}
	api.WriteJSON(w, http.StatusOK, oauthUserToAPI(u))
}

func (s *Server) handleUpdateOAuthUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUserUpdate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	res, err := s.accounts.UpdateUser(r.Context(), name, oauth.UserChange{Password: req.Password, Name: req.Name, Email: req.Email,
		Groups: req.Groups, Disabled: req.Disabled, Unlock: req.Unlock, TOTP: req.TOTP})
	if err != nil {
		s.accountError(w, err, "no user "+name, "")
		return
	}
	s.event(r, "oauth.user_update", "username", res.User.Username, "target", res.User.Username, "changed", strings.Join(res.Changed, ", "),
		"revoked_families", res.Revoked)
	api.WriteJSON(w, http.StatusOK, api.OAuthUserUpdateResponse{User: oauthUserToAPI(res.User), TOTPURI: res.TOTPURI})
}

func (s *Server) handleDeleteOAuthUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.accounts.DeleteUser(r.Context(), name); err != nil {
		s.accountError(w, err, "no user "+name, "")
		return
	}
	s.event(r, "oauth.user_delete", "username", name, "target", name)
	w.WriteHeader(http.StatusNoContent)
}
