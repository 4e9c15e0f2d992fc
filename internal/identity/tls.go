package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rampartsec/rampart/internal/svid"
)

// TLS server certificates: the profile of certificates that are not
// workload identities (package acme issues them for ingresses, dashboards,
// databases). They come from the same online intermediate as SVIDs, so
// they chain to the same bundle, but they carry no SPIFFE ID: a relying
// party that authenticates SVIDs (the server, proxies, the SDK; all
// require exactly one SPIFFE URI SAN) never mistakes one for a workload.

// TLSCert describes a TLS server certificate to issue.
type TLSCert struct {
	DNSNames []string
	IPs      []net.IP
	// TTL is the lifetime asked for; it is cut to the intermediate's.
	TTL time.Duration
	// ClientAuth adds the client-auth EKU (only when the requester was
	// allowed to ask for it); otherwise the certificate is for TLS
	// servers only.
	ClientAuth bool
}

// MaxTLSNames bounds the names of one TLS certificate.
const MaxTLSNames = 100

// SignTLS signs a TLS server certificate for pub and returns the chain,
// leaf first, without the root: no URI SAN, the DNS and IP SANs of req,
// digitalSignature (and keyEncipherment for RSA keys), the server-auth
// EKU (and client-auth only if req asks), cA=false, and the
// intermediate's key ID as authority key ID (RFC 9773 names a
// certificate by it and its serial).
func (ca *CA) SignTLS(pub crypto.PublicKey, req TLSCert) ([]*x509.Certificate, error) {
	n := len(req.DNSNames) + len(req.IPs)
	if n == 0 {
		return nil, errors.New("identity: a TLS certificate needs at least one DNS name or IP address")
	}
	if n > MaxTLSNames {
		return nil, fmt.Errorf("identity: a TLS certificate may carry at most %d names, not %d", MaxTLSNames, n)
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("identity: TLS certificate lifetime %v: must be positive", req.TTL)
	}
	for _, d := range req.DNSNames {
		if d == "" {
			return nil, errors.New("identity: empty DNS name")
		}
	}
	for _, ip := range req.IPs {
		if ip.To16() == nil {
			return nil, fmt.Errorf("identity: invalid IP address %v", ip)
		}
	}
	if err := CheckTLSKey(pub); err != nil {
		return nil, err
	}
	ca.mu.RLock()
	inter := ca.inter
	ca.mu.RUnlock()
	now := ca.cfg.Now()
	if inter == nil || !now.Before(inter.cert.NotAfter) {
		return nil, ErrNoSigner
	}
	notAfter := now.Add(req.TTL)
	if notAfter.After(inter.cert.NotAfter) {
		notAfter = inter.cert.NotAfter
	}
	serial, err := svid.NewSerial()
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if req.ClientAuth {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	var subject pkix.Name
	if len(req.DNSNames) > 0 && len(req.DNSNames[0]) <= 64 {
		subject.CommonName = req.DNSNames[0] // for the clients that still read it
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
		NotBefore:             now.Add(-svid.ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		AuthorityKeyId:        inter.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, pub, inter.key)
	if err != nil {
		return nil, fmt.Errorf("identity: sign TLS certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return []*x509.Certificate{leaf, inter.cert}, nil
}

// CheckTLSKey accepts the keys TLS clients verify: ECDSA P-256 and P-384,
// RSA of 2048 to 8192 bits, Ed25519.
func CheckTLSKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("identity: ECDSA curve %s not allowed (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if b := k.N.BitLen(); b < 2048 || b > 8192 {
			return fmt.Errorf("identity: RSA key of %d bits not allowed (want 2048 to 8192)", b)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("identity: key type %T not allowed", pub)
	}
	return nil
}
