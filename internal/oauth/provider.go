package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/ratelimit"
	"github.com/rampartsec/rampart/internal/store"
)

// Store is what the provider needs from the store.
type Store interface {
	keyStore
	GetOAuthClient(ctx context.Context, id string) (store.OAuthClient, error)
	GetOAuthUser(ctx context.Context, username string) (store.OAuthUser, error)
	UpdateOAuthUser(ctx context.Context, u store.OAuthUser) error
	LoginFailed(ctx context.Context, username string, now time.Time, b store.Backoff) (store.OAuthUser, error)
	LoginSucceeded(ctx context.Context, username string) error
	UseTOTPStep(ctx context.Context, username string, step int64) error
	PutOAuthGrant(ctx context.Context, g store.OAuthGrant) error
	UseOAuthGrant(ctx context.Context, kind string, hash []byte, now time.Time) (store.OAuthGrant, error)
	PutOAuthFamily(ctx context.Context, f store.OAuthFamily) error
	RevokeOAuthFamilies(ctx context.Context, sel store.FamilySelector, r store.TokenRevocation) ([]string, error)
	RevokeOAuthToken(ctx context.Context, r store.TokenRevocation) error
	ListOAuthRevocations(ctx context.Context, now time.Time) ([]store.TokenRevocation, error)
	UseDPoPProof(ctx context.Context, jkt, jti string, expires, now time.Time, quota int) error
}

// Defaults.
const (
	DefaultAccessTokenTTL  = 10 * time.Minute
	DefaultIDTokenTTL      = 10 * time.Minute
	DefaultRefreshTokenTTL = 24 * time.Hour
	DefaultCodeTTL         = time.Minute
	DefaultKeyTTL          = 30 * 24 * time.Hour
	DefaultSessionTTL      = 8 * time.Hour
	// DefaultMaxFailures consecutive failed logins cost nothing more;
	// from then on the account backs off DefaultBackoffBase, doubling
	// with each further failure up to DefaultBackoffMax.
	DefaultMaxFailures = 5
	DefaultBackoffBase = 30 * time.Second
	DefaultBackoffMax  = 15 * time.Minute
	// DefaultCSRFTTL is how long a login form may be submitted.
	DefaultCSRFTTL = 30 * time.Minute
	// DefaultHashWait is how long a login waits for a hashing slot.
	DefaultHashWait = 2 * time.Second
	// DPoP: server nonces change every DefaultDPoPNonceTTL; one key may
	// have DefaultDPoPKeyQuota proofs accepted in about two minutes.
	DefaultDPoPNonceTTL = time.Minute
	DefaultDPoPKeyQuota = 200
	// DefaultMaxActDepth is how many services may act in turn for one
	// user (nested act claims, RFC 8693 §4.1) before exchange refuses.
	DefaultMaxActDepth = 4
)

