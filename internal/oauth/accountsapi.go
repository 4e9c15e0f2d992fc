package oauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

// The admin API of clients and users: HTTP translation of Accounts. The
// server's route table puts each handler behind its permission
// (oauth.client.read|write, oauth.user.read|write).

// ClientToAPI is a client as the API and the CLI show it.
func ClientToAPI(c store.OAuthClient) api.OAuthClient {
	return api.OAuthClient{ID: c.ID, Name: c.Name, AuthMethod: c.AuthMethod, RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes,
		Scopes: c.Scopes, Audience: c.Audience, JWKS: c.JWKS, SPIFFEID: c.SPIFFEID, Disabled: c.Disabled, CreatedAt: c.CreatedAt}
}

// UserToAPI is a user as the API and the CLI show it (never a secret).
func UserToAPI(u store.OAuthUser) api.OAuthUser {
	return api.OAuthUser{Username: u.Username, Name: u.Name, Email: u.Email, Groups: u.Groups, Disabled: u.Disabled,
		TOTP: u.TOTPSecret != nil, FailedLogins: u.FailedLogins, LockedUntil: u.LockedUntil, CreatedAt: u.CreatedAt}
}

// fail answers an error of Accounts: what was asked for
// (400), a missing or existing client or user (404, 409), or the store's.
func (a *Accounts) fail(w http.ResponseWriter, err error, missing, exists string) {
	switch {
	case errors.Is(err, ErrInvalid):
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, missing)
	case errors.Is(err, store.ErrConflict):
		api.WriteProblem(w, http.StatusConflict, exists)
	default:
		api.InternalError(w, a.Log, err)
	}
}

// HandleCreateClient serves POST /v1/oauth/clients.
func (a *Accounts) HandleCreateClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClient
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if req.Secret != "" {
		api.WriteProblem(w, http.StatusBadRequest, "secret: the server generates client secrets; do not send one")
		return
	}
	c, secret, err := a.CreateClient(r.Context(), store.OAuthClient{ID: req.ID, Name: req.Name, AuthMethod: req.AuthMethod,
		RedirectURIs: req.RedirectURIs, GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audience: req.Audience, JWKS: req.JWKS, SPIFFEID: req.SPIFFEID})
	if err != nil {
		a.fail(w, err, "", "an OAuth client with id "+c.ID+" already exists")
		return
	}
	a.Event(r, "oauth.client_create", "client_id", c.ID, "auth_method", c.AuthMethod, "grant_types", strings.Join(c.GrantTypes, " "),
		"target", c.ID)
	out := ClientToAPI(c)
	out.Secret = secret // shown once; only its hash is kept
	api.WriteJSON(w, http.StatusCreated, out)
}

// HandleListClients serves GET /v1/oauth/clients.
func (a *Accounts) HandleListClients(w http.ResponseWriter, r *http.Request) {
	cs, err := a.Store.ListOAuthClients(r.Context())
	if err != nil {
		api.InternalError(w, a.Log, fmt.Errorf("list oauth clients: %w", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(cs, ClientToAPI))
}

// HandleGetClient serves GET /v1/oauth/clients/{id}.
func (a *Accounts) HandleGetClient(w http.ResponseWriter, r *http.Request) {
	c, err := a.Store.GetOAuthClient(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err, "no OAuth client "+r.PathValue("id"), "")
		return
	}
	api.WriteJSON(w, http.StatusOK, ClientToAPI(c))
}

// HandleUpdateClient serves PATCH /v1/oauth/clients/{id}.
func (a *Accounts) HandleUpdateClient(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthClientUpdate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	c, revoked, err := a.SetClientDisabled(r.Context(), id, req.Disabled)
	if err != nil {
		a.fail(w, err, "no OAuth client "+id, "")
		return
	}
	a.Event(r, "oauth.client_update", "client_id", c.ID, "target", c.ID, "disabled", c.Disabled, "revoked_families", revoked)
	api.WriteJSON(w, http.StatusOK, ClientToAPI(c))
}

// HandleDeleteClient serves DELETE /v1/oauth/clients/{id}.
func (a *Accounts) HandleDeleteClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.DeleteClient(r.Context(), id); err != nil {
		a.fail(w, err, "no OAuth client "+id, "")
		return
	}
	a.Event(r, "oauth.client_delete", "client_id", id, "target", id)
	w.WriteHeader(http.StatusNoContent)
}

// HandleCreateUser serves POST /v1/oauth/users.
func (a *Accounts) HandleCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUser
	if !api.ReadJSON(w, r, &req) {
		return
	}
	u, err := a.CreateUser(r.Context(), store.OAuthUser{Username: req.Username, Name: req.Name, Email: req.Email,
		Groups: req.Groups, Disabled: req.Disabled}, req.Password)
	if err != nil {
		a.fail(w, err, "", "user "+req.Username+" already exists")
		return
	}
	a.Event(r, "oauth.user_create", "username", u.Username, "target", u.Username)
	api.WriteJSON(w, http.StatusCreated, UserToAPI(u))
}

// HandleListUsers serves GET /v1/oauth/users.
func (a *Accounts) HandleListUsers(w http.ResponseWriter, r *http.Request) {
	us, err := a.Store.ListOAuthUsers(r.Context())
	if err != nil {
		api.InternalError(w, a.Log, fmt.Errorf("list oauth users: %w", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(us, UserToAPI))
}

// HandleGetUser serves GET /v1/oauth/users/{name}.
func (a *Accounts) HandleGetUser(w http.ResponseWriter, r *http.Request) {
	u, err := a.Store.GetOAuthUser(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, err, "no user "+r.PathValue("name"), "")
		return
	}
	api.WriteJSON(w, http.StatusOK, UserToAPI(u))
}

// HandleUpdateUser serves PATCH /v1/oauth/users/{name}.
func (a *Accounts) HandleUpdateUser(w http.ResponseWriter, r *http.Request) {
	var req api.OAuthUserUpdate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	res, err := a.UpdateUser(r.Context(), name, UserChange{Password: req.Password, Name: req.Name, Email: req.Email,
		Groups: req.Groups, Disabled: req.Disabled, Unlock: req.Unlock, TOTP: req.TOTP})
	if err != nil {
		a.fail(w, err, "no user "+name, "")
		return
	}
	a.Event(r, "oauth.user_update", "username", res.User.Username, "target", res.User.Username, "changed", strings.Join(res.Changed, ", "),
		"revoked_families", res.Revoked)
	api.WriteJSON(w, http.StatusOK, api.OAuthUserUpdateResponse{User: UserToAPI(res.User), TOTPURI: res.TOTPURI})
}

// HandleDeleteUser serves DELETE /v1/oauth/users/{name}.
func (a *Accounts) HandleDeleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.DeleteUser(r.Context(), name); err != nil {
		a.fail(w, err, "no user "+name, "")
		return
	}
	a.Event(r, "oauth.user_delete", "username", name, "target", name)
	w.WriteHeader(http.StatusNoContent)
}
