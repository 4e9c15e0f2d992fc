package authz

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/sdk/decision"
)

// Header names the guard sets for the app (and strips from callers).
const (
	HeaderCaller = "X-Rampart-Caller"
	HeaderXFCC   = "X-Forwarded-Client-Cert"
	HeaderUser   = "X-Rampart-User"
)

// LogSink writes decisions as structured log lines.
type LogSink struct{ Log *slog.Logger }

// Decision implements decision.Sink.
func (s LogSink) Decision(ctx context.Context, e decision.Event) {
	lvl := slog.LevelInfo
	if !e.Allowed || e.DryRun {
		lvl = slog.LevelWarn
	}
	if !s.Log.Enabled(ctx, lvl) {
		return
	}
	s.Log.LogAttrs(ctx, lvl, "decision", slog.String("event", "authz.decision"), slog.String("caller", e.Caller),
		slog.String("target", e.Target), slog.String("method", e.Method), slog.String("path", e.Path),
		slog.String("rule", e.Rule), slog.String("policy_version", e.Version), slog.Bool("allowed", e.Allowed),
		slog.Bool("dry_run_denied", e.DryRun), slog.String("reason", e.Reason), slog.String("remote", e.Remote),
		slog.String("user", e.User), slog.String("act", e.Act), slog.Duration("latency", e.Latency))
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	Service  spiffeid.ID // the protected service (our own SPIFFE ID)
	Log      *slog.Logger
	Sink     decision.Sink
	Registry *prometheus.Registry // nil: no metrics
	// Revocations, if set, is checked on every request, not only at the
	// handshake: a connection opened before a revocation is cut at its
	// next request.
	Revocations *mtls.Revocations
	// Quarantine, if set, is checked on every request and connection: a
	// quarantined caller, or any caller while this service is itself
	// quarantined, is refused and its connection closed.
	Quarantine *mtls.Quarantine
	// Bundles, if set, is checked on every request from a caller of
	// another trust domain: once the federation with its trust domain
	// ends (the bundle is gone), a connection opened while it lasted is
	// cut at its next request.
	Bundles x509bundle.Source
	// StripHeaders are request headers removed besides the built-in
	// identity headers (ParseStripHeaders; nil: none).
	StripHeaders *HeaderNames
	Now          func() time.Time // nil: time.Now
}

// Guard authorises inbound calls with the current policy.
type Guard struct {
	cfg       GuardConfig
	tokens    *Tokens
	engine    atomic.Pointer[policy.Engine]
	decisions *prometheus.CounterVec
	outcomes  map[string]prometheus.Counter // decisions by outcome, looked up once
	latency   prometheus.Histogram
}

// NewGuard returns a guard with no policy: everything is denied until
// SetPolicy installs one.
func NewGuard(cfg GuardConfig) *Guard {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Sink == nil {
		cfg.Sink = LogSink{Log: cfg.Log}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Guard{cfg: cfg, tokens: newTokens(cfg.Service.String()),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_authz_decisions_total", Help: "Authorisation decisions, by outcome (allow, deny, dry_run_deny, bad_request, shed: refused for overload before judging).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rampart_authz_decision_duration_seconds", Help: "Time to decide one request.",
			Buckets: []float64{1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3},
		}),
	}
	g.outcomes = map[string]prometheus.Counter{}
	for _, o := range []string{"allow", "deny", "dry_run_deny", "bad_request", "shed"} {
		g.outcomes[o] = g.decisions.WithLabelValues(o)
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(g.decisions, g.latency)
	}
	return g
}

// Tokens returns the guard's user token verifier (kept current by the
// Syncer).
func (g *Guard) Tokens() *Tokens { return g.tokens }

