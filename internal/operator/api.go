package operator

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/store"
)

// ManageStore is what API changes.
type ManageStore interface {
	CreateOperator(ctx context.Context, o store.Operator) error
	GetOperator(ctx context.Context, name string) (store.Operator, error)
	ListOperators(ctx context.Context) ([]store.Operator, error)
	UpdateOperator(ctx context.Context, o store.Operator) error
	GetOAuthUser(ctx context.Context, username string) (store.OAuthUser, error)
}

// API serves the operator endpoints.
type API struct {
	Store       ManageStore
	TrustDomain spiffeid.TrustDomain
	// Caller returns the authenticated caller of r.
	Caller func(r *http.Request) (Caller, bool)
	// Event records a successful change in the audit log.
	Event func(r *http.Request, action string, kv ...any)
	Now   func() time.Time
}

// ToAPI renders an operator.
func ToAPI(o store.Operator) api.Operator {
	out := api.Operator{Name: o.Name, Kind: o.Kind, Disabled: o.Disabled, RequireMFA: o.RequireMFA,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt, By: o.By, Roles: []api.OperatorRole{}}
	c := Caller{Roles: o.Roles}
	for _, r := range o.Roles {
		out.Roles = append(out.Roles, api.OperatorRole(r))
	}
	for _, p := range c.Permissions() {
		out.Permissions = append(out.Permissions, string(p))
	}
	return out
}

// validRoles checks roles and their service patterns.
func (a *API) validRoles(roles []api.OperatorRole) ([]store.OperatorRole, error) {
	out := make([]store.OperatorRole, 0, len(roles))
	for _, r := range roles {
		role, err := permission.ParseRole(r.Role)
		if err != nil {
			return nil, err
		}
		if len(r.Services) > 0 && !role.Scoped() {
			return nil, errors.New("operator: role " + r.Role + " cannot be limited to services (only policy-author can)")
		}
		for _, s := range r.Services {
			if err := ValidatePattern(s, a.TrustDomain); err != nil {
				return nil, err
			}
		}
		out = append(out, store.OperatorRole{Role: r.Role, Services: slices.Clone(r.Services)})
	}
	return out, nil
}

func (a *API) by(r *http.Request) string {
	c, _ := a.Caller(r)
	if c.Actor.User != "" {
		return c.Actor.User
	}
	return c.Actor.SpiffeID
}

// HandleCreate adds an operator: a user (who must exist as an OAuth user)
// or a workload pattern.
func (a *API) HandleCreate(w http.ResponseWriter, r *http.Request) {
	var req api.OperatorCreate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	roles, err := a.validRoles(req.Roles)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(roles) == 0 {
		api.WriteProblem(w, http.StatusBadRequest, "roles: an operator needs at least one role")
		return
	}
	now := a.Now()
	o := store.Operator{Name: req.Name, Kind: req.Kind, Roles: roles, CreatedAt: now, UpdatedAt: now, By: a.by(r)}
	switch req.Kind {
	case store.OperatorUser:
		if err := oauth.ValidateUser(req.Name, ""); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "name: "+err.Error())
			return
		}
		if _, err := a.Store.GetOAuthUser(r.Context(), req.Name); errors.Is(err, store.ErrNotFound) {
			api.WriteProblem(w, http.StatusBadRequest, "name: no OAuth user "+req.Name+"; create it first (rampart oauth user create)")
			return
		} else if err != nil {
			api.WriteProblem(w, http.StatusInternalServerError, "cannot read users")
			return
		}
		o.RequireMFA = req.RequireMFA == nil || *req.RequireMFA
	case store.OperatorWorkload:
		if err := ValidatePattern(req.Name, a.TrustDomain); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "name: "+err.Error())
			return
		}
		if req.RequireMFA != nil && *req.RequireMFA {
			api.WriteProblem(w, http.StatusBadRequest, "require_mfa: a workload has no second factor")
			return
		}
	default:
		api.WriteProblem(w, http.StatusBadRequest, `kind: want "user" or "workload"`)
		return
	}
	if err := a.Store.CreateOperator(r.Context(), o); errors.Is(err, store.ErrConflict) {
		api.WriteProblem(w, http.StatusConflict, "operator "+o.Name+" exists; change it with grant, revoke, disable")
		return
	} else if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the operator")
		return
	}
	a.Event(r, "operator.create", "target", o.Name, "kind", o.Kind, "roles", rolesString(o.Roles), "require_mfa", o.RequireMFA)
	api.WriteJSON(w, http.StatusCreated, ToAPI(o))
}

