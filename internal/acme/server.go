package acme

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
)

// Defaults.
const (
	DefaultCertTTL           = 24 * time.Hour
	DefaultValidationTimeout = 10 * time.Second
	DefaultMaxValidations    = 64
	DefaultEABTTL            = 7 * 24 * time.Hour
	// orderTTL is how long an order and its authorizations may stay
	// pending.
	orderTTL = 24 * time.Hour
	// PathPrefix is where the ACME endpoints live; the directory is
	// PathPrefix + "directory".
	PathPrefix = "/acme/"
)

// Issuer signs TLS server certificates (identity.CA).
type Issuer interface {
	SignTLS(pub crypto.PublicKey, req identity.TLSCert) ([]*x509.Certificate, error)
}

// Sealer seals secrets at rest (keywrap.Wrapper).
type Sealer interface {
	Seal(id string, secret []byte) ([]byte, error)
	Open(id string, sealed []byte) ([]byte, error)
}

// Store is what the ACME server keeps: its own tables, and the shared
// nonce key beside the CA keys.
type Store interface {
	store.ACMEStore
	keyStore
}

// Config configures the ACME server. Zero values take the defaults.
type Config struct {
	Store  Store
	CA     Issuer
	Sealer Sealer
	// Replicated is true when other replicas share the store: spent
	// nonces are then recorded in it (decision 0038).
	Replicated bool
	// EABOptional lets accounts register without an external account
	// binding (the default requires one).
	EABOptional bool
	// AllowedNames are the server's name patterns (names.go); empty: the
	// EAB keys' patterns alone decide.
	AllowedNames []string
	// DeniedNames are the server's own names and addresses, never issued.
	DeniedNames []string
	// CertTTL is the lifetime of issued certificates (DefaultCertTTL).
	CertTTL time.Duration
	// HTTPPort and TLSPort are where http-01 and tls-alpn-01 are
	// validated (80 and 443; other ports for tests and internal
	// networks).
	HTTPPort, TLSPort int
	// Resolver is the DNS server (host:port) that answers the lookups of
	// every validation; empty: the system's.
	Resolver string
	// ValidationTimeout bounds one challenge validation.
	ValidationTimeout time.Duration
	// MaxValidations bounds the validations in flight; past it a
	// challenge response gets rateLimited.
	MaxValidations int

	// Record appends audit entries; Refused records a refusal an
	// attacker could repeat at will (aggregated by the caller).
	Record  func(context.Context, ...*audit.Entry)
	Refused func(ctx context.Context, e *audit.Entry, remote string)
	// Event records an operator's action (the admin endpoints, api.go),
	// naming the caller the request proved.
	Event func(r *http.Request, action string, kv ...any)
	// Changed is called after a revocation, so the caller syncs the
	// revocation list at once.
	Changed    func(context.Context)
	Registerer prometheus.Registerer
	Now        func() time.Time
	Log        *slog.Logger
}

// Server is the ACME server (RFC 8555, RFC 8737, RFC 8738, RFC 9773).
type Server struct {
	cfg       Config
	st        Store
	nonces    *nonces
	validator *validator
	server    []pattern
	denied    []pattern
	metrics   *metrics
	slots     chan struct{} // validations in flight
	inflight  sync.WaitGroup
	attempts  sync.Map // authorization ID -> challenge type being validated here
	keys      keyCache
}

// keyCache keeps account keys parsed: a key is a pure function of its
// stored JWK, and parsing one costs more than verifying a signature.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*jose.JSONWebKey
}

const maxCachedKeys = 4096

func (c *keyCache) parse(jwk []byte) (*jose.JSONWebKey, error) {
	c.mu.Lock()
	k, ok := c.m[string(jwk)]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k = &jose.JSONWebKey{}
	if err := k.UnmarshalJSON(jwk); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = make(map[string]*jose.JSONWebKey)
	}
	c.m[string(jwk)] = k
	c.mu.Unlock()
	return k, nil
}

