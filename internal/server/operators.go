package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/store"
)

// callerKey carries the authenticated admin caller (operator.Caller).
type callerKey struct{}

func callerFrom(r *http.Request) (operator.Caller, bool) {
	c, ok := r.Context().Value(callerKey{}).(operator.Caller)
	return c, ok
}

// operatorActor names the admin caller of r (the operator, the
// workload, or "admin" for the break-glass token).
func operatorActor(r *http.Request) audit.Actor {
	if c, ok := callerFrom(r); ok {
		return c.Actor
	}
	return audit.Actor{User: "anonymous"}
}

// errAdminTokenOff: the break-glass token was presented to a server
// started with --admin-token=off.
var errAdminTokenOff = errors.New("the admin token is turned off on this server (--admin-token=off); sign in with rampart login")

// errQuarantined: a workload under quarantine called the admin API.
var errQuarantined = errors.New("the workload is quarantined")

// errWrongAdminToken: a bearer token that is neither the admin token nor
// a JWT.
var errWrongAdminToken = errors.New("missing or wrong admin token")

// authenticate finds who calls the admin API, in this order: the
// break-glass admin token (a Bearer token equal to it, compared in
// constant time), an operator's DPoP-bound access token, a workload's
// SVID (TLS client certificate) that a workload operator pattern
// matches. Nothing presented is operator.ErrNoSuchToken.
func (s *Server) authenticate(r *http.Request) (operator.Caller, error) {
	scheme, tok, ok := dpop.Authorization(r.Header)
	if ok && scheme == dpop.SchemeBearer {
		sum := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(sum[:], s.adminTokenHash[:]) == 1 {
			if s.cfg.AdminTokenOff {
				return operator.Caller{}, errAdminTokenOff
			}
			return operator.BreakGlass(), nil
		}
		if strings.Count(tok, ".") != 2 {
			return operator.Caller{}, errWrongAdminToken // not a JWT either
		}
	}
	if ok {
		return s.operatorAuth.Token(r)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		raw := make([][]byte, len(r.TLS.PeerCertificates))
		for i, c := range r.TLS.PeerCertificates {
			raw[i] = c.Raw
		}
		id, err := s.verifyPeer(raw)
		if err != nil {
			return operator.Caller{}, err
		}
		// A quarantined workload holds nothing: neither a workload
		// operator's roles nor an admin entry's.
		if s.quarantine.Holds(id) {
			return operator.Caller{}, fmt.Errorf("%w: %s", errQuarantined, id)
		}
		return s.operatorAuth.Workload(r.Context(), id)
	}
	return operator.Caller{}, operator.ErrNoSuchToken
}

// admin requires a caller holding permission p (any caller, if p is
// empty). Each use of the break-glass token is an audit entry of its own
// (admin.break_glass), which the default rule admin-token-used alerts on.
func (s *Server) admin(p permission.Permission, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r)
		_, _, tokenSent := dpop.Authorization(r.Header)
		if err != nil {
			s.metrics.adminAuthFailures.Inc()
			action := "admin.auth"
			if errors.Is(err, errAdminTokenOff) {
				action = "admin.break_glass"
			}
			e := s.entry(r, action, audit.OutcomeDenied, err.Error(), "method", r.Method, "path", r.URL.Path, "permission", p)
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && !tokenSent {
				// A workload: named by its SVID when the chain verified
				// (one holding no role is still that workload).
				refusedCertActor(e, r.TLS.PeerCertificates[0], err)
			}
			s.recordRefusal(r.Context(), e, r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `DPoP realm="rampart-admin", algs="ES256 EdDSA", Bearer realm="rampart-admin"`)
			const need = "admin calls need an operator token (rampart login), a workload SVID granted a role, or the break-glass admin token"
			var msg string
			switch {
			case errors.Is(err, errAdminTokenOff):
				msg = err.Error()
			case errors.Is(err, operator.ErrNoSuchToken):
				msg = need
			case errors.Is(err, errWrongAdminToken):
				msg = "wrong admin token; " + need
			case errors.Is(err, operator.ErrProof), errors.Is(err, operator.ErrNotBound):
				msg = "an operator token is sent as Authorization: DPoP with a DPoP proof made by its key; " + need
			case errors.Is(err, errQuarantined):
				msg = "this workload is quarantined"
			case r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && !tokenSent:
				msg = "this SVID holds no role; " + need
			default:
				msg = "not an operator who may act now (unknown, disabled, locked, no second factor, or the token expired or was revoked); " + need
			}
			api.WriteProblem(w, http.StatusUnauthorized, msg)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
		if p != "" && !c.Allows(p) {
			s.refused(r, "admin.forbidden", "holds no role with permission "+string(p), "method", r.Method, "path", r.URL.Path,
				"permission", p, "roles", rolesOf(c))
			api.WriteProblem(w, http.StatusForbidden, "your roles ("+rolesOf(c)+") do not hold "+string(p))
			return
		}
		if c.Kind == operator.KindBreakGlass {
			s.event(r, "admin.break_glass", "method", r.Method, "path", r.URL.Path, "permission", p)
		}
		h(w, r)
	}
}