// SetPolicy installs a compiled policy; nil removes it (default deny). In a
// program built without CEL (policy.CEL false), a policy with conditions
// decides more strictly than it says, which is logged as an error.
func (g *Guard) SetPolicy(e *policy.Engine) {
	if e != nil && !policy.CEL && e.Conditions() > 0 {
		g.cfg.Log.Error("this program was built without CEL (-tags rampart_omit_cel): the policy's allow rules with a when condition never match, its deny rules with one always do",
			"service", e.Service().String(), "policy_version", e.Version(), "conditions", e.Conditions())
	}
	g.engine.Store(e)
}

// Policy returns the installed policy, or nil.
func (g *Guard) Policy() *policy.Engine { return g.engine.Load() }

type callerKey struct{}

// CallerID returns the verified caller identity the guard put in ctx.
func CallerID(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(callerKey{}).(spiffeid.ID)
	return id, ok
}

// Refusal is a request the guard refused: the answer to send instead of
// forwarding it.
type Refusal struct {
	Status          int
	Detail          string
	WWWAuthenticate string // "" unless a token was refused
	RetryAfter      string // seconds; "" unless refused for overload (503)
	// Close: the connection must not carry another request (its client
	// certificate expired or was revoked).
	Close bool
}

// Write answers with the refusal as an RFC 9457 problem.
func (rf *Refusal) Write(w http.ResponseWriter) {
	if rf.WWWAuthenticate != "" {
		w.Header().Set("WWW-Authenticate", rf.WWWAuthenticate)
	}
	if rf.RetryAfter != "" {
		w.Header().Set("Retry-After", rf.RetryAfter)
	}
	if rf.Close {
		w.Header().Set("Connection", "close") // HTTP/2: net/http sends GOAWAY
	}
	WriteProblem(w, rf.Status, rf.Detail)
}

// Middleware authorises each request before next sees it.
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, rf := g.Check(r)
		if rf != nil {
			rf.Write(w)
			return
		}
		if g.PeerStale(r.TLS.PeerCertificates[0]) {
			w.Header().Set("Connection", "close") // HTTP/2: net/http sends GOAWAY
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, peer)))
	})
}

// PeerStale reports whether a connection's client certificate is past
// three quarters of its life (mtls.RecycleAt). Agents rotate SVIDs at
// 40-50% of theirs, so the client holds a newer one: the answer asks it to
// reconnect with it (Connection: close), before the old one expires on a
// connection kept alive for long and requests start to be refused. The
// reconnection is a full handshake: a session ticket for a certificate
// this old is declined (mtls.ServerConfig).
func (g *Guard) PeerStale(leaf *x509.Certificate) bool {
	return g.cfg.Now().After(mtls.RecycleAt(leaf))
}

// Check authorises r, which arrived over the verified TLS connection in
// r.TLS, and records the decision. An allowed request is rewritten for the
// app: caller-supplied identity headers removed, the verified ones added,
// the path replaced by its normalised form (exactly what was judged). A
// refused one is left as it was and a Refusal says what to answer. The
// proxy's HTTP/1.1 path and Middleware share it, so both decide alike.
func (g *Guard) Check(r *http.Request) (spiffeid.ID, *Refusal) {
	peer, err := mtls.PeerID(r.TLS)
	if err != nil {
		peer = spiffeid.ID{}
	}
	return peer, g.CheckPeer(r, peer)
}