// New returns an ACME server. In replicated mode it loads (or creates)
// the nonce key the replicas share.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.CA == nil || cfg.Sealer == nil {
		return nil, errors.New("acme: a store, a CA and a sealer are required")
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
	if cfg.Refused == nil {
		cfg.Refused = func(ctx context.Context, e *audit.Entry, _ string) { cfg.Record(ctx, e) }
	}
	if cfg.Event == nil {
		cfg.Event = func(*http.Request, string, ...any) {}
	}
	if cfg.Changed == nil {
		cfg.Changed = func(context.Context) {}
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.CertTTL == 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if cfg.CertTTL < time.Minute {
		return nil, fmt.Errorf("acme: certificate lifetime %v: at least 1m", cfg.CertTTL)
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 80
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = 443
	}
	for _, p := range []int{cfg.HTTPPort, cfg.TLSPort} {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("acme: challenge port %d: want 1 to 65535", p)
		}
	}
	if cfg.Resolver != "" {
		if _, _, err := net.SplitHostPort(cfg.Resolver); err != nil {
			return nil, fmt.Errorf("acme: DNS resolver %q: want host:port (%v)", cfg.Resolver, err)
		}
	}
	if cfg.ValidationTimeout == 0 {
		cfg.ValidationTimeout = DefaultValidationTimeout
	}
	if cfg.MaxValidations == 0 {
		cfg.MaxValidations = DefaultMaxValidations
	}
	server, err := ParsePatterns(cfg.AllowedNames)
	if err != nil {
		return nil, fmt.Errorf("%w (in the server's allowed names)", err)
	}
	denied, err := ParsePatterns(cfg.DeniedNames)
	if err != nil {
		return nil, fmt.Errorf("%w (in the server's own names)", err)
	}
	s := &Server{cfg: cfg, st: cfg.Store, server: server, denied: denied, slots: make(chan struct{}, cfg.MaxValidations)}
	s.nonces = &nonces{now: cfg.Now}
	if cfg.Replicated {
		if s.nonces.key, err = loadNonceKey(ctx, cfg.Store, cfg.Sealer, cfg.Now()); err != nil {
			return nil, err
		}
		s.nonces.book = storeBook{st: cfg.Store}
	} else {
		s.nonces.key = make([]byte, 32)
		rand.Read(s.nonces.key)
		mb := newMemoryBook(cfg.Now)
		s.nonces.book, s.nonces.rotate = mb, mb.rotateIfFull
	}
	s.validator = newValidator(cfg)
	if s.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Route is one endpoint, for the server's route table.
type Route struct {
	Pattern string
	Handler http.Handler
	Doc     string
}

// Routes returns the protocol's endpoints (RFC 8555 §7.1), for the
// server's route table. Every POST authenticates itself (a JWS); the GETs
// are public. A GET of a resource read by POST-as-GET gets 405.
func (s *Server) Routes() []Route {
	r := func(pattern string, h func(http.ResponseWriter, *http.Request) *Problem, doc string) Route {
		return Route{Pattern: pattern, Handler: s.handle(h), Doc: doc}
	}
	return []Route{
		r("GET "+PathPrefix+"directory", s.handleDirectory, "the ACME directory (RFC 8555 §7.1.1)"),
		r("HEAD "+PathPrefix+"new-nonce", s.handleNewNonce, "a fresh nonce (RFC 8555 §7.2)"),
		r("GET "+PathPrefix+"new-nonce", s.handleNewNonce, "a fresh nonce (RFC 8555 §7.2)"),
		r("POST "+PathPrefix+"new-account", s.handleNewAccount, "register an account with an external account binding (RFC 8555 §7.3)"),
		r("POST "+PathPrefix+"new-order", s.handleNewOrder, "order a certificate (RFC 8555 §7.4; replaces: RFC 9773 §5)"),
		r("POST "+PathPrefix+"revoke-cert", s.handleRevokeCert, "revoke a certificate, signed by its account or its key (RFC 8555 §7.6)"),
		r("POST "+PathPrefix+"key-change", s.handleKeyChange, "roll an account over to a new key (RFC 8555 §7.3.5)"),
		r("GET "+PathPrefix+"renewal-info/{certid}", s.handleRenewalInfo, "when to renew a certificate (RFC 9773 §4)"),
		r("POST "+PathPrefix+"acct/{id}", s.handleAccount, "read, update or deactivate an account (RFC 8555 §7.3.2, §7.3.6)"),
		r("POST "+PathPrefix+"acct/{id}/orders", s.handleAccountOrders, "an account's orders (RFC 8555 §7.1.2.1)"),
		r("POST "+PathPrefix+"order/{id}", s.handleOrder, "read an order (POST-as-GET)"),
		r("POST "+PathPrefix+"order/{id}/finalize", s.handleFinalize, "finalize an order with a CSR; the certificate (RFC 8555 §7.4)"),
		r("POST "+PathPrefix+"authz/{id}", s.handleAuthz, "read or deactivate an authorization (RFC 8555 §7.5)"),
		r("POST "+PathPrefix+"chall/{id}/{type}", s.handleChallenge, "read a challenge, or answer it: http-01, tls-alpn-01 (RFC 8737), dns-01 (RFC 8555 §7.5.1)"),
		r("POST "+PathPrefix+"cert/{serial}", s.handleCert, "download a certificate chain (POST-as-GET, RFC 8555 §7.4.2)"),
	}
}

