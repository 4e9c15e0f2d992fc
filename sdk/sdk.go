package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/upstream"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
	"github.com/rampartsec/rampart/sdk/decision"
)

// DefaultSocket is the Workload API socket of an agent running as root, used
// when neither WithSocket nor SPIFFE_ENDPOINT_SOCKET says otherwise. A
// process not running as root uses its own user's agent instead,
// $XDG_RUNTIME_DIR/rampart/workload.sock, when that socket exists.
const DefaultSocket = "/run/rampart/workload.sock"

// Option configures New.
type Option func(*options)

type options struct {
	socket       string
	agentUID     *uint32
	svids        x509svid.Source   // nil: the Workload API's
	bundles      x509bundle.Source // set with svids
	server       string
	cacheDir     string
	log          *slog.Logger
	sink         decision.Sink
	spoolDir     string
	stripHeaders []string
}

// WithSocket sets the agent's Workload API socket path.
func WithSocket(path string) Option { return func(o *options) { o.socket = path } }

// WithAgentUID sets the uid the agent runs as. Every connection to the
// Workload API socket is checked with SO_PEERCRED: one served by another
// uid is refused, so that a local user who manages to put a socket at that
// path cannot hand this service a fake identity and trust bundle. Without
// this option (or RAMPART_AGENT_UID), the expected uid is the owner of the
// socket's directory when that is root or this process's own uid; any
// other owner is refused.
func WithAgentUID(uid uint32) Option { return func(o *options) { o.agentUID = &uid } }

// WithX509Source takes this service's SVID from svids and the trust
// bundles from bundles instead of an agent's Workload API: New then opens
// no socket, and WithSocket and WithAgentUID have no effect. Both are
// asked at every TLS handshake, so a source that rotates (go-spiffe's
// workloadapi.X509Source, which satisfies both) rotates the service's
// certificate too; the SVID's SPIFFE ID must not change. A fixed
// *x509svid.SVID and *x509bundle.Bundle satisfy them, which is how a test
// runs a service without an agent (see package sdktest for a CA that makes
// them). Close does not close them: they belong to the caller.
func WithX509Source(svids x509svid.Source, bundles x509bundle.Source) Option {
	return func(o *options) { o.svids, o.bundles = svids, bundles }
}

// WithServer sets the Rampart server (host:port) to fetch the policy and
// revocations from.
func WithServer(addr string) Option { return func(o *options) { o.server = addr } }