func rolesString(rs []store.OperatorRole) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += " "
		}
		s += r.Role
		for j, svc := range r.Services {
			if j == 0 {
				s += "["
			} else {
				s += ","
			}
			s += svc
		}
		if len(r.Services) > 0 {
			s += "]"
		}
	}
	return s
}

// HandleList lists operators.
func (a *API) HandleList(w http.ResponseWriter, r *http.Request) {
	ops, err := a.Store.ListOperators(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read operators")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(ops, ToAPI))
}

func (a *API) get(w http.ResponseWriter, r *http.Request) (store.Operator, bool) {
	name := r.URL.Query().Get("name")
	if name == "" {
		api.WriteProblem(w, http.StatusBadRequest, "name: required (?name=USERNAME or ?name=SPIFFE-ID-PATTERN)")
		return store.Operator{}, false
	}
	o, err := a.Store.GetOperator(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, http.StatusNotFound, "no operator "+name)
		return o, false
	}
	if err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot read operators")
		return o, false
	}
	return o, true
}

// HandleGet reads an operator (?name=).
func (a *API) HandleGet(w http.ResponseWriter, r *http.Request) {
	if o, ok := a.get(w, r); ok {
		api.WriteJSON(w, http.StatusOK, ToAPI(o))
	}
}

// HandleUpdate grants and revokes roles, disables and enables (?name=).
// An operator cannot disable itself or take admin from itself: the last
// way back in would be the break-glass token.
func (a *API) HandleUpdate(w http.ResponseWriter, r *http.Request) {
	o, ok := a.get(w, r)
	if !ok {
		return
	}
	var req api.OperatorUpdate
	if !api.ReadJSON(w, r, &req) {
		return
	}
	grant, err := a.validRoles(req.Grant)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, name := range req.Revoke {
		if _, err := permission.ParseRole(name); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	self := a.by(r) == o.Name
	if self && (req.Disabled != nil && *req.Disabled || slices.Contains(req.Revoke, string(permission.Admin))) {
		api.WriteProblem(w, http.StatusConflict, "an operator cannot disable itself or revoke its own admin role; ask another admin")
		return
	}
	roles := slices.DeleteFunc(slices.Clone(o.Roles), func(x store.OperatorRole) bool { return slices.Contains(req.Revoke, x.Role) })
	for _, g := range grant {
		i := slices.IndexFunc(roles, func(x store.OperatorRole) bool { return x.Role == g.Role })
		switch {
		case i < 0:
			roles = append(roles, g)
		case len(g.Services) == 0 || len(roles[i].Services) == 0:
			roles[i].Services = nil // all services
		default:
			for _, s := range g.Services {
				if !slices.Contains(roles[i].Services, s) {
					roles[i].Services = append(roles[i].Services, s)
				}
			}
		}
	}
	if req.RequireMFA != nil {
		if o.Kind == store.OperatorWorkload && *req.RequireMFA {
			api.WriteProblem(w, http.StatusBadRequest, "require_mfa: a workload has no second factor")
			return
		}
		o.RequireMFA = *req.RequireMFA
	}
	if req.Disabled != nil {
		o.Disabled = *req.Disabled
	}
	o.Roles, o.UpdatedAt, o.By = roles, a.Now(), a.by(r)
	if err := a.Store.UpdateOperator(r.Context(), o); err != nil {
		api.WriteProblem(w, http.StatusInternalServerError, "cannot store the operator")
		return
	}
	kv := []any{"target", o.Name, "roles", rolesString(o.Roles), "disabled", o.Disabled, "require_mfa", o.RequireMFA}
	if len(req.Grant) > 0 {
		kv = append(kv, "granted", rolesString(grant))
	}
	if len(req.Revoke) > 0 {
		kv = append(kv, "revoked", req.Revoke)
	}
	a.Event(r, "operator.update", kv...)
	api.WriteJSON(w, http.StatusOK, ToAPI(o))
}

// HandleWhoami says who the caller is and what it holds.
func (a *API) HandleWhoami(w http.ResponseWriter, r *http.Request) {
	c, ok := a.Caller(r)
	if !ok {
		api.WriteProblem(w, http.StatusUnauthorized, "not authenticated")
		return
	}
	out := api.Whoami{Kind: c.Kind, Subject: c.Actor.User, SpiffeID: c.Actor.SpiffeID, Name: c.Name, Session: c.Session,
		AMR: c.AMR, ExpiresAt: c.ExpiresAt, Via: c.Via, Roles: []api.OperatorRole{}, Permissions: []string{}}
	for _, r := range c.Roles {
		out.Roles = append(out.Roles, api.OperatorRole(r))
	}
	for _, p := range c.Permissions() {
		out.Permissions = append(out.Permissions, string(p))
	}
	api.WriteJSON(w, http.StatusOK, out)
}