// Config configures a Provider.
type Config struct {
	// Issuer is the issuer identifier, an https URL with no query or
	// fragment; the endpoints live under it.
	Issuer  string
	Store   Store
	Wrapper *keywrap.Wrapper // seals signing keys and TOTP secrets
	// Algorithm of new signing keys: ES256 (default) or EdDSA.
	Algorithm jose.SignatureAlgorithm

	AccessTokenTTL  time.Duration
	IDTokenTTL      time.Duration
	RefreshTokenTTL time.Duration // absolute lifetime of a refresh token family
	CodeTTL         time.Duration
	KeyTTL          time.Duration // lifetime of a signing key
	SessionTTL      time.Duration // login session (single sign-on) lifetime
	// MaxFailures consecutive failed logins are free; the next backs the
	// account off for BackoffBase, doubling with each further failure
	// (once the back-off is over) up to BackoffMax. While an account
	// backs off its logins are refused unchecked and not counted.
	MaxFailures int
	BackoffBase time.Duration
	BackoffMax  time.Duration
	CSRFTTL     time.Duration // how long a login form may be submitted
	// HashConcurrency bounds the argon2id runs (64 MiB each) at once;
	// default the number of CPUs. HashQueue logins may wait up to
	// HashWait for one (default 4 per slot, at least 8); beyond, 503.
	HashConcurrency int
	HashQueue       int
	HashWait        time.Duration
	// DPoPNonceTTL is how long a server nonce for DPoP proofs is issued
	// (it is accepted for one period more); whole seconds, default a minute.
	DPoPNonceTTL time.Duration
	// DPoPKeyQuota is how many live DPoP proofs one key may have recorded
	// (proofs live about two minutes); default DefaultDPoPKeyQuota.
	DPoPKeyQuota int
	// RateLimits bound each endpoint per source address and in all;
	// zero fields take DefaultRateLimits.
	RateLimits RateLimits
	// Registerer receives the rate limiters' metrics; nil: none.
	Registerer prometheus.Registerer
	// MaxActDepth bounds the act chain of exchanged tokens (hops of
	// services acting for the user); default DefaultMaxActDepth.
	MaxActDepth int
	// DeviceInterval is the polling interval device clients are given
	// (RFC 8628 §3.2); whole seconds, default DeviceInterval.
	DeviceInterval time.Duration

	// PeerCertificate returns the client's certificate if it sent one and
	// the TLS layer verified it (an SVID of the trust domain, not
	// revoked); nil otherwise. Default: the first verified chain's leaf.
	PeerCertificate func(r *http.Request) *x509.Certificate

	// Quarantined says whether a workload (a client's SPIFFE ID) is
	// quarantined (Respond): such a client is refused every grant, token
	// exchange included. nil: none is.
	Quarantined func(spiffeID string) bool

	// Record appends audit entries durably.
	Record func(ctx context.Context, es ...*audit.Entry)
	// Refusals counts refused requests (what anyone can produce at
	// will): the first of a kind (actor, action, target, reason, and an
	// anonymous caller's address or /64) in an interval is recorded at
	// once, its repeats as one entry with details.count. Share the
	// server's, whose audit keeper records what is being counted before
	// each checkpoint; nil: the provider keeps its own, recorded by
	// Maintain and when Run ends.
	Refusals *audit.Refusals
	// Changed is called after a revocation so that waiting proxies learn
	// of it at once.
	Changed func(ctx context.Context)
	Now     func() time.Time
	Log     *slog.Logger
}

// Provider is the authorization server.
type Provider struct {
	cfg  Config
	keys *keyring
	// sessionKey MACs login session cookies and CSRF tokens.
	sessionKey []byte

	verifier *accesstoken.Verifier // any audience; caches verified tokens
	dpop     *dpop.Checker         // DPoP proofs at the token and userinfo endpoints
	hashing  *hashGate             // bounds concurrent argon2id runs
	limits   *limiters             // rate limits per endpoint
	// ownRefusals: cfg.Refusals is the provider's own, which Maintain
	// and Run record.
	ownRefusals bool

	mu      sync.RWMutex
	revoked map[string]struct{} // jti and sid values
}

