package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/svid"
)

// Revocations is the set of revoked certificate serials (lower-case hex),
// replaced as a whole when the control plane sends a new list. The zero
// value holds nothing and is ready to use.
type Revocations struct {
	set atomic.Pointer[map[string]struct{}]

	mu      sync.Mutex
	changed chan struct{} // closed by the next Set; nil until asked for
}

// Set replaces the revoked serials.
func (r *Revocations) Set(serials []string) {
	m := make(map[string]struct{}, len(serials))
	for _, s := range serials {
		m[s] = struct{}{}
	}
	r.set.Store(&m)
	r.mu.Lock()
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
}

// Changed returns a channel closed at the next Set, for connections that
// outlive a single check. Take it before checking, so a Set in between is
// not missed. A nil Revocations never changes (nil channel).
func (r *Revocations) Changed() <-chan struct{} {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

// Revoked reports whether serial is revoked.
func (r *Revocations) Revoked(serial string) bool {
	if r == nil {
		return false
	}
	m := r.set.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[serial]
	return ok
}

// RevokedCert reports whether c's serial is revoked; with no revocations
// (the usual case) it costs no formatting of the serial.
func (r *Revocations) RevokedCert(c *x509.Certificate) bool {
	return r.RevokedChain([]*x509.Certificate{c}) != nil
}

// RevokedChain returns the first certificate of chain (leaf first) whose
// serial is revoked, or nil. Every certificate counts: a downstream CA
// (one the control plane signed for a workload) that is revoked takes
// every SVID it signed with it, whatever their own serials.
func (r *Revocations) RevokedChain(chain []*x509.Certificate) *x509.Certificate {
	if r == nil {
		return nil
	}
	if m := r.set.Load(); m == nil || len(*m) == 0 {
		return nil
	}
	for _, c := range chain {
		if r.Revoked(c.SerialNumber.Text(16)) {
			return c
		}
	}
	return nil
}

// Refusal reasons reported to OnFail.
const (
	ReasonUntrusted    = "untrusted"
	ReasonRevoked      = "revoked"
	ReasonUnauthorized = "unauthorized_id"
)

// ErrRevoked is returned (wrapped) for a peer whose certificate is revoked.
var ErrRevoked = errors.New("mtls: peer certificate is revoked")

// Options configures a data-plane TLS configuration.
type Options struct {
	SVID        x509svid.Source      // our SVID
	Bundles     x509bundle.Source    // trust bundles for peers
	Authorize   tlsconfig.Authorizer // which peer IDs are acceptable
	Revocations *Revocations         // may be nil
	// Quarantine, if set, refuses a handshake with a quarantined peer,
	// and every handshake while this endpoint itself is quarantined.
	Quarantine *Quarantine
	OnFail     func(reason string) // may be nil
	// OnHandshake, if set, is told of every handshake whose peer passed
	// verification, and whether it resumed an earlier session.
	OnHandshake func(resumed bool)
	// OnSessionDeclined, if set, is told why a server refused to resume a
	// session (SessionStale, SessionRevoked, SessionForeign) and did a
	// full handshake instead.
	OnSessionDeclined func(reason string)
	Now               func() time.Time // nil: time.Now
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) authorizer() tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if len(chains) > 0 {
			if c := o.Revocations.RevokedChain(chains[0]); c != nil {
				o.fail(ReasonRevoked)
				return fmt.Errorf("%w: %s serial %s", ErrRevoked, id, c.SerialNumber.Text(16))
			}
		}
		if o.Quarantine.Blocks(id) {
			o.fail(ReasonQuarantined)
			return fmt.Errorf("%w: %s", ErrQuarantined, id)
		}
		if err := o.Authorize(id, chains); err != nil {
			o.fail(ReasonUnauthorized)
			return err
		}
		return nil
	}
}

func (o Options) fail(reason string) {
	if o.OnFail != nil {
		o.OnFail(reason)
	}
}