// CheckPeer is Check for a request whose connection's verified caller is
// already known (the zero ID: none), so a connection carrying many
// requests derives it from its certificate once. peer must be the SPIFFE
// ID of r.TLS's verified leaf.
func (g *Guard) CheckPeer(r *http.Request, peer spiffeid.ID) *Refusal {
	start := time.Now()
	ev := decision.Event{Time: start, Target: g.cfg.Service.String(), Method: r.Method, Remote: r.RemoteAddr}
	if peer.IsZero() || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		ev.Reason = "no verified client certificate"
		g.finish(r.Context(), &ev, start, "bad_request")
		return &Refusal{Status: http.StatusUnauthorized, Detail: "a client SVID is required"}
	}
	ev.Caller = peer.String()
	// The handshake checked the certificate when the connection opened;
	// keep-alive connections outlive that moment.
	leaf := r.TLS.PeerCertificates[0]
	if now := g.cfg.Now(); now.After(leaf.NotAfter) {
		ev.Reason = "client SVID expired on an open connection"
		g.finish(r.Context(), &ev, start, "deny")
		return &Refusal{Status: http.StatusUnauthorized, Close: true,
			Detail: "the client SVID expired at " + leaf.NotAfter.UTC().Format(time.RFC3339) + ": reconnect with the current one"}
	}
	if g.cfg.Revocations.RevokedChain(r.TLS.PeerCertificates) != nil {
		ev.Reason = "client SVID revoked"
		g.finish(r.Context(), &ev, start, "deny")
		return &Refusal{Status: http.StatusUnauthorized, Close: true, Detail: "the client SVID has been revoked"}
	}
	if g.cfg.Bundles != nil && peer.TrustDomain() != g.cfg.Service.TrustDomain() {
		if _, err := g.cfg.Bundles.GetX509BundleForTrustDomain(peer.TrustDomain()); err != nil {
			ev.Reason = "caller's trust domain no longer federated"
			g.finish(r.Context(), &ev, start, "deny")
			return &Refusal{Status: http.StatusUnauthorized, Close: true, Detail: "the trust domain " + peer.TrustDomain().Name() + " is not trusted here"}
		}
	}
	if g.cfg.Quarantine.Blocks(peer) {
		ev.Reason = g.quarantineReason(peer)
		g.finish(r.Context(), &ev, start, "deny")
		return &Refusal{Status: http.StatusForbidden, Close: true, Detail: "denied: quarantined"}
	}
	if !methodOK(r.Method) {
		ev.Reason = "method not in upper case"
		g.finish(r.Context(), &ev, start, "bad_request")
		return &Refusal{Status: http.StatusBadRequest, Detail: "method " + strconv.Quote(r.Method) + " refused: methods must be upper case"}
	}
	g.sanitizeHeaders(r.Header)
	path, err := policy.NormalizePath(r.URL.EscapedPath())
	if err != nil {
		ev.Path, ev.Reason = r.URL.EscapedPath(), err.Error()
		g.finish(r.Context(), &ev, start, "bad_request")
		return &Refusal{Status: http.StatusBadRequest, Detail: "ambiguous request path refused: " + err.Error()}
	}
	ev.Path = path
	var user map[string]any
	claims, scheme, err := g.tokens.FromRequest(r, r.TLS.PeerCertificates[0])
	if err != nil {
		ev.Reason = "access token refused: " + err.Error()
		g.finish(r.Context(), &ev, start, "bad_request")
		code := "invalid_token"
		if errors.Is(err, dpop.ErrInvalid) {
			code = "invalid_dpop_proof"
		}
		return &Refusal{Status: http.StatusUnauthorized, Detail: "access token refused: " + err.Error(),
			WWWAuthenticate: scheme + ` error="` + code + `", algs="ES256 ES384 EdDSA RS256 PS256"`}
	}
	if claims != nil {
		user = userClaims(claims)
		if claims.Act != nil {
			ev.Act = claims.Act.Subject
		}
		if isUserToken(claims) {
			ev.User = claims.Subject
			// The app reads the verified user from here, never from
			// the caller's own headers (stripped above).
			r.Header.Set(HeaderUser, claims.Subject)
		}
	}
	eng := g.engine.Load()
	if eng == nil {
		ev.Reason = "no policy for this service"
		g.finish(r.Context(), &ev, start, "deny")
		return &Refusal{Status: http.StatusForbidden, Detail: "denied: no policy allows calls to " + g.cfg.Service.String()}
	}
	d := eng.Decide(&policy.Request{Caller: peer, Method: r.Method, Path: path, Headers: r.Header, User: user})
	ev.Rule, ev.Version, ev.Allowed, ev.DryRun = d.Rule, d.Version, d.Allowed, d.DryRunDenied
	outcome := "allow"
	switch {
	case !d.Allowed:
		outcome = "deny"
	case d.DryRunDenied:
		outcome = "dry_run_deny"
	}
	g.finish(r.Context(), &ev, start, outcome)
	if !d.Allowed {
		return &Refusal{Status: http.StatusForbidden, Detail: "denied by policy version " + d.Version}
	}
	// Forward exactly what was judged.
	r.URL.RawPath = path
	r.URL.Path = decodedPath(path)
	r.Header.Set(HeaderCaller, peer.String())
	r.Header.Set(HeaderXFCC, "By="+g.cfg.Service.String()+";URI="+peer.String())
	return nil
}