// WithPolicyCache keeps the last policy in dir, so a restart while the
// server is down still enforces it. New creates dir 0700 and refuses one
// that another user owns or can write, or that lies under such a
// directory: whoever controls it could put a policy of their own there.
func WithPolicyCache(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithAuditSpool records every decision in the server's audit log, as the
// proxy does: entries wait in dir (created 0700) while the server is away
// and are delivered once. Needs WithServer (or RAMPART_SERVER). Like
// WithPolicyCache's, dir must be one only this process's user (and root)
// can change.
func WithAuditSpool(dir string) Option { return func(o *options) { o.spoolDir = dir } }

// WithStripHeaders names more request headers Middleware removes before the
// policy and the handler see them, besides the identity headers other
// proxies and platforms set, which it always removes (X-Spiffe-Id,
// X-Client-Cert, X-Remote-User, X-Forwarded-User... the list is in
// docs/dataplane.md): use it for a header your handlers read as proven. A
// name is matched in any case, with "_" read as "-"; a trailing "*" makes
// a prefix.
func WithStripHeaders(names ...string) Option {
	return func(o *options) { o.stripHeaders = append(o.stripHeaders, names...) }
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// DecisionEvent is one authorisation decision (see package decision).
type DecisionEvent = decision.Event

// DecisionSink receives every authorisation decision (see package
// decision; decision.SinkFunc makes one of a function).
type DecisionSink = decision.Sink

// WithDecisionSink sends decisions to s instead of the logger.
func WithDecisionSink(s DecisionSink) Option { return func(o *options) { o.sink = s } }

// Source is a service's identity and authorisation.
type Source struct {
	server  string            // control plane address ("" without one)
	svids   x509svid.Source   // this service's SVID, asked at every handshake
	bundles x509bundle.Source // the trust bundles
	closer  io.Closer         // the Workload API client; nil with WithX509Source
	id      spiffeid.ID
	guard   *authz.Guard
	revs    *mtls.Revocations
	// quarantine holds the identities the server quarantined; conns the
	// connections accepted through Listener, ended when their caller is.
	quarantine *mtls.Quarantine
	conns      *authz.Conns
	spool      *spool.Spool // nil unless WithAuditSpool
}

// New connects to the agent and waits for the first SVID (or, with
// WithX509Source, takes the SVID from the source given), then starts
// following the server's policy when one is configured.
func New(ctx context.Context, opts ...Option) (*Source, error) {
	o := options{server: os.Getenv("RAMPART_SERVER")}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.spoolDir != "" && o.server == "" {
		return nil, errors.New("sdk: WithAuditSpool needs WithServer (or RAMPART_SERVER): the spool delivers to the server")
	}
	if (o.svids == nil) != (o.bundles == nil) {
		return nil, errors.New("sdk: WithX509Source needs both an SVID source and a bundle source")
	}
	strip, err := authz.ParseStripHeaders(o.stripHeaders)
	if err != nil {
		return nil, fmt.Errorf("sdk: WithStripHeaders: %w", err)
	}
	// Directories another user controls are refused before anything
	// starts: a cached policy is enforced after a restart while the server
	// is down, and spooled entries reach the audit log as this service's.
	if o.cacheDir != "" && o.server != "" {
		if _, err := safedir.Make(o.cacheDir, "the policy cache directory (WithPolicyCache)", os.Geteuid(), 0o700); err != nil {
			return nil, fmt.Errorf("sdk: %w", err)
		}
	}
	if o.spoolDir != "" {
		if _, err := safedir.Make(o.spoolDir, "the audit spool directory (WithAuditSpool)", os.Geteuid(), 0o700); err != nil {
			return nil, fmt.Errorf("sdk: %w", err)
		}
	}
	s := &Source{server: o.server, svids: o.svids, bundles: o.bundles, revs: &mtls.Revocations{}}
	if s.svids == nil {
		src, err := workloadAPI(ctx, o)
		if err != nil {
			return nil, err
		}
		s.svids, s.bundles, s.closer = src, src, src
	}
	sv, err := s.svids.GetX509SVID()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if sv == nil || sv.ID.IsZero() {
		s.Close()
		return nil, errors.New("sdk: the X.509 source gave no SVID")
	}
	s.id = sv.ID
	s.quarantine = &mtls.Quarantine{Self: s.id}
	s.conns = authz.NewConns(s.quarantine)
	var sink decision.Sink = authz.LogSink{Log: o.log}
	if o.sink != nil {
		sink = o.sink
	}
	if o.spoolDir != "" {
		sp, shipping, err := authz.ShipDecisions(o.spoolDir, o.server, s.id.TrustDomain(), s.svids, s.bundles, sink, o.log, nil)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("sdk: %w", err)
		}
		s.spool, sink = sp, shipping
	}
	s.guard = authz.NewGuard(authz.GuardConfig{Service: s.id, Log: o.log, Sink: sink, Revocations: s.revs, Quarantine: s.quarantine, Bundles: s.bundles, StripHeaders: strip})
	if o.server != "" {
		sy := &authz.Syncer{ServerAddr: o.server, SVID: s.svids, Bundles: s.bundles, Guard: s.guard, Revocations: s.revs, Quarantine: s.quarantine, CacheDir: o.cacheDir, Log: o.log}
		if err := sy.Start(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// workloadAPI connects to the agent's Workload API and waits for the first
// SVID. The socket is SPIFFE_ENDPOINT_SOCKET, WithSocket or the default,
// and is trusted only when served by the agent's uid (WithAgentUID,
// RAMPART_AGENT_UID, or the owner of its directory).
func workloadAPI(ctx context.Context, o options) (*workloadapi.X509Source, error) {
	socket := o.socket
	if socket == "" {
		socket = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if socket == "" {
		socket = endpoint.ClientPath(os.Geteuid(), os.Getenv)
	}
	uid := o.agentUID
	if uid == nil {
		var err error
		if uid, err = endpoint.ParseUID(os.Getenv("RAMPART_AGENT_UID")); err != nil {
			return nil, fmt.Errorf("sdk: RAMPART_AGENT_UID: %w", err)
		}
	}
	wopts, err := endpoint.ClientOptions(ctx, socket, uid)
	if err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(wopts...))
	if err != nil {
		return nil, fmt.Errorf("sdk: Workload API at %s: %w", socket, err)
	}
	return src, nil
}

// ID is this service's SPIFFE ID.
func (s *Source) ID() spiffeid.ID { return s.id }

// Close stops following the Workload API and the audit spool (what it holds
// is delivered after the next start).
func (s *Source) Close() error {
	if s.spool != nil {
		s.spool.Close()
	}
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// SetPolicy installs a policy from its YAML source, replacing any other
// (use it when no server distributes policies).
func (s *Source) SetPolicy(yaml []byte) error {
	p, err := policy.Parse(yaml)
	if err != nil {
		return fmt.Errorf("sdk: %w", err)
	}
	if p.Service != s.id {
		return fmt.Errorf("sdk: the policy protects %s, but this service is %s", p.Service, s.id)
	}
	eng, err := policy.Compile(p)
	if err != nil {
		return fmt.Errorf("sdk: %w", err)
	}
	s.guard.SetPolicy(eng)
	return nil
}

// ServerTLSConfig requires a client SVID from this trust domain, not
// revoked, not quarantined.
func (s *Source) ServerTLSConfig() *tls.Config {
	return mtls.ServerConfig(mtls.Options{SVID: s.svids, Bundles: s.bundles, Authorize: mtls.AuthorizeTrustDomains(), Revocations: s.revs, Quarantine: s.quarantine})
}

// ClientTLSConfig refuses any server but the one presenting server's SVID,
// and refuses it while it (or this service) is quarantined.
func (s *Source) ClientTLSConfig(server spiffeid.ID) *tls.Config {
	return mtls.ClientConfig(mtls.Options{SVID: s.svids, Bundles: s.bundles, Authorize: tlsconfig.AuthorizeID(server), Revocations: s.revs, Quarantine: s.quarantine})
}

// Listener returns a TLS listener over inner (with ServerTLSConfig) for
// http.Server.Serve. Its connections are tracked by their verified caller,
// so that when the server quarantines a caller (or this service), what it
// has open ends at once: HTTP/2 streams, keep-alive connections, upgraded
// tunnels. A server started with ServeTLS and ServerTLSConfig still
// refuses a quarantined caller's new connections and requests
// (Middleware), but cannot end the ones already open.
func (s *Source) Listener(inner net.Listener) net.Listener {
	return s.conns.Listener(inner, s.ServerTLSConfig())
}

// ErrQuarantined is the error (matched with errors.Is) of a call refused
// because the server it calls, or this service, is quarantined.
var ErrQuarantined = mtls.ErrQuarantined

// ClientOption configures HTTPClient.
type ClientOption func(*clientOptions)

type clientOptions struct {
	exchangeClientID string
	limits           ClientLimits
}

// ClientLimits bound the connections an HTTPClient opens to its server, so
// that a server that slows down is not also flooded with new connections
// (each a TLS handshake) by the requests waiting for it. Zero fields take
// the defaults named.
type ClientLimits struct {
	// MaxConns bounds the open connections (default 1024). Over HTTP/1.1
	// it bounds the requests in flight; an HTTP/2 connection carries many.
	MaxConns int
	// MaxPending bounds the requests waiting for a connection (default
	// 1024); beyond it a request fails at once with ErrOverloaded.
	MaxPending int
	// QueueTimeout is how long a request waits for a connection (default
	// 1 s) before it fails with ErrOverloaded.
	QueueTimeout time.Duration
	// MaxDialing bounds the connections being opened at once (default 16).
	MaxDialing int
	// DialRate bounds new connections a second after a burst of
	// MaxDialing (default 64; negative: no bound).
	DialRate float64
	// MaxIdle bounds the idle connections kept (default 64).
	MaxIdle int
	// IdleTimeout closes idle connections (default 90 s).
	IdleTimeout time.Duration
}

// ErrOverloaded is the error (matched with errors.Is) of a request an
// HTTPClient did not send because every connection to the server stayed
// busy (ClientLimits): it may be retried later.
var ErrOverloaded = upstream.ErrOverloaded

// WithClientLimits bounds the client's connections (see ClientLimits).
func WithClientLimits(l ClientLimits) ClientOption {
	return func(o *clientOptions) { o.limits = l }
}

func (l ClientLimits) upstream() (upstream.Limits, error) {
	u := upstream.Limits{MaxConns: l.MaxConns, MaxPending: l.MaxPending, QueueTimeout: l.QueueTimeout, MaxDialing: l.MaxDialing,
		DialRate: l.DialRate, MaxIdle: l.MaxIdle, IdleTimeout: l.IdleTimeout}
	switch {
	case u.DialRate == 0:
		u.DialRate = upstream.DefaultDialRate
	case u.DialRate < 0:
		u.DialRate = 0
	}
	if u.MaxIdle == 0 {
		u.MaxIdle = 64
		if u.MaxConns > 0 && u.MaxConns < 64 {
			u.MaxIdle = u.MaxConns
		}
	}
	u = u.WithDefaults()
	if err := u.Validate(); err != nil {
		return u, fmt.Errorf("sdk: ClientLimits: %w", err)
	}
	return u, nil
}

// WithTokenExchange makes the client exchange the user token on each
// request (Authorization: Bearer or DPoP, as received from the caller) for
// one addressed to the server it calls (RFC 8693), with act naming this
// service: the callee then decides on the user's rights, and sees who acts
// for them. clientID is this service's OAuth client (registered with
// tls_client_auth and its SPIFFE ID, --audience the callee). Needs a
// server (WithServer or RAMPART_SERVER).
func WithTokenExchange(clientID string) ClientOption {
	return func(o *clientOptions) { o.exchangeClientID = clientID }
}

// HTTPClient calls the service whose SPIFFE ID is server over mTLS. It
// resumes TLS sessions with the server, and keeps to ClientLimits: a
// request that finds every connection busy waits for one, and fails with
// ErrOverloaded when the wait is too long.
func (s *Source) HTTPClient(server spiffeid.ID, opts ...ClientOption) *http.Client {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	l, err := o.limits.upstream()
	if err != nil {
		return &http.Client{Transport: roundTripErr{err}}
	}
	dialer := &mtls.Dialer{Config: s.ClientTLSConfig(server), Net: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
	t := upstream.Transport(l, true, func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second) // the connection and its handshake
		defer cancel()
		return dialer.DialContext(ctx, network, addr)
	}, nil)
	t.ForceAttemptHTTP2 = true
	var rt http.RoundTripper = upstream.Bound(t, l, nil, nil)
	rt = quarantineCheck{q: s.quarantine, server: server, next: rt, idle: t}
	if o.exchangeClientID != "" {
		if s.server == "" {
			rt = roundTripErr{errors.New("sdk: WithTokenExchange needs a server (WithServer or RAMPART_SERVER)")}
		} else {
			rt = authz.NewExchanger(s.server, o.exchangeClientID, s.id.TrustDomain(), s.svids, s.bundles).RoundTripper(server.String(), rt)
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: rt}
}

// quarantineCheck refuses every call while the server or this service is
// quarantined, even over a connection pooled from before (those are let
// go: the server's side ends them too).
type quarantineCheck struct {
	q      *mtls.Quarantine
	server spiffeid.ID
	next   http.RoundTripper
	idle   interface{ CloseIdleConnections() }
}

func (c quarantineCheck) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.q.Blocks(c.server) {
		if r.Body != nil {
			r.Body.Close()
		}
		c.idle.CloseIdleConnections()
		return nil, fmt.Errorf("sdk: call to %s refused: %w", c.server, ErrQuarantined)
	}
	return c.next.RoundTrip(r)
}

type roundTripErr struct{ err error }

func (e roundTripErr) RoundTrip(*http.Request) (*http.Response, error) { return nil, e.err }

// Middleware authorises each request with the policy before next sees it.
func (s *Source) Middleware(next http.Handler) http.Handler { return s.guard.Middleware(next) }

// CallerID returns the verified caller of a request that passed Middleware.
func CallerID(ctx context.Context) (spiffeid.ID, bool) { return authz.CallerID(ctx) }
