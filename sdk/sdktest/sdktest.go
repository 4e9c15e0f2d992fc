// Package sdktest stands in for an agent in the tests of a service that
// uses the SDK: an in-memory certificate authority for one trust domain,
// whose SVIDs and bundle go to sdk.WithX509Source.
//
//	ca := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
//	payments, _ := sdk.New(ctx, sdk.WithX509Source(ca.SVID(paymentsID), ca.Bundle()))
//	orders, _ := sdk.New(ctx, sdk.WithX509Source(ca.SVID(ordersID), ca.Bundle()))
//	// serve with payments.ServerTLSConfig(), call with orders.HTTPClient(paymentsID)
//
// The certificates are made as Rampart's CA makes them (a root with a name
// constraint to its trust domain, leaves for both client and server
// authentication), so mutual TLS, authorisation and the policy behave as
// they do with an agent. Nothing here is fit for production: the keys live
// in memory, and the CA issues whatever a test asks for.
//
// Like net/http/httptest, the functions panic rather than return errors:
// they fail only on a broken random source or a misused ID, which a test
// cannot recover from.
package sdktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/svid"
)

// SVIDLifetime is how long an SVID from CA.SVID is valid.
const SVIDLifetime = time.Hour

// CA issues X.509-SVIDs for one trust domain. It is safe for concurrent
// use.
type CA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA returns a CA for td with a new root, valid for a day.
func NewCA(td spiffeid.TrustDomain) *CA {
	if td.IsZero() {
		panic("sdktest: NewCA: no trust domain")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("sdktest: NewCA: %v", err))
	}
	now := time.Now()
	tmpl, err := svid.CATemplate(td, "sdktest root", now, now.Add(24*time.Hour), -1)
	if err != nil {
		panic(fmt.Sprintf("sdktest: NewCA: %v", err))
	}
	cert := mustCreate(tmpl, tmpl, key, key)
	return &CA{td: td, cert: cert, key: key}
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Bundle returns the CA's trust bundle. It satisfies x509bundle.Source for
// the CA's trust domain.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// SVID issues an X.509-SVID for id, valid from now for SVIDLifetime, with a
// new P-256 key. It satisfies x509svid.Source. id must be in the CA's trust
// domain and have a path.
func (ca *CA) SVID(id spiffeid.ID) *x509svid.SVID {
	if id.TrustDomain() != ca.td || id.Path() == "" {
		panic(fmt.Sprintf("sdktest: SVID: %q is not a workload ID of trust domain %q", id, ca.td.Name()))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("sdktest: SVID: %v", err))
	}
	now := time.Now()
	tmpl, err := svid.LeafTemplate(id, key.Public(), now, now.Add(SVIDLifetime), nil, nil)
	if err != nil {
		panic(fmt.Sprintf("sdktest: SVID: %v", err))
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{mustCreate(tmpl, ca.cert, key, ca.key)}, PrivateKey: key}
}

func mustCreate(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		panic(fmt.Sprintf("sdktest: %v", err))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(fmt.Sprintf("sdktest: %v", err))
	}
	return cert
}
