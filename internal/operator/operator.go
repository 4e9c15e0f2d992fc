package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/store"
)

// Audience is the audience of operator access tokens: the admin API. A
// token for any other audience (a service's, the userinfo endpoint's) is
// refused by the admin API, and an operator token is refused by services.
const Audience = "urn:rampart:admin-api"

// ClientID is the OAuth client "rampart login" signs in with: public
// (RFC 8252 native app), device authorization and loopback redirect with
// PKCE, tokens bound to a DPoP key.
const ClientID = "rampart-cli"

// Caller kinds.
const (
	KindBreakGlass = "break-glass"
	KindOperator   = "operator"
	KindWorkload   = "workload"
)

// Caller is an authenticated admin caller and what it holds.
type Caller struct {
	Kind string
	// Actor names the caller in audit entries: the operator's subject, or
	// the workload's SPIFFE ID, or "admin" for the break-glass token.
	Actor audit.Actor
	// Name is the person's display name (OAuth user's name).
	Name string
	// Session is the token's sid (its login's grant family) and JTI its
	// ID; ExpiresAt when the token ends; AMR how the login was proven.
	Session   string
	JTI       string
	ExpiresAt time.Time
	AMR       []string
	// Roles held; Via the operators they come from (for a workload, the
	// matching patterns).
	Roles []store.OperatorRole
	Via   []string
}

// BreakGlass is the caller of the admin token: every permission.
func BreakGlass() Caller {
	return Caller{Kind: KindBreakGlass, Actor: audit.Actor{User: "admin"}, Roles: []store.OperatorRole{{Role: string(permission.Admin)}}}
}

// Allows says whether the caller may use p for any service it holds p
// for (the route table's check; endpoints about one service then call
// AllowsService).
func (c Caller) Allows(p permission.Permission) bool {
	for _, r := range c.Roles {
		if permission.Role(r.Role).Allows(p) {
			return true
		}
	}
	return false
}

// AllowsService says whether the caller may use p for service (a SPIFFE
// ID): a role that holds p and is not limited, or is limited to patterns
// one of which matches.
func (c Caller) AllowsService(p permission.Permission, service string) bool {
	for _, r := range c.Roles {
		if !permission.Role(r.Role).Allows(p) {
			continue
		}
		if len(r.Services) == 0 {
			return true
		}
		for _, pat := range r.Services {
			if MatchID(pat, service) {
				return true
			}
		}
	}
	return false
}

// Permissions lists what the caller holds (for some service at least).
func (c Caller) Permissions() []permission.Permission {
	var out []permission.Permission
	for _, p := range permission.All {
		if c.Allows(p.Permission) {
			out = append(out, p.Permission)
		}
	}
	return out
}

// MatchID says whether SPIFFE ID id matches pattern: equal, or pattern
// ends in "/*" and id lies below it (as policies match callers).
func MatchID(pattern, id string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok && strings.HasSuffix(prefix, "/") {
		return len(id) > len(prefix) && strings.HasPrefix(id, prefix)
	}
	return id == pattern
}

// ValidatePattern checks a workload or service pattern: a SPIFFE ID of
// trust domain td, optionally ending in "/*". A bare trust domain with
// "/*" is refused: it would match every workload.
func ValidatePattern(pattern string, td spiffeid.TrustDomain) error {
	base, wild := strings.CutSuffix(pattern, "/*")
	id, err := spiffeid.FromString(base)
	if err != nil {
		return fmt.Errorf("operator: pattern %q: want a SPIFFE ID, optionally ending in /*: %w", pattern, err)
	}
	if id.TrustDomain() != td {
		return fmt.Errorf("operator: pattern %q: not of trust domain %s", pattern, td.Name())
	}
	if id.Path() == "" {
		what := "names the trust domain, no workload"
		if wild {
			what = "would match every workload of the trust domain"
		}
		return fmt.Errorf("operator: pattern %q %s; name a path", pattern, what)
	}
	if strings.Contains(id.Path(), "*") {
		return fmt.Errorf("operator: pattern %q: * only as the last segment", pattern)
	}
	return nil
}

// Errors of authentication. Each says why, for the audit log; the caller
// is told less.
var (
	ErrNoOperator  = errors.New("operator: not an operator")
	ErrDisabled    = errors.New("operator: disabled")
	ErrLocked      = errors.New("operator: the account is backing off after failed logins")
	ErrNoMFA       = errors.New("operator: the token's login had no second factor (amr lacks otp), which this operator needs")
	ErrNotBound    = errors.New("operator: the token is not bound to a DPoP key")
	ErrProof       = errors.New("operator: DPoP proof refused")
	ErrBadToken    = errors.New("operator: access token refused")
	ErrNoRoles     = errors.New("operator: holds no role")
	ErrNoSuchToken = errors.New("operator: no credential presented")
)

