package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

// DefaultSocket is the Workload API socket of an agent running as root, used
// when neither WithSocket nor SPIFFE_ENDPOINT_SOCKET says otherwise. A
// process not running as root uses its own user's agent instead,
// $XDG_RUNTIME_DIR/rampart/workload.sock, when that socket exists.
const DefaultSocket = endpoint.SystemDir + "/" + endpoint.SocketName

// Option configures New.
type Option func(*options)

type options struct {
	socket   string
	agentUID *uint32
	server   string
	cacheDir string
	log      *slog.Logger
	sink     authz.Sink
	spoolDir string
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

// WithServer sets the Rampart server (host:port) to fetch the policy and
// revocations from.
func WithServer(addr string) Option { return func(o *options) { o.server = addr } }

// WithPolicyCache keeps the last policy in dir, so a restart while the
// server is down still enforces it.
func WithPolicyCache(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithAuditSpool records every decision in the server's audit log, as the
// proxy does: entries wait in dir (created 0700) while the server is away
// and are delivered once. Needs WithServer (or RAMPART_SERVER).
func WithAuditSpool(dir string) Option { return func(o *options) { o.spoolDir = dir } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// DecisionEvent is one authorisation decision.
type DecisionEvent = authz.Event

// DecisionSink receives every authorisation decision.
type DecisionSink interface {
	Decision(ctx context.Context, e DecisionEvent)
}

// WithDecisionSink sends decisions to s instead of the logger.
func WithDecisionSink(s DecisionSink) Option { return func(o *options) { o.sink = s } }

// Source is a service's identity and authorisation.
type Source struct {
	server string // control plane address ("" without one)
	x509   *workloadapi.X509Source
	id     spiffeid.ID
	guard  *authz.Guard
	revs   *mtls.Revocations
	spool  *spool.Spool // nil unless WithAuditSpool
}

// New connects to the agent and waits for the first SVID.
func New(ctx context.Context, opts ...Option) (*Source, error) {
	o := options{socket: endpoint.ClientPath(os.Geteuid(), os.Getenv), server: os.Getenv("RAMPART_SERVER")}
	if env := os.Getenv("SPIFFE_ENDPOINT_SOCKET"); env != "" {
		o.socket = env
	}
	uid, err := endpoint.ParseUID(os.Getenv("RAMPART_AGENT_UID"))
	if err != nil {
		return nil, fmt.Errorf("sdk: RAMPART_AGENT_UID: %w", err)
	}
	o.agentUID = uid
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.spoolDir != "" && o.server == "" {
		return nil, errors.New("sdk: WithAuditSpool needs WithServer (or RAMPART_SERVER): the spool delivers to the server")
	}
	wopts, err := endpoint.ClientOptions(ctx, o.socket, o.agentUID)
	if err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(wopts...))
	if err != nil {
		return nil, fmt.Errorf("sdk: Workload API at %s: %w", o.socket, err)
	}
	sv, err := src.GetX509SVID()
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("sdk: %w", err)
	}
	s := &Source{server: o.server, x509: src, id: sv.ID, revs: &mtls.Revocations{}}
	var sink authz.Sink = authz.LogSink{Log: o.log}
	if o.sink != nil {
		sink = o.sink
	}
	if o.spoolDir != "" {
		sp, shipping, err := authz.ShipDecisions(o.spoolDir, o.server, sv.ID.TrustDomain(), src, src, sink, o.log, nil)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("sdk: %w", err)
		}
		s.spool, sink = sp, shipping
	}
	s.guard = authz.NewGuard(authz.GuardConfig{Service: sv.ID, Log: o.log, Sink: sink, Revocations: s.revs})
	if o.server != "" {
		sy := &authz.Syncer{ServerAddr: o.server, SVID: src, Bundles: src, Guard: s.guard, Revocations: s.revs, CacheDir: o.cacheDir, Log: o.log}
		if err := sy.Start(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// ID is this service's SPIFFE ID.
func (s *Source) ID() spiffeid.ID { return s.id }

// Close stops following the Workload API and the audit spool (what it holds
// is delivered after the next start).
func (s *Source) Close() error {
	if s.spool != nil {
		s.spool.Close()
	}
	return s.x509.Close()
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

// ServerTLSConfig requires a client SVID from this trust domain, not revoked.
func (s *Source) ServerTLSConfig() *tls.Config {
	return mtls.ServerConfig(mtls.Options{SVID: s.x509, Bundles: s.x509, Authorize: tlsconfig.AuthorizeMemberOf(s.id.TrustDomain()), Revocations: s.revs})
}

// ClientTLSConfig refuses any server but the one presenting server's SVID.
func (s *Source) ClientTLSConfig(server spiffeid.ID) *tls.Config {
	return mtls.ClientConfig(mtls.Options{SVID: s.x509, Bundles: s.x509, Authorize: tlsconfig.AuthorizeID(server), Revocations: s.revs})
}

// ClientOption configures HTTPClient.
type ClientOption func(*clientOptions)

type clientOptions struct {
	exchangeClientID string
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

// HTTPClient calls the service whose SPIFFE ID is server over mTLS.
func (s *Source) HTTPClient(server spiffeid.ID, opts ...ClientOption) *http.Client {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	var rt http.RoundTripper = &http.Transport{
		TLSClientConfig: s.ClientTLSConfig(server), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
	}
	if o.exchangeClientID != "" {
		if s.server == "" {
			rt = roundTripErr{errors.New("sdk: WithTokenExchange needs a server (WithServer or RAMPART_SERVER)")}
		} else {
			rt = authz.NewExchanger(s.server, o.exchangeClientID, s.id.TrustDomain(), s.x509, s.x509).RoundTripper(server.String(), rt)
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: rt}
}

type roundTripErr struct{ err error }

func (e roundTripErr) RoundTrip(*http.Request) (*http.Response, error) { return nil, e.err }

// Middleware authorises each request with the policy before next sees it.
func (s *Source) Middleware(next http.Handler) http.Handler { return s.guard.Middleware(next) }

// CallerID returns the verified caller of a request that passed Middleware.
func CallerID(ctx context.Context) (spiffeid.ID, bool) { return authz.CallerID(ctx) }