// New loads (or, on first start, creates) the signing keys.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if !strings.HasPrefix(cfg.Issuer, "https://") || strings.ContainsAny(cfg.Issuer, "?#") {
		return nil, fmt.Errorf("oauth: issuer %q must be an https URL without query or fragment", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	if cfg.Store == nil || cfg.Wrapper == nil {
		return nil, errors.New("oauth: a store and a key wrapper are required")
	}
	// Zero means "not configured": the default. Negative is a mistake
	// that would otherwise issue tokens born expired or allow no logins.
	for name, d := range map[string]time.Duration{"access token TTL": cfg.AccessTokenTTL, "ID token TTL": cfg.IDTokenTTL,
		"refresh token TTL": cfg.RefreshTokenTTL, "code TTL": cfg.CodeTTL, "key TTL": cfg.KeyTTL, "session TTL": cfg.SessionTTL,
		"back-off base": cfg.BackoffBase, "back-off max": cfg.BackoffMax, "CSRF TTL": cfg.CSRFTTL, "hash wait": cfg.HashWait,
		"DPoP nonce TTL": cfg.DPoPNonceTTL, "device interval": cfg.DeviceInterval} {
		if d < 0 {
			return nil, fmt.Errorf("oauth: %s %v: must be positive (or zero for the default)", name, d)
		}
	}
	for name, n := range map[string]int{"max failures": cfg.MaxFailures, "max act depth": cfg.MaxActDepth,
		"hash concurrency": cfg.HashConcurrency, "hash queue": cfg.HashQueue, "DPoP key quota": cfg.DPoPKeyQuota} {
		if n < 0 {
			return nil, fmt.Errorf("oauth: %s %d: must be positive (or zero for the default)", name, n)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AccessTokenTTL, DefaultAccessTokenTTL)
	def(&cfg.IDTokenTTL, DefaultIDTokenTTL)
	def(&cfg.RefreshTokenTTL, DefaultRefreshTokenTTL)
	def(&cfg.CodeTTL, DefaultCodeTTL)
	def(&cfg.KeyTTL, DefaultKeyTTL)
	def(&cfg.SessionTTL, DefaultSessionTTL)
	def(&cfg.BackoffBase, DefaultBackoffBase)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.CSRFTTL, DefaultCSRFTTL)
	def(&cfg.HashWait, DefaultHashWait)
	def(&cfg.DPoPNonceTTL, DefaultDPoPNonceTTL)
	def(&cfg.DeviceInterval, DeviceInterval)
	if cfg.DeviceInterval%time.Second != 0 {
		return nil, fmt.Errorf("oauth: device interval %v: whole seconds", cfg.DeviceInterval)
	}
	if cfg.DPoPNonceTTL%time.Second != 0 {
		return nil, fmt.Errorf("oauth: DPoP nonce TTL %v: whole seconds", cfg.DPoPNonceTTL)
	}
	if cfg.DPoPKeyQuota == 0 {
		cfg.DPoPKeyQuota = DefaultDPoPKeyQuota
	}
	if cfg.MaxFailures == 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		return nil, fmt.Errorf("oauth: back-off max %v is shorter than its base %v", cfg.BackoffMax, cfg.BackoffBase)
	}
	if cfg.HashConcurrency == 0 {
		cfg.HashConcurrency = runtime.NumCPU()
	}
	if cfg.HashQueue == 0 {
		cfg.HashQueue = max(8, 4*cfg.HashConcurrency)
	}
	if cfg.MaxActDepth == 0 {
		cfg.MaxActDepth = DefaultMaxActDepth
	}
	switch cfg.Algorithm {
	case "":
		cfg.Algorithm = jose.ES256
	case jose.ES256, jose.EdDSA:
	default:
		return nil, fmt.Errorf("oauth: signing algorithm %q: want ES256 or EdDSA", cfg.Algorithm)
	}
	if cfg.KeyTTL < 12*cfg.AccessTokenTTL {
		return nil, fmt.Errorf("oauth: signing key TTL %v is too short for access tokens of %v", cfg.KeyTTL, cfg.AccessTokenTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Record == nil {
		cfg.Record = func(context.Context, ...*audit.Entry) {}
	}
	ownRefusals := cfg.Refusals == nil
	if ownRefusals {
		cfg.Refusals = audit.NewRefusals(cfg.Now, cfg.Record)
	}
	if cfg.PeerCertificate == nil {
		cfg.PeerCertificate = func(r *http.Request) *x509.Certificate {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				return nil
			}
			return r.TLS.VerifiedChains[0][0]
		}
	}
	if cfg.Changed == nil {
		cfg.Changed = func(context.Context) {}
	}
	p := &Provider{cfg: cfg, keys: &keyring{store: cfg.Store, wrap: cfg.Wrapper, alg: cfg.Algorithm, ttl: cfg.KeyTTL}, ownRefusals: ownRefusals}
	// No leeway: this is the issuer, whose own clock set exp and nbf. A
	// token past its exp buys nothing here (exchange, introspection,
	// userinfo, revocation), even while a distant verifier's skew
	// allowance would still take it.
	p.verifier = &accesstoken.Verifier{Keys: p.keys, Issuer: cfg.Issuer, Revoked: p.isRevoked, Now: cfg.Now, Leeway: 0}
	// Proofs at the token and userinfo endpoints carry this server's
	// nonce and are recorded in the store, so no replica takes a proof
	// another one accepted.
	p.dpop = &dpop.Checker{Now: cfg.Now, Nonce: p.dpopNonceOK,
		Replay: storeReplay{st: cfg.Store, quota: cfg.DPoPKeyQuota, now: cfg.Now}}
	p.hashing = newHashGate(cfg.HashConcurrency, cfg.HashQueue, cfg.HashWait)
	var metrics *ratelimit.Metrics
	if cfg.Registerer != nil {
		var err error
		if metrics, err = ratelimit.NewMetrics(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
	}
	var err error
	if p.limits, err = p.newLimiters(cfg.RateLimits, metrics); err != nil {
		return nil, err
	}
	if err := p.keys.maintain(ctx, cfg.Now()); err != nil {
		return nil, err
	}
	if p.sessionKey, err = loadSessionKey(ctx, cfg.Store, cfg.Wrapper, cfg.Now()); err != nil {
		return nil, err
	}
	if err := p.Reload(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// loadSessionKey reads the session MAC key, creating it on first start.
// Replicas sharing a database share it.
func loadSessionKey(ctx context.Context, s keyStore, w *keywrap.Wrapper, now time.Time) ([]byte, error) {
	const id = "oauth-session"
	for attempt := 0; attempt < 2; attempt++ {
		keys, err := s.ListCAKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
		for _, k := range keys {
			if k.Kind == store.KindOAuthSession {
				key, err := w.Open(id, k.WrappedKey)
				if err != nil {
					return nil, fmt.Errorf("oauth: session key: %w", err)
				}
				return key, nil
			}
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		sealed, err := w.Seal(id, key)
		if err != nil {
			return nil, err
		}
		err = s.PutCAKey(ctx, store.CAKey{ID: id, Kind: store.KindOAuthSession, State: store.StateActive, CertDER: []byte{},
			WrappedKey: sealed, NotBefore: now, NotAfter: now.AddDate(100, 0, 0), CreatedAt: now})
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("oauth: session key: %w", err)
		}
		// Another replica created it first: read theirs.
	}
	return nil, errors.New("oauth: session key: could not create or read")
}

// MaintainEvery is how often Run maintains the provider.
const MaintainEvery = 30 * time.Second

// Run calls Maintain every MaintainEvery until ctx is done; a failure is
// logged and retried at the next tick.
func (p *Provider) Run(ctx context.Context) error {
	t := time.NewTicker(MaintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.flushRefusals(context.WithoutCancel(ctx), true)
			return nil
		case <-t.C:
			if err := p.Maintain(ctx); err != nil {
				p.cfg.Log.Error("OAuth signing key maintenance failed", "err", err)
			}
		}
	}
}

// Maintain applies the signing key rotation schedule and audits the
// requests the rate limits refused since the last call; Run calls it
// periodically.
func (p *Provider) Maintain(ctx context.Context) error {
	p.limits.flush()
	p.flushRefusals(ctx, false)
	if n := p.hashing.busy.Swap(0); n > 0 {
		now := p.cfg.Now()
		p.cfg.Log.Warn("oauth: logins refused: every password hashing slot busy", "count", n)
		p.cfg.Record(ctx, &audit.Entry{V: audit.SchemaVersion, Time: now, Action: "oauth.login_busy", Outcome: audit.OutcomeDenied,
			Reason: fmt.Sprintf("%d logins refused with 503: every password hashing slot busy", n), Source: "oauth",
			Actor: audit.Actor{User: "anonymous"}, Details: map[string]string{"count": fmt.Sprint(n)}})
	}
	return p.keys.maintain(ctx, p.cfg.Now())
}

// Reload re-reads the signing keys and the revocation list from the store;
// replicas call it when the store's revision moves.
func (p *Provider) Reload(ctx context.Context) error {
	now := p.cfg.Now()
	if err := p.keys.reload(ctx, now); err != nil {
		return err
	}
	revs, err := p.cfg.Store.ListOAuthRevocations(ctx, now)
	if err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	m := make(map[string]struct{}, len(revs))
	for _, r := range revs {
		m[r.ID] = struct{}{}
	}
	p.mu.Lock()
	p.revoked = m
	p.mu.Unlock()
	return nil
}

func (p *Provider) isRevoked(id string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.revoked[id]
	return ok
}

// Issuer returns the issuer identifier.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// JWKS returns the published signing keys.
func (p *Provider) JWKS() jose.JSONWebKeySet { return p.keys.jwks() }

// Endpoint paths, under the issuer.
const (
	PathAuthorize  = "/oauth2/authorize"
	PathToken      = "/oauth2/token"
	PathJWKS       = "/oauth2/jwks"
	PathUserinfo   = "/oauth2/userinfo"
	PathIntrospect = "/oauth2/introspect"
	PathRevoke     = "/oauth2/revoke"
)

// Route is one of the provider's endpoints. Clients and users
// authenticate per request, as each endpoint's specification says.
type Route struct {
	Pattern string // "METHOD /path", as http.ServeMux takes it
	Handler http.Handler
	Doc     string
}

// Routes returns the provider's endpoints, for the server's route table.
// Everything that hashes a password, signs a token or writes to the store
// is rate limited per source address and in all.
func (p *Provider) Routes() []Route {
	limited := func(l *ratelimit.Limiter, h http.HandlerFunc, refuse func(http.ResponseWriter, *http.Request, ratelimit.Decision)) http.Handler {
		return l.Wrap(h, refuse)
	}
	return []Route{
		{"GET /.well-known/openid-configuration", http.HandlerFunc(p.handleDiscovery), "OpenID Connect discovery (OIDC Discovery 1.0)"},
		{"GET /.well-known/oauth-authorization-server", http.HandlerFunc(p.handleDiscovery), "authorization server metadata (RFC 8414)"},
		{"GET " + PathJWKS, http.HandlerFunc(p.handleJWKS), "the token signing keys (RFC 7517)"},
		{"GET " + PathAuthorize, http.HandlerFunc(p.handleAuthorize), "authorization endpoint: the login page (RFC 6749 §3.1, PKCE RFC 7636)"},
		{"POST " + PathAuthorize, limited(p.limits.login, p.handleAuthorize, p.limitPage), "authorization endpoint: the login form (password, TOTP)"},
		{"POST " + PathToken, limited(p.limits.token, p.handleToken, limitJSON), "token endpoint: code, refresh, client credentials, token exchange (RFC 6749, RFC 8693), DPoP (RFC 9449)"},
		{"GET " + PathUserinfo, limited(p.limits.userinfo, p.handleUserinfo, limitJSON), "UserInfo (OIDC Core §5.3)"},
		{"POST " + PathUserinfo, limited(p.limits.userinfo, p.handleUserinfo, limitJSON), "UserInfo (OIDC Core §5.3)"},
		{"POST " + PathIntrospect, limited(p.limits.introspect, p.handleIntrospect, limitJSON), "token introspection (RFC 7662)"},
		{"POST " + PathRevoke, limited(p.limits.revoke, p.handleRevoke, limitJSON), "token revocation (RFC 7009)"},
		{"POST " + PathDeviceAuthorization, limited(p.limits.token, p.handleDeviceAuthorization, limitJSON), "device authorization endpoint (RFC 8628 §3.1)"},
		{"GET " + PathDevice, http.HandlerFunc(p.handleDevice), "device verification page: enter the user code, sign in, approve (RFC 8628 §3.3)"},
		{"POST " + PathDevice, limited(p.limits.login, p.handleDevice, p.limitPage), "device verification form (or JSON with Accept: application/json): user code, password, TOTP, allow or deny"},
	}
}

// Register adds the provider's endpoints to mux (for tests and tools that
// serve the provider alone), each wrapped by wrap.
func (p *Provider) Register(mux *http.ServeMux, wrap func(pattern string, h http.HandlerFunc) http.Handler) {
	for _, r := range p.Routes() {
		mux.Handle(r.Pattern, wrap(r.Pattern, r.Handler.ServeHTTP))
	}
}

// Supported values, published in discovery and enforced.
var (
	grantTypes  = []string{"authorization_code", "client_credentials", "refresh_token", GrantTokenExchange, GrantDeviceCode}
	authMethods = []string{"none", "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"}
)

// GrantTokenExchange is the RFC 8693 grant type.
const GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	iss := p.cfg.Issuer
	algs := []string{string(jose.ES256), string(jose.EdDSA)}
	doc := map[string]any{
		"issuer":                                           iss,
		"authorization_endpoint":                           iss + PathAuthorize,
		"token_endpoint":                                   iss + PathToken,
		"jwks_uri":                                         iss + PathJWKS,
		"userinfo_endpoint":                                iss + PathUserinfo,
		"introspection_endpoint":                           iss + PathIntrospect,
		"revocation_endpoint":                              iss + PathRevoke,
		"device_authorization_endpoint":                    iss + PathDeviceAuthorization,
		"response_types_supported":                         []string{"code"},
		"response_modes_supported":                         []string{"query"},
		"grant_types_supported":                            grantTypes,
		"subject_types_supported":                          []string{"public"},
		"id_token_signing_alg_values_supported":            algs,
		"token_endpoint_auth_methods_supported":            authMethods,
		"token_endpoint_auth_signing_alg_values_supported": []string{"ES256", "ES384", "EdDSA", "RS256", "PS256"},
		"introspection_endpoint_auth_methods_supported":    authMethods[1:],
		"revocation_endpoint_auth_methods_supported":       authMethods,
		"code_challenge_methods_supported":                 []string{"S256"},
		"scopes_supported":                                 []string{"openid", "profile", "email", "groups", "offline_access"},
		"claims_supported":                                 []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "email", "groups", "sid"},
		"prompt_values_supported":                          []string{"none", "login", "consent"},
		"tls_client_certificate_bound_access_tokens":       true,
		"dpop_signing_alg_values_supported":                dpop.Algorithms,
		"authorization_response_iss_parameter_supported":   true,
		"claims_parameter_supported":                       false,
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  false,
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, doc)
}

