package svid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestPEMRoundTrip(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := CATemplate(spiffeid.RequireTrustDomainFromString("example.org"), "test", time.Now(), time.Now().Add(time.Hour), -1)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	b := EncodePEM([]*x509.Certificate{cert, cert})
	got, err := ParsePEM(b)
	if err != nil || len(got) != 2 || !got[1].Equal(cert) {
		t.Fatalf("ParsePEM = %d certificates, %v", len(got), err)
	}
	for _, tt := range []struct{ in, wantErr string }{
		{"", "no certificates found"},
		{string(b) + "junk", "trailing data"},
		{"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", `unexpected PEM block "PRIVATE KEY"`},
		{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "svid: x509"},
	} {
		if _, err := ParsePEM([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParsePEM(%.30q) = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}
