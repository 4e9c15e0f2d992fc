package svid

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ClockSkew is how far NotBefore is set into the past, so a relying party
// whose clock is slightly behind still accepts a fresh SVID.
const ClockSkew = 30 * time.Second

// NewSerial returns a random positive serial number of at most 128 bits.
func NewSerial() (*big.Int, error) {
	max := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, max)
	if err != nil {
		return nil, fmt.Errorf("svid: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// SerialString formats a serial the way Rampart shows and stores it: lower-case
// hex without leading zeros.
func SerialString(n *big.Int) string { return n.Text(16) }

// LeafTemplate returns the template for an X.509-SVID. dns and ips are only
// set for certificates that must also be verifiable by host name (the
// server's own certificate).
func LeafTemplate(id spiffeid.ID, pub crypto.PublicKey, notBefore, notAfter time.Time, dns []string, ips []net.IP) (*x509.Certificate, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	subject := pkix.Name{Organization: []string{"Rampart"}}
	if len(dns) > 0 {
		subject.CommonName = dns[0]
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             notBefore.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}, nil
}

// CATemplate returns the template of a signing certificate for trust domain
// td. maxPathLen 0 makes an intermediate that can sign only leaves; -1 leaves
// the path length of a root open. The certificate carries the trust domain's
// SPIFFE ID and a name constraint limiting the URIs it vouches for to td.
func CATemplate(td spiffeid.TrustDomain, commonName string, notBefore, notAfter time.Time, maxPathLen int) (*x509.Certificate, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Rampart"}, CommonName: commonName},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             notBefore.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		PermittedURIDomains:   []string{td.Name()},
	}
	if maxPathLen == 0 {
		t.MaxPathLen, t.MaxPathLenZero = 0, true
	} else {
		t.MaxPathLen = maxPathLen
	}
	return t, nil
}