func (p *Provider) handleJWKS(w http.ResponseWriter, r *http.Request) {
	// Successors are published a sixth of a key's life before they sign;
	// five minutes of caching is far inside that.
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, p.keys.jwks())
}

// Key implements accesstoken.KeySet over the provider's own keys.
func (k *keyring) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, p := range k.keys {
		if p.kid == kid {
			return p.pub, p.alg, true
		}
	}
	return nil, "", false
}

// Algorithms implements accesstoken.KeySet.
func (k *keyring) Algorithms() []jose.SignatureAlgorithm { return k.algs() }

// VerifyAccessToken checks a token this provider issued; audience may be
// empty to accept any.
func (p *Provider) VerifyAccessToken(raw, audience string) (*accesstoken.Claims, error) {
	c, err := p.verifier.Verify(raw)
	if err != nil {
		return nil, err
	}
	if audience != "" && !c.Audience.Contains(audience) {
		return nil, fmt.Errorf("%w: aud %v does not contain %q", accesstoken.ErrClaims, []string(c.Audience), audience)
	}
	return c, nil
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	// debug, if set, is the reason for the audit log when the client is
	// told less (fosite's WithDebug).
	debug string
	// revoked names the kind of credential the refusal found revoked
	// (access_token, refresh_token, code): the audit entry's
	// details.revoked_credential, which the revoked-credential-use rule
	// matches. Set only by the server's own checks, never from text.
	revoked string
}