// Store is what the Authenticator reads.
type Store interface {
	GetOperator(ctx context.Context, name string) (store.Operator, error)
	ListOperators(ctx context.Context) ([]store.Operator, error)
	GetOAuthUser(ctx context.Context, username string) (store.OAuthUser, error)
	// FindEntries finds the admin entries of a workload's SPIFFE ID.
	FindEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// Authenticator authenticates operators and workloads for the admin API.
type Authenticator struct {
	Store Store
	// Verify checks an access token the authorization server issued
	// (signature, issuer, expiry, revocation) for audience Audience.
	Verify func(raw, audience string) (*accesstoken.Claims, error)
	// DPoP verifies and records proofs (its Replay should be shared by
	// replicas: NewStoreReplay).
	DPoP *dpop.Checker
	// ServesHost says whether a request's Host is one of the server's own
	// names (nil: any). A proof's htu names the request's Host, so a proof
	// made for another server (sent here with that server's Host) is
	// refused.
	ServesHost func(host string) bool
	Now        func() time.Time
}

// portIsOurs refuses a Host naming a port other than the one the request
// arrived on: a proof made for another service on the same host name (its
// htu naming that port) is not valid here. A Host without a port, or with
// the scheme's default, is what a load balancer in front forwards.
func portIsOurs(r *http.Request) error {
	_, port, err := net.SplitHostPort(r.Host)
	if err != nil || port == "443" || port == "80" && r.TLS == nil {
		return nil // no port: the scheme's default
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return nil
	}
	if _, lport, err := net.SplitHostPort(local.String()); err == nil && lport != port {
		return fmt.Errorf("the request is for port %s, this server listens on %s", port, lport)
	}
	return nil
}

// Token authenticates a request carrying an operator access token. It
// returns ErrNoSuchToken if the request carries no DPoP-scheme token.
func (a *Authenticator) Token(r *http.Request) (Caller, error) {
	scheme, raw, ok := dpop.Authorization(r.Header)
	if !ok {
		return Caller{}, ErrNoSuchToken
	}
	claims, err := a.Verify(raw, Audience)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	// RFC 9449 §7.1: a DPoP-bound token is presented with the DPoP
	// scheme and a proof; as a bearer token it is refused.
	if claims.Cnf == nil || claims.Cnf.JKT == "" {
		return Caller{}, ErrNotBound
	}
	if scheme != dpop.SchemeDPoP {
		return Caller{}, fmt.Errorf("%w: a DPoP-bound token sent as %s, without its proof", ErrProof, scheme)
	}
	if a.ServesHost != nil && !a.ServesHost(r.Host) {
		return Caller{}, fmt.Errorf("%w: the request is for host %q, not one of this server's names", ErrProof, r.Host)
	}
	if err := portIsOurs(r); err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrProof, err)
	}
	proof, err := a.DPoP.VerifyRequest(r, raw)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrProof, err)
	}
	if proof.JKT != claims.Cnf.JKT {
		return Caller{}, fmt.Errorf("%w: signed by key %s, the token is bound to %s", ErrProof, proof.JKT, claims.Cnf.JKT)
	}
	if err := a.DPoP.Use(r.Context(), proof); err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrProof, err)
	}
	c, err := a.Person(r.Context(), claims)
	if err != nil {
		return Caller{}, err
	}
	return c, nil
}

