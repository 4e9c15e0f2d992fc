package identity

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/svid"
)

// DownstreamPathLen is the MaxPathLen of a downstream CA: one CA below it,
// so a nested Rampart server may keep its own rotating intermediate under
// the minted certificate (used as its --upstream-ca); a SPIRE-style
// downstream server that signs SVIDs with it directly needs no more.
const DownstreamPathLen = 1

// interPathLenDownstream is the MaxPathLen of intermediates made while
// downstream CAs are allowed: a downstream CA and the nested server's
// own intermediate below them.
const interPathLenDownstream = DownstreamPathLen + 1

// Why a downstream CA is not minted.
var (
	ErrDownstreamCSR = errors.New("identity: downstream CSR refused")
	// ErrDownstreamOff: the active intermediate was made while downstream
	// CAs were not allowed (MaxPathLen 0); rotate it.
	ErrDownstreamOff = errors.New("identity: the active intermediate may not sign CA certificates (it was made with path length 0, before downstream CAs were allowed); rotate the intermediate")
)

// SignDownstreamCA signs csr as the CA certificate of a downstream
// (nested) server of the trust domain, for holder (the SPIFFE ID of the
// downstream entry's workload), and returns the chain, the new CA first,
// without the root.
//
// Only the CSR's public key and its signature are used: every extension
// is the server's choice (a CSR asking for a wider name constraint, a
// longer path or other key usages is signed as if it asked for nothing):
//
//   - basic constraints CA, MaxPathLen DownstreamPathLen;
//   - key usage certSign only (RFC 5280 §4.2.1.3: no CRL signing, no
//     digital signature: it cannot serve TLS itself);
//   - name constraints (RFC 5280 §4.2.1.10), critical: URIs of the trust
//     domain's host only (subdomains, which would be other trust
//     domains, excluded), no DNS name and no IP address at all, so a
//     certificate it signs cannot pass as a server's TLS certificate for
//     a host name or address (the control plane's included);
//   - the URI SAN spiffe://TD, as the server's own CA certificates.
//
// NotAfter is now+ttl, cut to notAfter (the caller's bound: the entry's
// expiry) and to the active intermediate's own NotAfter.
func (ca *CA) SignDownstreamCA(csr *x509.CertificateRequest, holder spiffeid.ID, ttl time.Duration, notAfter time.Time) ([]*x509.Certificate, error) {
	td := ca.cfg.TrustDomain
	if holder.TrustDomain() != td {
		return nil, fmt.Errorf("identity: %q is not in trust domain %q", holder, td.Name())
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("identity: downstream CA lifetime %v: must be positive", ttl)
	}
	if err := CheckDownstreamCSR(csr); err != nil {
		return nil, err
	}
	ca.mu.RLock()
	inter := ca.inter
	ca.mu.RUnlock()
	now := ca.cfg.Now()
	if inter == nil || !now.Before(inter.cert.NotAfter) {
		return nil, ErrNoSigner
	}
	if inter.cert.MaxPathLen < interPathLenDownstream {
		return nil, ErrDownstreamOff
	}
	end := now.Add(ttl)
	if !notAfter.IsZero() && notAfter.Before(end) {
		end = notAfter
	}
	if inter.cert.NotAfter.Before(end) {
		end = inter.cert.NotAfter
	}
	if !end.After(now) {
		return nil, fmt.Errorf("identity: downstream CA for %s would end before it starts (%s)", holder, end.UTC().Format(time.RFC3339))
	}
	serial, err := svid.NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{Organization: []string{"Rampart"}, CommonName: "Rampart downstream CA " + holder.String()},
		URIs:                        []*url.URL{td.ID().URL()},
		NotBefore:                   now.Add(-svid.ClockSkew),
		NotAfter:                    end,
		KeyUsage:                    x509.KeyUsageCertSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  DownstreamPathLen,
		PermittedDNSDomainsCritical: true,
		PermittedURIDomains:         []string{td.Name()},
		ExcludedURIDomains:          []string{"." + td.Name()},
		// An empty DNS subtree matches every name (RFC 5280 §4.2.1.10:
		// "any DNS name that can be constructed by simply adding zero or
		// more labels"), and the whole address space every IP.
		ExcludedDNSDomains: []string{""},
		ExcludedIPRanges:   []*net.IPNet{{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, csr.PublicKey, inter.key)
	if err != nil {
		return nil, fmt.Errorf("identity: sign downstream CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return []*x509.Certificate{cert, inter.cert}, nil
}

// CheckDownstreamCSR checks what a downstream CSR brings that is used:
// its signature (proof that the caller holds the key) and its public key
// (ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits at least).
func CheckDownstreamCSR(csr *x509.CertificateRequest) error {
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: its signature does not verify with its public key: %v", ErrDownstreamCSR, err)
	}
	if err := svid.CheckKey(csr.PublicKey); err != nil {
		return fmt.Errorf("%w: %v", ErrDownstreamCSR, err)
	}
	return nil
}