// withRevoked marks e as the refusal of a revoked credential of kind.
func (e *oauthError) withRevoked(kind string) *oauthError {
	e.revoked = kind
	return e
}

// reason is what the audit log records of e.
func (e *oauthError) reason() string {
	if e.debug != "" {
		return e.Description + " (" + e.debug + ")"
	}
	return e.Description
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func errf(status int, code, format string, args ...any) *oauthError {
	return &oauthError{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

func writeOAuthError(w http.ResponseWriter, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		oe = errf(http.StatusInternalServerError, "server_error", "internal error")
	}
	if oe.Code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="rampart", error="invalid_client"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, oe.Status, oe)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// randomToken returns a 256-bit random value, base64url.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("oauth: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is how codes, refresh tokens and client secrets are stored.
func hashToken(v string) []byte {
	h := sha256.Sum256([]byte(v))
	return h[:]
}

// HashSecret returns the stored form of a client secret.
func HashSecret(secret string) []byte { return hashToken(secret) }

// NewSecret returns a new client secret: 256 random bits.
func NewSecret() string { return randomToken() }

// entry builds an audit entry for an OAuth event.
func (p *Provider) entry(r *http.Request, action, outcome, reason string, kv ...string) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: p.cfg.Now(), Action: action, Outcome: outcome, Reason: reason,
		Source: "oauth", Details: map[string]string{"remote": r.RemoteAddr}}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		switch kv[i] {
		case "user":
			e.Actor.User = kv[i+1]
		case "spiffe_id":
			e.Actor.SpiffeID = kv[i+1]
		case "target":
			e.Target = kv[i+1]
		}
		e.Details[kv[i]] = kv[i+1]
	}
	if e.Actor.User == "" && e.Actor.SpiffeID == "" {
		// An OAuth client acting for itself (client_id is only ever an
		// authenticated client's, or one read from a token this server
		// signed), or nobody known yet: what an unauthenticated caller
		// typed is claimed_client_id, never the actor.
		if id := e.Details["client_id"]; id != "" {
			e.Actor.User = "client:" + id
		} else {
			e.Actor.User = "anonymous"
		}
	}
	return e
}

