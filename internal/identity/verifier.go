package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Why a caller's certificate is refused.
var (
	ErrUntrusted  = errors.New("client certificate does not chain to this trust domain's bundle")
	ErrNotAgent   = errors.New("client certificate is not an agent SVID")
	ErrRevoked    = errors.New("client certificate is revoked")
	ErrEvicted    = errors.New("agent is evicted")
	ErrDownstream = errors.New("client certificate was signed under a downstream CA; the control plane takes only SVIDs it signed itself")
)

// Reason names why err refused a certificate, for metrics.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrUntrusted):
		return "untrusted"
	case errors.Is(err, ErrNotAgent):
		return "not_agent"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrEvicted):
		return "evicted"
	case errors.Is(err, ErrDownstream):
		return "downstream"
	}
	return "other"
}

// Verifier verifies the X.509-SVIDs callers present to the control plane:
// the chain leads to the CA's current bundle and is unexpired, the
// certificate is not revoked, and an agent's is not evicted.
//
// Services call many times over one connection, and each request is
// checked again (a revocation may have happened since the handshake), so
// the signature checks are cached per leaf certificate until the chain's
// earliest expiry; Reset drops the cache (call it whenever the bundle may
// have changed). Revocation and eviction are looked up on every call, in
// the sets Update last gave.
type Verifier struct {
	CA  *CA
	Now func() time.Time

	mu      sync.RWMutex
	revoked map[string]struct{} // serials
	evicted map[string]struct{} // agent SPIFFE IDs

	cacheMu sync.Mutex
	cache   map[[32]byte]verifiedPeer
}

type verifiedPeer struct {
	id       spiffeid.ID
	serial   string
	notAfter time.Time
	// cas are the serials of the chain's CAs below the trust anchor
	// (the intermediate, and a downstream CA if any): revoking a
	// downstream CA's serial refuses everything signed under it.
	cas []string
	// direct: the leaf's issuer is the anchor's direct child (this
	// server's intermediate), no downstream CA between.
	direct bool
}

// maxPeerCache bounds the verified-chain cache; when full it starts over.
const maxPeerCache = 16384

// Update replaces the revoked serials and the evicted agents.
func (v *Verifier) Update(revoked, evicted map[string]struct{}) {
	v.mu.Lock()
	v.revoked, v.evicted = revoked, evicted
	v.mu.Unlock()
}

// Reset drops the cache of verified chains.
func (v *Verifier) Reset() {
	v.cacheMu.Lock()
	v.cache = nil
	v.cacheMu.Unlock()
}

// Verify verifies a raw client chain (leaf first) as an SVID of the trust
// domain and returns its SPIFFE ID.
//
// The SVID must have been signed by this server's CA itself: one signed
// under a downstream CA (SignDownstreamCA) verifies against the bundle
// for workloads of the trust domain, but the control plane refuses it
// (ErrDownstream): a nested server may mint any SPIFFE ID of the trust
// domain, and must not thereby act as an agent, an admin or any other
// caller of its parent.
func (v *Verifier) Verify(raw [][]byte) (spiffeid.ID, error) {
	td := v.CA.cfg.TrustDomain
	now := v.Now()
	sum := sha256.Sum256(raw[0])
	p, ok := v.get(sum, now)
	if !ok {
		bundle := x509bundle.FromX509Authorities(td, v.CA.X509Bundle())
		id, chains, err := x509svid.ParseAndVerify(raw, bundle, x509svid.WithTime(now))
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		chain := chains[0]
		// leaf, intermediate, anchor: issued here. Anything longer has
		// a CA of the server's making (a downstream CA) in between. Any
		// such chain will do: extra certificates a client sends may make
		// longer ones too, but a leaf of a downstream CA has none this
		// short (its issuer is no root's child).
		direct := false
		for _, c := range chains {
			direct = direct || len(c) <= 3
		}
		p = verifiedPeer{id: id, serial: chain[0].SerialNumber.Text(16), notAfter: chain[0].NotAfter, direct: direct}
		for i, c := range chain[1:] {
			if c.NotAfter.Before(p.notAfter) {
				p.notAfter = c.NotAfter
			}
			if i+1 < len(chain)-1 {
				p.cas = append(p.cas, c.SerialNumber.Text(16))
			}
		}
		v.put(sum, p)
	}
	v.mu.RLock()
	_, revoked := v.revoked[p.serial]
	revokedCA := ""
	for _, s := range p.cas {
		if _, ok := v.revoked[s]; ok {
			revokedCA = s
		}
	}
	_, evicted := v.evicted[p.id.String()]
	v.mu.RUnlock()
	if revoked {
		return spiffeid.ID{}, fmt.Errorf("%w: serial %s", ErrRevoked, p.serial)
	}
	if revokedCA != "" {
		return spiffeid.ID{}, fmt.Errorf("%w: signed under CA certificate %s, which is revoked", ErrRevoked, revokedCA)
	}
	if evicted && IsAgentID(td, p.id) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s", ErrEvicted, p.id)
	}
	if !p.direct {
		return spiffeid.ID{}, fmt.Errorf("%w: %s", ErrDownstream, p.id)
	}
	return p.id, nil
}