// verify checks the peer's chain as an SVID of a trusted domain, then
// revocation and authorisation. It runs as VerifyConnection, on the
// certificates crypto/tls has already parsed (go-spiffe's
// VerifyPeerCertificate would parse the raw chain a second time in every
// handshake); an untrusted chain is counted here, the rest by the
// authorizer.
func (o Options) verify() func(tls.ConnectionState) error {
	authorize := o.authorizer()
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			o.fail(ReasonUntrusted)
			return errors.New("mtls: the peer sent no certificate")
		}
		// On a resumed session too: crypto/tls carries the peer's chain over
		// from the first handshake and calls VerifyConnection, but checks
		// no more than its expiry itself; this checks it again against the
		// bundle, the revocation list and the authorizer as they are now.
		id, chains, err := x509svid.Verify(cs.PeerCertificates, o.Bundles, x509svid.WithTime(o.now()))
		if err != nil {
			o.fail(ReasonUntrusted)
			return fmt.Errorf("mtls: could not verify the peer's SVID: %w", err)
		}
		if err := authorize(id, chains); err != nil {
			return err
		}
		if o.OnHandshake != nil {
			o.OnHandshake(cs.DidResume)
		}
		return nil
	}
}

// ServerConfig is an mTLS server configuration: a client SVID is required.
//
// It issues TLS 1.3 session tickets, so a client that reconnects resumes
// its session (one key exchange, no certificate signatures or chain
// parsing) instead of a full handshake. A resumed session carries the
// client certificate of the first handshake, so it is resumed only while
// that certificate would still be accepted afresh: every resumption is
// verified again (VerifyConnection), and a ticket is declined, for a full
// handshake with the client's current SVID, once its certificate is past
// RecycleAt or revoked (the ticket records both).
func ServerConfig(o Options) *tls.Config {
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAnyClientCert,
		GetCertificate:   tlsconfig.GetCertificate(o.SVID),
		VerifyConnection: o.verify(),
		NextProtos:       []string{"h2", "http/1.1"},
		Time:             o.Now,
	}
	// The closures use cfg's ticket keys even when a server clones cfg
	// (http.Server.ServeTLS does), so every copy reads what any wrote.
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if len(cs.PeerCertificates) > 0 {
			ss.Extra = append(ss.Extra, encodeTicketGuard(cs.PeerCertificates[0]))
		}
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, nil // not ours or expired: a full handshake
		}
		g, ok := findTicketGuard(ss.Extra)
		switch {
		case !ok:
			o.declined(SessionForeign)
		case !o.now().Before(g.recycleAt):
			o.declined(SessionStale)
		case o.Revocations.Revoked(g.serial):
			o.declined(SessionRevoked)
		default:
			return ss, nil
		}
		return nil, nil
	}
	return cfg
}

// Why a server declined to resume a session (Options.OnSessionDeclined).
const (
	SessionStale   = "stale"   // the client certificate is past RecycleAt
	SessionRevoked = "revoked" // the client certificate was revoked since
	SessionForeign = "foreign" // a ticket without our record (another version)
)

func (o Options) declined(reason string) {
	if o.OnSessionDeclined != nil {
		o.OnSessionDeclined(reason)
	}
}

// sessionCacheSize is how many servers' sessions a client configuration
// keeps (one per upstream address in practice).
const sessionCacheSize = 64

// ClientConfig is an mTLS client configuration. Host names are not checked:
// the server is authenticated by its SPIFFE ID (o.Authorize). Sessions are
// cached for resumption (see ServerConfig); a resumed session is verified
// again, and crypto/tls does not offer one whose server certificate has
// expired. Dialer retries a refused resumption with a full handshake.
func ClientConfig(o Options) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: tlsconfig.GetClientCertificate(o.SVID),
		InsecureSkipVerify:   true, // replaced by VerifyConnection: SPIFFE authentication
		VerifyConnection:     o.verify(),
		NextProtos:           []string{"h2", "http/1.1"},
		ClientSessionCache:   tls.NewLRUClientSessionCache(sessionCacheSize),
		Time:                 o.Now,
	}
}