// maxClaimedLen bounds what an unauthenticated caller's identifier takes
// in an audit entry or an error.
const maxClaimedLen = 64

// claimed returns an identifier an unauthenticated caller sent (a
// client_id, an assertion's subject) as it may be recorded: quoted, so
// control characters and quotes are escaped and it cannot pass for the
// server's own text, and clipped to maxClaimedLen bytes. It goes in a
// claimed_* detail or a reason, never in the actor.
func claimed(s string) string {
	if len(s) > maxClaimedLen {
		cut := maxClaimedLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

// record audits an OAuth event. A refusal (any outcome but success) is
// counted with its repeats (Config.Refusals): the first of its kind in
// an interval is recorded now, the rest as one entry with details.count,
// so a flood of bad requests is a bounded number of entries and every
// request is counted.
func (p *Provider) record(r *http.Request, action, outcome, reason string, kv ...string) {
	e := p.entry(r, action, outcome, reason, kv...)
	lvl := slog.LevelDebug
	if outcome != audit.OutcomeSuccess {
		lvl = slog.LevelWarn
	}
	p.cfg.Log.Log(r.Context(), lvl, "oauth", "event", action, "outcome", outcome, "reason", audit.Clip(reason))
	if outcome == audit.OutcomeSuccess {
		p.cfg.Record(r.Context(), e)
		return
	}
	if es := p.cfg.Refusals.Add(e, r.RemoteAddr); len(es) > 0 {
		p.cfg.Record(r.Context(), es...)
	}
}

// flushRefusals records the provider's own refusal counts of intervals
// that ended (all, if force); a shared aggregator is its owner's to flush.
func (p *Provider) flushRefusals(ctx context.Context, force bool) {
	if !p.ownRefusals {
		return
	}
	if es := p.cfg.Refusals.Flush(force); len(es) > 0 {
		p.cfg.Record(ctx, es...)
	}
}