// Register adds the endpoints to mux, each wrapped by wrap (for tests and
// tools that serve the ACME server alone).
func (s *Server) Register(mux *http.ServeMux, wrap func(pattern string, h http.HandlerFunc) http.Handler) {
	for _, rt := range s.Routes() {
		mux.Handle(rt.Pattern, wrap(rt.Pattern, rt.Handler.ServeHTTP))
	}
}

// handle sets what every ACME response carries (a fresh nonce, the
// directory link, no caching) and writes a handler's problem.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) *Problem) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", s.nonces.issue())
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Add("Link", link(s.url(r, "directory"), "index"))
		if p := h(w, r); p != nil {
			s.metrics.refused.WithLabelValues(p.kind()).Inc()
			writeProblem(w, p)
		}
	}
}

func link(url, rel string) string { return "<" + url + `>;rel="` + rel + `"` }

// base is the scheme and authority the client reached us at: resource
// URLs are built from it, as Boulder and Pebble do, so every name and
// replica of the server hands out URLs that lead back to it. The JWS url
// check (authenticate) compares against the same.
func (s *Server) base(r *http.Request) string {
	return "https://" + r.Host
}

func (s *Server) url(r *http.Request, path string) string {
	return s.base(r) + PathPrefix + path
}

func writeJSON(w http.ResponseWriter, status int, v any) *Problem {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return nil
}

// Directory (RFC 8555 §7.1.1).
type directory struct {
	NewNonce    string `json:"newNonce"`
	NewAccount  string `json:"newAccount"`
	NewOrder    string `json:"newOrder"`
	RevokeCert  string `json:"revokeCert"`
	KeyChange   string `json:"keyChange"`
	RenewalInfo string `json:"renewalInfo"`
	Meta        struct {
		ExternalAccountRequired bool              `json:"externalAccountRequired"`
		Profiles                map[string]string `json:"profiles"`
	} `json:"meta"`
}

// Profiles (draft-ietf-acme-profiles): what an order may ask for.
const (
	ProfileTLSServer       = "tls-server"
	ProfileTLSServerClient = "tls-server-client"
)

func (s *Server) handleDirectory(w http.ResponseWriter, r *http.Request) *Problem {
	if !validHost(r.Host) {
		return malformed("request Host %q is not a host name or address", r.Host)
	}
	d := directory{NewNonce: s.url(r, "new-nonce"), NewAccount: s.url(r, "new-account"), NewOrder: s.url(r, "new-order"),
		RevokeCert: s.url(r, "revoke-cert"), KeyChange: s.url(r, "key-change"), RenewalInfo: s.url(r, "renewal-info")}
	d.Meta.ExternalAccountRequired = !s.cfg.EABOptional
	d.Meta.Profiles = map[string]string{
		ProfileTLSServer:       fmt.Sprintf("TLS server certificate: DNS and IP names, server authentication only, %v", s.cfg.CertTTL),
		ProfileTLSServerClient: fmt.Sprintf("TLS server certificate that may also authenticate as a client (only if the account's EAB key allows it), %v", s.cfg.CertTTL),
	}
	return writeJSON(w, http.StatusOK, d)
}

