package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var want = spiffeid.RequireFromString("spiffe://example.org/orders")

func csrFor(t *testing.T, key crypto.Signer, mod func(*x509.CertificateRequest)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ext(oid asn1.ObjectIdentifier, v any) pkix.Extension {
	b, _ := asn1.Marshal(v)
	return pkix.Extension{Id: oid, Critical: true, Value: b}
}

func TestCheckCSR(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	uri := func(s string) func(*x509.CertificateRequest) {
		return func(r *x509.CertificateRequest) { u, _ := url.Parse(s); r.URIs = []*url.URL{u} }
	}
	tests := []struct {
		name    string
		der     []byte
		wantErr string
	}{
		{name: "empty subject", der: csrFor(t, p256, nil)},
		{name: "matching id", der: csrFor(t, p256, uri(want.String()))},
		{name: "ed25519", der: csrFor(t, ed, nil)},
		{name: "another id", der: csrFor(t, p256, uri("spiffe://example.org/payments")), wantErr: `asks for "spiffe://example.org/payments"`},
		{name: "foreign trust domain", der: csrFor(t, p256, uri("spiffe://evil.org/orders")), wantErr: "foreign trust domain"},
		{name: "not a spiffe id", der: csrFor(t, p256, uri("https://example.org/orders")), wantErr: "not a SPIFFE ID"},
		{name: "two ids", der: csrFor(t, p256, func(r *x509.CertificateRequest) {
			a, _ := url.Parse(want.String())
			b, _ := url.Parse("spiffe://example.org/payments")
			r.URIs = []*url.URL{a, b}
		}), wantErr: "2 URI SANs"},
		{name: "dns name", der: csrFor(t, p256, func(r *x509.CertificateRequest) { r.DNSNames = []string{"bank.example"} }), wantErr: "DNS, IP or e-mail"},
		{name: "ip", der: csrFor(t, p256, func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }), wantErr: "DNS, IP or e-mail"},
		{name: "ca bit", der: csrFor(t, p256, func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{ext(oidBasicConstraints, struct{ IsCA bool }{true})}
		}), wantErr: "CA certificate"},
		{name: "ca false is fine", der: csrFor(t, p256, func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{ext(oidBasicConstraints, struct {
				IsCA bool `asn1:"optional"`
			}{false})}
		})},
		{name: "keyCertSign", der: csrFor(t, p256, func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{ext(oidKeyUsage, asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})}
		}), wantErr: "keyCertSign"},
		{name: "name constraints", der: csrFor(t, p256, func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{{Id: oidNameConstraints, Value: []byte{0x30, 0x00}}}
		}), wantErr: "name constraints"},
		{name: "weak curve", der: csrFor(t, p224, nil), wantErr: "P-224 not allowed"},
		{name: "short rsa", der: csrFor(t, rsa1024, nil), wantErr: "too short"},
		{name: "garbage", der: []byte("not a csr"), wantErr: "svid: csr:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := CheckCSR(tt.der, want)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CheckCSR error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || pub == nil {
				t.Fatalf("CheckCSR = %v, %v", pub, err)
			}
		})
	}
}

// A CSR whose signature does not match its key proves no possession.
func TestCheckCSRBadSignature(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der := csrFor(t, k, nil)
	der[len(der)-3] ^= 0xff
	if _, err := CheckCSR(der, want); err == nil {
		t.Fatal("CSR with a broken signature accepted")
	}
}

func TestLeafTemplateIsSPIFFECompliant(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := LeafTemplate(want, k.Public(), time.Now(), time.Now().Add(time.Hour), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpl.URIs) != 1 || tmpl.URIs[0].String() != want.String() {
		t.Fatalf("URIs = %v", tmpl.URIs)
	}
	if tmpl.IsCA || !tmpl.BasicConstraintsValid {
		t.Fatal("leaf must carry basicConstraints cA=false")
	}
	if tmpl.KeyUsage&x509.KeyUsageDigitalSignature == 0 || tmpl.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		t.Fatalf("key usage %b", tmpl.KeyUsage)
	}
	if tmpl.SerialNumber.Sign() <= 0 || tmpl.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %v", tmpl.SerialNumber)
	}
}

func FuzzCheckCSR(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{want.URL()}}, k)
	f.Add(good)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := CheckCSR(der, want)
		if err == nil && pub == nil {
			t.Fatal("accepted without a key")
		}
		if err != nil {
			return
		}
		// Whatever is accepted asks for nothing but want.
		csr, perr := x509.ParseCertificateRequest(der)
		if perr != nil {
			t.Fatalf("accepted an unparsable CSR: %v", perr)
		}
		if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != want.String()) || len(csr.DNSNames) > 0 {
			t.Fatalf("accepted a CSR asking for %v %v", csr.URIs, csr.DNSNames)
		}
	})
}
