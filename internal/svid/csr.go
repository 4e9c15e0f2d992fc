package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
)

// CheckCSR parses a DER certificate signing request, checks its proof of
// possession, and checks that it asks for nothing but an SVID for want. It
// returns the public key to certify.
func CheckCSR(der []byte, want spiffeid.ID) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("svid: csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("svid: csr: signature does not verify (no proof of possession): %w", err)
	}
	if err := CheckKey(csr.PublicKey); err != nil {
		return nil, err
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		got, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return nil, fmt.Errorf("svid: csr: URI SAN %q is not a SPIFFE ID: %w", csr.URIs[0], err)
		}
		if got.TrustDomain() != want.TrustDomain() {
			return nil, fmt.Errorf("svid: csr: asks for %q in foreign trust domain %q; this CA issues only in %q", got, got.TrustDomain().Name(), want.TrustDomain().Name())
		}
		if got != want {
			return nil, fmt.Errorf("svid: csr: asks for %q, but the caller is entitled to %q", got, want)
		}
	default:
		return nil, fmt.Errorf("svid: csr: asks for %d URI SANs; an SVID has exactly one", len(csr.URIs))
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("svid: csr: asks for DNS, IP or e-mail names (%v %v %v); names come from the registration entry", csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return nil, fmt.Errorf("svid: csr: malformed basicConstraints: %w", err)
			}
			if bc.IsCA {
				return nil, fmt.Errorf("svid: csr: asks for a CA certificate (basicConstraints cA=true); SVIDs are leaves")
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				return nil, fmt.Errorf("svid: csr: malformed keyUsage: %w", err)
			}
			// keyCertSign is bit 5, cRLSign bit 6 (RFC 5280, 4.2.1.3).
			if bits.At(5) == 1 || bits.At(6) == 1 {
				return nil, fmt.Errorf("svid: csr: asks for keyCertSign or cRLSign; SVIDs are leaves")
			}
		case ext.Id.Equal(oidNameConstraints):
			return nil, fmt.Errorf("svid: csr: asks for name constraints; SVIDs are leaves")
		}
	}
	return csr.PublicKey, nil
}

// CheckKey refuses key types and sizes SVIDs and CAs may not have.
func CheckKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("svid: csr: ECDSA curve %s not allowed (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("svid: csr: RSA key of %d bits is too short (want at least 2048)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("svid: csr: key type %T not allowed", pub)
	}
	return nil
}