// validHost accepts a Host header that is a host name or address with an
// optional port: it is echoed into every URL.
func validHost(h string) bool {
	if h == "" || len(h) > 300 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

func (s *Server) handleNewNonce(w http.ResponseWriter, r *http.Request) *Problem {
	// RFC 8555 §7.2: 200 to HEAD, 204 to GET.
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

// request is an authenticated ACME request.
type request struct {
	j       *jws
	payload []byte
	acct    *store.ACMEAccount // set for kid requests
	key     *jose.JSONWebKey   // the key that signed it
}

// auth says how a request must be signed.
type auth int

const (
	byKID    auth = iota // an account's key (kid)
	byJWK                // the embedded key (jwk): new-account
	byEither             // revoke-cert: an account's or the certificate's
)

// authenticate reads and checks a POST: content type, JWS form, url,
// nonce, then the signature (with the account's key for kid) and finally
// spends the nonce. A refusal is audited (aggregated).
func (s *Server) authenticate(r *http.Request, how auth) (*request, *Problem) {
	req, claimed, p := s.authenticate1(r, how)
	if p != nil {
		e := s.entry(r, "acme.request", audit.OutcomeDenied, p.Detail, "", "path", r.URL.Path, "problem", p.kind())
		if claimed != "" {
			e.Details["claimed_account"] = claimed
		}
		s.cfg.Refused(r.Context(), e, r.RemoteAddr)
	}
	return req, p
}

func (s *Server) authenticate1(r *http.Request, how auth) (_ *request, claimed string, _ *Problem) {
	if !validHost(r.Host) {
		return nil, "", malformed("request Host %q is not a host name or address", r.Host)
	}
	body, p := readBody(r)
	if p != nil {
		return nil, "", p
	}
	j, p := parseJWS(body)
	if p != nil {
		return nil, "", p
	}
	// RFC 8555 §6.4: the url header must be the URL the request went to.
	if want := s.base(r) + r.URL.RequestURI(); j.url != want {
		return nil, "", unauthorized("the JWS url %q is not this request's URL %q", j.url, want)
	}
	id, exp, p := s.nonces.check(j.nonce)
	if p != nil {
		return nil, "", p
	}
	req := &request{j: j}
	switch {
	case j.kid != "" && how == byJWK:
		return nil, "", malformed("this request is signed with the new account's key: use jwk, not kid")
	case j.jwk != nil && how == byKID:
		return nil, "", malformed("this request is signed by an account: use kid (the account URL), not jwk")
	case j.kid != "":
		acctID, ok := strings.CutPrefix(j.kid, s.url(r, "acct/"))
		if !ok || acctID == "" || strings.Contains(acctID, "/") {
			return nil, "", problem(http.StatusBadRequest, errAccountDoesNotExist, "kid %q is not an account URL of this server", j.kid)
		}
		claimed = acctID
		a, err := s.st.GetACMEAccount(r.Context(), acctID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, claimed, problem(http.StatusBadRequest, errAccountDoesNotExist, "no account %s", acctID)
		}
		if err != nil {
			return nil, claimed, internal("cannot read the account")
		}
		if a.Status != store.ACMEValid {
			return nil, claimed, unauthorized("account %s is %s", a.ID, a.Status)
		}
		key, err := s.keys.parse(a.JWK)
		if err != nil {
			return nil, claimed, internal("unreadable account key")
		}
		req.acct, req.key = &a, key
	default:
		req.key = j.jwk
	}
	payload, p := j.verify(req.key)
	if p != nil {
		return nil, claimed, p
	}
	req.payload = payload
	if p := s.nonces.spend(r.Context(), id, exp); p != nil {
		return nil, claimed, p
	}
	return req, "", nil
}

// postAsGet reports whether the request is a POST-as-GET (RFC 8555 §6.3:
// an empty payload).
func (req *request) postAsGet() bool { return len(req.payload) == 0 }

// entry is an audit entry for an ACME action. acct is the account that
// made (and proved) the request; empty: anonymous.
func (s *Server) entry(r *http.Request, action, outcome, reason, acct string, kv ...string) *audit.Entry {
	e := &audit.Entry{V: audit.SchemaVersion, Time: s.cfg.Now(), Action: action, Outcome: outcome, Reason: reason,
		Source: "server", Actor: audit.Actor{User: "anonymous"}, Details: map[string]string{}}
	if r != nil {
		e.Details["remote"] = r.RemoteAddr
	}
	if acct != "" {
		e.Actor.User = "acme:" + acct
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "target" {
			e.Target = kv[i+1]
			continue
		}
		e.Details[kv[i]] = kv[i+1]
	}
	return e
}

func (s *Server) record(ctx context.Context, e *audit.Entry) { s.cfg.Record(ctx, e) }

// newID returns a random URL-safe ID.
func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Wait waits for the challenge validations in flight.
func (s *Server) Wait() { s.inflight.Wait() }

// Run prunes what expired and refreshes the certificate gauges every 30
// s until ctx ends, then waits for the validations in flight.
func (s *Server) Run(ctx context.Context) error {
	defer s.Wait()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		s.Maintain(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// pruneAfter is how long finished orders and expired certificates are
// kept (the audit log keeps them for good).
const pruneAfter = 30 * 24 * time.Hour

// Maintain prunes the store and refreshes the certificate gauges once.
func (s *Server) Maintain(ctx context.Context) {
	now := s.cfg.Now()
	if err := s.st.PruneACME(ctx, now, now.Add(-pruneAfter)); err != nil {
		s.cfg.Log.Warn("acme: pruning failed", "err", err)
	}
	valid, near, err := s.st.CountACMECerts(ctx, now)
	if err != nil {
		s.cfg.Log.Warn("acme: counting certificates failed", "err", err)
		return
	}
	s.metrics.certsValid.Set(float64(valid))
	s.metrics.certsNearExpiry.Set(float64(near))
}
