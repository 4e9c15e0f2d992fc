package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
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
	if r == nil {
		return false
	}
	if m := r.set.Load(); m == nil || len(*m) == 0 {
		return false
	}
	return r.Revoked(c.SerialNumber.Text(16))
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
	OnFail      func(reason string)  // may be nil
}

func (o Options) authorizer() tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if len(chains) > 0 && len(chains[0]) > 0 {
			if serial := chains[0][0].SerialNumber.Text(16); o.Revocations.Revoked(serial) {
				o.fail(ReasonRevoked)
				return fmt.Errorf("%w: %s serial %s", ErrRevoked, id, serial)
			}
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
		id, chains, err := x509svid.Verify(cs.PeerCertificates, o.Bundles)
		if err != nil {
			o.fail(ReasonUntrusted)
			return fmt.Errorf("mtls: could not verify the peer's SVID: %w", err)
		}
		return authorize(id, chains)
	}
}

// ServerConfig is an mTLS server configuration: a client SVID is required.
func ServerConfig(o Options) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAnyClientCert,
		GetCertificate:   tlsconfig.GetCertificate(o.SVID),
		VerifyConnection: o.verify(),
		NextProtos:       []string{"h2", "http/1.1"},
	}
}

// ClientConfig is an mTLS client configuration. Host names are not checked:
// the server is authenticated by its SPIFFE ID (o.Authorize).
func ClientConfig(o Options) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: tlsconfig.GetClientCertificate(o.SVID),
		InsecureSkipVerify:   true, // replaced by VerifyConnection: SPIFFE authentication
		VerifyConnection:     o.verify(),
		NextProtos:           []string{"h2", "http/1.1"},
	}
}

// PeerID returns the SPIFFE ID of a verified TLS peer.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}