// Shed records a request the proxy refused for overload before judging it
// (admission control: 503 without the policy). It is a refusal like any
// other, in the audit log with its reason, so a flood of sheds is counted
// into aggregates, never lost; no path is recorded (none was judged), so
// a caller's sheds are one kind per interval. peer: the connection's
// verified caller (the zero ID: none).
func (g *Guard) Shed(r *http.Request, peer spiffeid.ID, reason string) {
	start := time.Now()
	ev := decision.Event{Time: start, Target: g.cfg.Service.String(), Method: r.Method, Remote: r.RemoteAddr, Reason: reason}
	if !peer.IsZero() {
		ev.Caller = peer.String()
	}
	g.finish(r.Context(), &ev, start, "shed")
}

// AllowConn authorises a raw TCP connection by identity only.
func (g *Guard) AllowConn(ctx context.Context, peer spiffeid.ID, remote string) bool {
	start := time.Now()
	ev := decision.Event{Time: start, Caller: peer.String(), Target: g.cfg.Service.String(), Remote: remote}
	if g.cfg.Quarantine.Blocks(peer) {
		ev.Reason = g.quarantineReason(peer)
		g.finish(ctx, &ev, start, "deny")
		return false
	}
	eng := g.engine.Load()
	if eng == nil {
		ev.Reason = "no policy for this service"
		g.finish(ctx, &ev, start, "deny")
		return false
	}
	d := eng.Decide(&policy.Request{Caller: peer})
	ev.Rule, ev.Version, ev.Allowed, ev.DryRun = d.Rule, d.Version, d.Allowed, d.DryRunDenied
	outcome := "allow"
	if !d.Allowed {
		outcome = "deny"
	}
	g.finish(ctx, &ev, start, outcome)
	return d.Allowed
}

// WatchPeer returns a context for a connection that outlives requests (an
// upgraded tunnel, a raw TCP connection): it ends with ctx, when the
// caller's certificate expires, or when it (or a CA of its chain, leaf
// first) is revoked, and then records a deny decision saying which.
// cancel releases it.
func (g *Guard) WatchPeer(ctx context.Context, peer spiffeid.ID, chain []*x509.Certificate, remote string) (context.Context, context.CancelFunc) {
	leaf := chain[0]
	wctx, cancel := context.WithDeadline(ctx, leaf.NotAfter)
	go func() {
		for {
			changed := g.cfg.Revocations.Changed()
			if g.cfg.Revocations.RevokedChain(chain) != nil {
				g.endConn(ctx, peer, remote, "client SVID revoked: open connection closed")
				cancel()
				return
			}
			select {
			case <-changed:
			case <-wctx.Done():
				if ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
					g.endConn(ctx, peer, remote, "client SVID expired: open connection closed")
				}
				return
			}
		}
	}()
	return wctx, cancel
}

func (g *Guard) quarantineReason(peer spiffeid.ID) string {
	if g.cfg.Quarantine.SelfHeld() {
		return "this service is quarantined"
	}
	return "caller " + peer.String() + " is quarantined"
}

