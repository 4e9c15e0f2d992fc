package federation

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Profile is how a bundle endpoint authenticates itself (SPIFFE
// Federation §5.2).
type Profile string

// The two profiles of the spec.
const (
	// ProfileSPIFFE: the endpoint presents an X.509-SVID, checked against
	// the bundle already held for its trust domain (§5.2.2).
	ProfileSPIFFE Profile = "https_spiffe"
	// ProfileWeb: the endpoint presents a Web PKI certificate for the
	// URL's host (§5.2.1).
	ProfileWeb Profile = "https_web"
)

// ParseProfile reads a profile's name.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case ProfileSPIFFE, ProfileWeb:
		return p, nil
	}
	return "", fmt.Errorf("federation: unknown profile %q (want https_spiffe or https_web)", s)
}

// MaxBundleSize bounds a bundle document read from an endpoint or a file.
const MaxBundleSize = 1 << 20

// Errors a refused bundle wraps.
var (
	// ErrWrongTrustDomain: an authority of the bundle names another trust
	// domain than the one the bundle is for.
	ErrWrongTrustDomain = errors.New("federation: the bundle names another trust domain")
	// ErrNoX509Authorities: the bundle holds no X.509 authority, so no
	// SVID of its trust domain could be verified with it.
	ErrNoX509Authorities = errors.New("federation: the bundle holds no X.509 authority")
)

// Document encodes a trust domain's bundle as a SPIFFE bundle document.
func Document(td spiffeid.TrustDomain, roots []*x509.Certificate, jwt map[string]crypto.PublicKey, sequence uint64, refreshHint time.Duration) ([]byte, error) {
	b := spiffebundle.FromX509Authorities(td, roots)
	for kid, k := range jwt {
		if err := b.AddJWTAuthority(kid, k); err != nil {
			return nil, fmt.Errorf("federation: bundle of %s: %w", td, err)
		}
	}
	b.SetSequenceNumber(sequence)
	b.SetRefreshHint(refreshHint)
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("federation: bundle of %s: %w", td, err)
	}
	return doc, nil
}

// ParseBundle reads a bundle document of td, as fetched from td's
// endpoint or given by an operator, and checks that it can stand for td:
// at most MaxBundleSize, at least one X.509 authority, every one a CA
// certificate whose SPIFFE ID URI SANs (if any) name td and nothing else.
func ParseBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	if len(doc) > MaxBundleSize {
		return nil, fmt.Errorf("federation: the bundle of %s is larger than %d bytes", td, MaxBundleSize)
	}
	b, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, fmt.Errorf("federation: the bundle of %s: %w", td, err)
	}
	roots := b.X509Authorities()
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w (trust domain %s)", ErrNoX509Authorities, td)
	}
	for i, c := range roots {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("federation: the bundle of %s: X.509 authority %d (%s) is not a CA certificate", td, i, c.Subject)
		}
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			id, err := spiffeid.FromURI(u)
			if err != nil || id.TrustDomain() != td {
				return nil, fmt.Errorf("%w: X.509 authority %d (%s) is for %s, the relationship for %s", ErrWrongTrustDomain, i, c.Subject, u, td)
			}
		}
	}
	if hint, ok := b.RefreshHint(); ok && hint < 0 {
		return nil, fmt.Errorf("federation: the bundle of %s: negative spiffe_refresh_hint", td)
	}
	return b, nil
}

// SameAuthorities reports whether two bundles hold the same X.509 and JWT
// authorities (sequence and hint aside).
func SameAuthorities(a, b *spiffebundle.Bundle) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.X509Bundle().Equal(b.X509Bundle()) && a.JWTBundle().Equal(b.JWTBundle())
}

// canonical re-encodes a bundle so that equal bundles store equal bytes.
func canonical(b *spiffebundle.Bundle) ([]byte, error) {
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("federation: encode the bundle of %s: %w", b.TrustDomain(), err)
	}
	return bytes.TrimSpace(doc), nil
}