// Person checks that the subject of verified claims is an operator
// allowed in now.
func (a *Authenticator) Person(ctx context.Context, claims *accesstoken.Claims) (Caller, error) {
	// Only what "rampart login" obtained for a person: a token of another
	// client with this audience (a web app's, or a client_credentials
	// token of a client named like an operator) is none of an operator's.
	if claims.ClientID != ClientID || !claims.ForUser() {
		return Caller{}, fmt.Errorf("%w: a token of client %q for a %s, not of %s for a person", ErrBadToken, claims.ClientID, subjectKind(claims), ClientID)
	}
	if claims.Act != nil {
		// An exchanged token is some service acting for the person: the
		// admin API takes operators themselves only.
		return Caller{}, fmt.Errorf("%w: an exchanged token (act %s)", ErrBadToken, claims.Act.Subject)
	}
	op, err := a.Store.GetOperator(ctx, claims.Subject)
	if errors.Is(err, store.ErrNotFound) || err == nil && op.Kind != store.OperatorUser {
		return Caller{}, fmt.Errorf("%w: %q", ErrNoOperator, claims.Subject)
	}
	if err != nil {
		return Caller{}, err
	}
	if op.Disabled {
		return Caller{}, fmt.Errorf("%w: %s", ErrDisabled, op.Name)
	}
	u, err := a.Store.GetOAuthUser(ctx, claims.Subject)
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, fmt.Errorf("%w: %q has no user account", ErrNoOperator, claims.Subject)
	}
	if err != nil {
		return Caller{}, err
	}
	switch {
	case u.Disabled:
		return Caller{}, fmt.Errorf("%w: the user %s is disabled", ErrDisabled, u.Username)
	// A login back-off (u.LockedUntil) is not checked here: anyone who
	// knows a username can start one by failing logins, and it must
	// throttle password guessing, not end sessions already proven (red
	// team). Disabling the operator or the user ends them.
	case op.RequireMFA && !slices.Contains(claims.AMR, "otp"):
		return Caller{}, fmt.Errorf("%w: %s (amr %v)", ErrNoMFA, u.Username, claims.AMR)
	case len(op.Roles) == 0:
		return Caller{}, fmt.Errorf("%w: %s", ErrNoRoles, op.Name)
	}
	c := Caller{Kind: KindOperator, Actor: audit.Actor{User: op.Name}, Name: u.Name, Session: claims.SessionID, JTI: claims.ID,
		AMR: claims.AMR, Roles: op.Roles, Via: []string{op.Name}}
	if claims.Expiry != nil {
		c.ExpiresAt = claims.Expiry.Time()
	}
	return c, nil
}

func subjectKind(c *accesstoken.Claims) string {
	if c.ForUser() {
		return "person"
	}
	return "client"
}

// ViaEntry prefixes, in Caller.Via, the ID of an admin entry that lent a
// workload the admin role.
const ViaEntry = "entry:"

// Workload returns the roles that workload operators lend id: every
// enabled one whose pattern matches; and the admin role if id is the
// SPIFFE ID of an unexpired registration entry marked admin (SPIRE's
// admin entries: as a workload operator bound to exactly that ID with
// role admin). Both are read from the store on every call, so deleting
// the entry, its expiry, or clearing its admin flag ends the grant at the
// next request. ErrNoOperator if nothing matches.
func (a *Authenticator) Workload(ctx context.Context, id spiffeid.ID) (Caller, error) {
	ops, err := a.Store.ListOperators(ctx)
	if err != nil {
		return Caller{}, err
	}
	c := Caller{Kind: KindWorkload, Actor: audit.Actor{SpiffeID: id.String()}}
	for _, op := range ops {
		if op.Kind != store.OperatorWorkload || op.Disabled || !MatchID(op.Name, id.String()) {
			continue
		}
		c.Roles = append(c.Roles, op.Roles...)
		c.Via = append(c.Via, op.Name)
	}
	entries, err := a.Store.FindEntries(ctx, store.EntryFilter{SpiffeID: id.String()})
	if err != nil {
		return Caller{}, err
	}
	now := a.Now()
	for _, e := range entries {
		// The filter is the store's; the ID is compared again here, as
		// the grant rests on it.
		if !e.Admin || e.SpiffeID != id.String() || !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt) {
			continue
		}
		c.Roles = append(c.Roles, store.OperatorRole{Role: string(permission.Admin)})
		c.Via = append(c.Via, ViaEntry+e.ID)
	}
	if len(c.Roles) == 0 {
		return Caller{}, fmt.Errorf("%w: no enabled workload operator pattern nor unexpired admin entry matches %s", ErrNoOperator, id)
	}
	return c, nil
}

// DefaultProofQuota is how many live DPoP proofs (about two minutes'
// worth) one operator key may have recorded: some 15 admin calls a second
// sustained, for scripts; beyond, calls are refused until older proofs
// expire. Only holders of a valid token bound to the key get this far.
const DefaultProofQuota = 2000

// StoreReplay records DPoP proofs in the store, so no replica accepts a
// proof another one has seen.
type StoreReplay struct {
	Store interface {
		UseDPoPProof(ctx context.Context, jkt, jti string, expires, now time.Time, quota int) error
	}
	// Quota bounds one key's live proofs (0: DefaultProofQuota).
	Quota int
	Now   func() time.Time
}

// Use implements dpop.ReplayCache.
func (s StoreReplay) Use(ctx context.Context, jkt, jti string, until time.Time) error {
	q := s.Quota
	if q == 0 {
		q = DefaultProofQuota
	}
	// The admin API's proofs are kept apart from the token endpoint's.
	err := s.Store.UseDPoPProof(ctx, "admin:"+jkt, jti, until, s.Now(), q)
	switch {
	case errors.Is(err, store.ErrConflict):
		return dpop.ErrReplayed
	case errors.Is(err, store.ErrQuota):
		return dpop.ErrQuota
	}
	return err
}