// Quarantine returns the guard's quarantine (nil: none).
func (g *Guard) Quarantine() *mtls.Quarantine { return g.cfg.Quarantine }

func (g *Guard) endConn(ctx context.Context, peer spiffeid.ID, remote, reason string) {
	start := time.Now()
	ev := decision.Event{Time: start, Caller: peer.String(), Target: g.cfg.Service.String(), Remote: remote, Reason: reason}
	g.finish(context.WithoutCancel(ctx), &ev, start, "deny")
}

func (g *Guard) finish(ctx context.Context, ev *decision.Event, start time.Time, outcome string) {
	ev.Latency = time.Since(start)
	c, ok := g.outcomes[outcome]
	if !ok {
		c = g.decisions.WithLabelValues(outcome)
	}
	c.Inc()
	g.latency.Observe(ev.Latency.Seconds())
	// Recording never depends on the request: a caller that cancels or
	// resets its stream must not choose what goes unrecorded (issue 27).
	g.cfg.Sink.Decision(context.WithoutCancel(ctx), *ev)
}

// sanitizeHeaders makes the request's headers what the app will be given,
// before the policy sees them, so a condition never judges a header the app
// will not get, nor misses one it will:
//
//   - Hop-by-hop and forwarding headers go (StripHopByHop), as every proxy
//     drops them on the way; had Connection kept "X-Rampart-Caller", the
//     next hop would drop the verified identity set below.
//   - Identity headers (X-Rampart-*, X-Forwarded-Client-Cert): only the
//     guard sets them, after verification.
//   - Identity headers other proxies and platforms set, which apps read as
//     proven (X-Spiffe-Id, X-Client-Cert, X-Remote-User...: identityHeaders),
//     and those the operator named (GuardConfig.StripHeaders).
//   - Names with "_": CGI-style servers (PHP, Rack, WSGI) map
//     X_Rampart_Caller and X-Rampart-Caller to the same variable. Dropped,
//     as nginx does by default (underscores_in_headers off).
//   - Method and URL overrides (X-HTTP-Method-Override, X-Original-URL...):
//     frameworks honour them after the policy judged the request line.
func (g *Guard) sanitizeHeaders(h http.Header) {
	StripHopByHop(h)
	for name := range h {
		// Canonical as parsers leave them, but not assumed: CanonicalMIMEHeaderKey
		// returns name itself, unallocated, when it already is.
		c := textproto.CanonicalMIMEHeaderKey(name)
		if IsIdentityHeader(c) || strings.IndexByte(c, '_') >= 0 || overrideHeaders[c] ||
			identityHeaders.Match(c) || g.cfg.StripHeaders.Match(c) {
			delete(h, name)
		}
	}
}

// overrideHeaders tell common frameworks to route a request as another
// method or path than its request line says (Rails, Laravel, Symfony,
// Express method-override, IIS URL Rewrite...).
var overrideHeaders = map[string]bool{
	"X-Http-Method-Override": true, "X-Http-Method": true, "X-Method-Override": true,
	"X-Original-Url": true, "X-Rewrite-Url": true, "X-Original-Method": true,
}

// methodOK reports whether a request method is a token in upper case:
// methods are case-sensitive (RFC 9110 9.1), but many frameworks upper-case
// them before routing, so "delete" would escape a rule about DELETE.
func methodOK(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; 'a' <= c && c <= 'z' {
			return false
		}
	}
	return true
}

// decodedPath turns a normalised escaped path into url.URL.Path form. The
// normaliser leaves only valid escapes of reserved characters, none of them "/".
func decodedPath(escaped string) string {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return escaped
	}
	return p
}

// WriteProblem answers with an RFC 9457 problem details body.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(ProblemJSON(status, detail))
}

// ProblemJSON is the RFC 9457 problem details body WriteProblem sends.
func ProblemJSON(status int, detail string) []byte {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{"about:blank", http.StatusText(status), status, detail})
	return append(b, '\n')
}
