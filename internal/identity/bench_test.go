package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The ceiling: one ECDSA P-256 signature, what every SVID costs at least.
func BenchmarkECDSAP256Sign(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("tbs certificate"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, k, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}

// SignX509SVID: template, signature, and parsing the result back.
func BenchmarkSignX509SVID(b *testing.B) {
	f := newFixture(b)
	ca, err := New(b.Context(), Config{TrustDomain: td, Store: f.st, Wrapper: f.w, Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/orders")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.SignX509SVID(id, k.Public(), time.Hour, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}