// RecycleAt is when a connection authenticated with leaf should give way
// to a new one: three quarters into the certificate's life. Agents rotate
// SVIDs at 40-50% of theirs, so by then the peer holds a newer one, and a
// new connection (a full handshake: see ServerConfig) presents it before
// the old one expires. The life is counted from issuance, as the agent
// counts it: SVIDs are backdated by svid.ClockSkew, which would otherwise
// make a short-lived one due at once.
func RecycleAt(leaf *x509.Certificate) time.Time {
	issued := leaf.NotBefore
	if leaf.NotAfter.Sub(issued) > svid.ClockSkew { // else not backdated: another CA's
		issued = issued.Add(svid.ClockSkew)
	}
	life := leaf.NotAfter.Sub(issued)
	return issued.Add(life - life/4)
}

// ticketGuard is what a session ticket records about the client
// certificate it carries, to decline it without parsing the chain.
type ticketGuard struct {
	recycleAt time.Time
	serial    string // lower-case hex, as in Revocations
}

// ticketGuardTag starts our entry in SessionState.Extra, which other layers
// may share (crypto/tls asks for recognisable, versioned entries).
const ticketGuardTag = "rampart-ticket-v1:"

func encodeTicketGuard(leaf *x509.Certificate) []byte {
	b := make([]byte, 0, len(ticketGuardTag)+8+40)
	b = append(b, ticketGuardTag...)
	b = binary.BigEndian.AppendUint64(b, uint64(RecycleAt(leaf).Unix()))
	return append(b, leaf.SerialNumber.Text(16)...)
}

func findTicketGuard(extra [][]byte) (ticketGuard, bool) {
	for _, e := range extra {
		if len(e) < len(ticketGuardTag)+8 || string(e[:len(ticketGuardTag)]) != ticketGuardTag {
			continue
		}
		e = e[len(ticketGuardTag):]
		return ticketGuard{recycleAt: time.Unix(int64(binary.BigEndian.Uint64(e)), 0), serial: string(e[8:])}, true
	}
	return ticketGuard{}, false
}

// Dialer opens mTLS connections with a ClientConfig, resuming the cached
// session of the server when there is one. A resumption the server or the
// verifier refused (the server's certificate revoked since, its ticket key
// gone) is tried once more as a full handshake: crypto/tls drops a
// session whose resumption failed, so the second attempt offers none.
type Dialer struct {
	Config *tls.Config // from ClientConfig
	Net    *net.Dialer // nil: a zero net.Dialer
}

// DialContext connects to addr and completes the handshake.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := d.Net
	if nd == nil {
		nd = &net.Dialer{}
	}
	for attempt := 0; ; attempt++ {
		cfg := d.Config.Clone()
		var tc *trackingCache
		if cfg.ClientSessionCache != nil {
			tc = &trackingCache{ClientSessionCache: cfg.ClientSessionCache}
			cfg.ClientSessionCache = tc
		}
		c, err := (&tls.Dialer{NetDialer: nd, Config: cfg}).DialContext(ctx, network, addr)
		if err == nil || attempt > 0 || tc == nil || !tc.offered.Load() || ctx.Err() != nil {
			return c, err
		}
	}
}

// trackingCache notes whether a handshake offered a cached session.
type trackingCache struct {
	tls.ClientSessionCache
	offered atomic.Bool
}

func (c *trackingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.ClientSessionCache.Get(key)
	if ok && s != nil {
		c.offered.Store(true)
	}
	return s, ok
}

// PeerID returns the SPIFFE ID of a verified TLS peer.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}

// AuthorizeTrustDomains accepts a peer of any trust domain whose bundle
// verified its chain: this one's, or one it federates with (the bundle
// source holds a federated trust domain's bundle only while the
// federation lasts). x509svid.Verify checks a chain against the bundle of
// the trust domain the leaf's SPIFFE ID names, never another's, so a
// certificate naming B signed by A's CA is refused before this runs, and
// a trust domain with no bundle here cannot be verified at all. Which of
// those peers may do what is the policy's decision (default deny; "*"
// never matches another trust domain).
func AuthorizeTrustDomains() tlsconfig.Authorizer {
	return func(spiffeid.ID, [][]*x509.Certificate) error { return nil }
}