func rolesOf(c operator.Caller) string {
	names := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		names[i] = r.Role
		if len(r.Services) > 0 {
			names[i] += "[" + strings.Join(r.Services, ",") + "]"
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

// mayService says whether r's caller holds p for service, answering 403
// (and auditing the refusal) if not: for endpoints that act on one
// service, where a role may be limited to some (policy-author).
func (s *Server) mayService(w http.ResponseWriter, r *http.Request, p permission.Permission, service string) bool {
	c, ok := callerFrom(r)
	if ok && c.AllowsService(p, service) {
		return true
	}
	s.refused(r, "admin.forbidden", "holds "+string(p)+" only for other services", "method", r.Method, "path", r.URL.Path,
		"permission", p, "service", service, "roles", rolesOf(c))
	api.WriteProblem(w, http.StatusForbidden, "your roles ("+rolesOf(c)+") do not hold "+string(p)+" for "+service)
	return false
}

// operatorStore joins the store's OAuth users and its operator tables.
type operatorStore struct {
	store.Store
	store.OperatorStore
}

// verifyOperatorToken checks an access token of this server's
// authorization server (nil before Serve on port 0: nothing to verify).
func (s *Server) verifyOperatorToken(raw, audience string) (*accesstoken.Claims, error) {
	if s.oauth == nil {
		return nil, errors.New("the authorization server is not running yet")
	}
	return s.oauth.VerifyAccessToken(raw, audience)
}

// cliClient is the OAuth client "rampart login" signs in with: public
// (RFC 8252 native app), device authorization grant or loopback redirect
// with PKCE, refresh tokens (bound to the CLI's DPoP key), tokens for the
// admin API only.
func cliClient(now time.Time) store.OAuthClient {
	return store.OAuthClient{ID: operator.ClientID, Name: "Rampart CLI (rampart login)", AuthMethod: "none",
		RedirectURIs: []string{"http://127.0.0.1/callback", "http://[::1]/callback"},
		GrantTypes:   []string{"authorization_code", "refresh_token", oauth.GrantDeviceCode},
		Scopes:       []string{"openid", "profile"}, Audience: []string{operator.Audience}, CreatedAt: now}
}

// ensureCLIClient registers the CLI's client, or brings a registered one
// up to date (keeping an operator's decision to disable it).
func (s *Server) ensureCLIClient(ctx context.Context) error {
	want := cliClient(s.now())
	cur, err := s.store.GetOAuthClient(ctx, want.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = s.store.CreateOAuthClient(ctx, want)
		if errors.Is(err, store.ErrConflict) {
			return nil // another replica was first
		}
	case err == nil:
		want.Disabled, want.CreatedAt = cur.Disabled, cur.CreatedAt
		if !reflect.DeepEqual(cur, want) {
			err = s.store.UpdateOAuthClient(ctx, want)
		}
	}
	if err != nil {
		return fmt.Errorf("server: the CLI's OAuth client: %w", err)
	}
	return nil
}