// VerifyAgent is Verify plus: the SVID must be an agent's.
func (v *Verifier) VerifyAgent(raw [][]byte) (spiffeid.ID, error) {
	id, err := v.Verify(raw)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !IsAgentID(v.CA.cfg.TrustDomain, id) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s", ErrNotAgent, id)
	}
	return id, nil
}

func (v *Verifier) get(sum [32]byte, now time.Time) (verifiedPeer, bool) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	p, ok := v.cache[sum]
	if ok && !now.Before(p.notAfter) {
		delete(v.cache, sum)
		return verifiedPeer{}, false
	}
	return p, ok
}

func (v *Verifier) put(sum [32]byte, p verifiedPeer) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	if v.cache == nil || len(v.cache) >= maxPeerCache {
		v.cache = make(map[[32]byte]verifiedPeer)
	}
	v.cache[sum] = p
}

// ClientTLS is the configuration of a client that presents cert and
// accepts only a server presenting an SVID for want, verified as Verify
// verifies callers (against the live bundle, not a pool fixed at start;
// expiry; revocation).
func (v *Verifier) ClientTLS(cert func() (*tls.Certificate, error), want spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert()
		},
		// The chain and the SPIFFE ID are checked in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the other replica sent no certificate")
			}
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			id, err := v.Verify(raw)
			if err != nil {
				return fmt.Errorf("the other replica's certificate: %w", err)
			}
			if id != want {
				return fmt.Errorf("the other replica presented %s, not %s", id, want)
			}
			return nil
		},
	}
}

// RevocationStore lists revocations and agents; store.Store implements it.
type RevocationStore interface {
	ListRevocations(ctx context.Context, now time.Time) ([]store.Revocation, error)
	ListAgents(ctx context.Context) ([]store.Agent, error)
}

// Load reads the revoked serials and the evicted agents from st (Update)
// and returns how many revocations are in force.
func (v *Verifier) Load(ctx context.Context, st RevocationStore) (int, error) {
	revs, err := st.ListRevocations(ctx, v.Now())
	if err != nil {
		return 0, fmt.Errorf("identity: %w", err)
	}
	agents, err := st.ListAgents(ctx)
	if err != nil {
		return 0, fmt.Errorf("identity: %w", err)
	}
	revoked := make(map[string]struct{}, len(revs))
	for _, r := range revs {
		revoked[r.Serial] = struct{}{}
	}
	evicted := map[string]struct{}{}
	for _, a := range agents {
		if a.Evicted {
			evicted[a.SpiffeID] = struct{}{}
		}
	}
	v.Update(revoked, evicted)
	return len(revoked), nil
}
