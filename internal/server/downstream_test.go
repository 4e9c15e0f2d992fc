package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/identity/ids"
	"github.com/rampartsec/rampart/internal/respond"
)

func downstreamHarness(t *testing.T) *harness {
	return newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", DownstreamMaxTTL: time.Hour})
}

func downstreamRequest(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: "other.org"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// A downstream entry's workload mints a CA with its SVID: recorded,
// audited (ca.downstream_minted, the workload the actor), counted, its
// life within the server's maximum and the entry's expiry; SVIDs signed
// under it verify against the bundle the response carries; the control
// plane refuses them (a nested server does not act as its parent's
// callers); revoking the CA's serial is possible as for any SVID.
func TestDownstreamCAMinted(t *testing.T) {
	h := downstreamHarness(t)
	ctx := context.Background()
	const nestedID = "spiffe://example.org/nested"
	cert, entryID := h.entryWorkload("node-1", api.Entry{SpiffeID: nestedID, Downstream: true})
	key, csr := downstreamRequest(t)
	var resp api.DownstreamResponse
	if err := h.client("", cert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr, TTLSeconds: 10 * 3600}, &resp); err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	var roots []*x509.Certificate
	for _, der := range resp.Bundle {
		c, _ := x509.ParseCertificate(der)
		roots = append(roots, c)
	}
	now := h.clk.Now()
	dc := chain[0]
	if len(chain) != 2 || !dc.IsCA || dc.URIs[0].String() != "spiffe://example.org" || dc.NotAfter.After(now.Add(time.Hour)) ||
		dc.NotAfter.Before(now.Add(59*time.Minute)) || !key.PublicKey.Equal(dc.PublicKey) || resp.Serial != dc.SerialNumber.Text(16) {
		t.Fatalf("minted %+v (chain of %d): want a CA for our key, of the trust domain, for the server's maximum of 1h", dc, len(chain))
	}
	es := logEntries(t, h.srv.audit, "ca.downstream_minted")
	if len(es) != 1 || es[0].Actor.SpiffeID != nestedID || es[0].Details["serial"] != resp.Serial || es[0].Details["entry_id"] != entryID {
		t.Fatalf("ca.downstream_minted entries %+v", es)
	}
	if n := testutil.ToFloat64(h.srv.metrics.downstreamCAs.WithLabelValues("minted")); n != 1 {
		t.Fatalf("minted counter %v, want 1", n)
	}

	// An SVID the nested server signs verifies against the bundle...
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://example.org/nested/api")
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7), URIs: []*url.URL{u},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, dc, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf, chain[0], chain[1]}, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(now)); err != nil {
		t.Fatalf("the nested server's SVID against the bundle: %v", err)
	}
	// A certificate for the server's own ID signed under the downstream
	// CA verifies against the bundle too (the constraints allow any ID of
	// the trust domain), but agents, proxies and SDK services do not take
	// it for the control plane (red team: a fake server took an agent's
	// join token with one).
	serverURI, _ := url.Parse(ids.ServerID(td).String())
	fakeDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(8), URIs: []*url.URL{serverURI},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, dc, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	fake, _ := x509.ParseCertificate(fakeDER)
	fakeID, fakeChains, err := x509svid.Verify([]*x509.Certificate{fake, chain[0], chain[1]}, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("the fake server certificate against the bundle: %v", err)
	}
	if err := tlsconfig.AuthorizeID(ids.ServerID(td))(fakeID, fakeChains); err != nil {
		t.Fatalf("the attack needs an ID check alone to pass: %v", err)
	}
	if err := ids.AuthorizeServer(td)(fakeID, fakeChains); err == nil {
		t.Fatal("a certificate for the server's ID signed under a downstream CA was taken for the control plane")
	}
	// ...but the control plane takes only SVIDs it signed.
	raw := [][]byte{leaf.Raw, chain[0].Raw, chain[1].Raw}
	if _, err := h.srv.peers.Verify(raw); !errors.Is(err, identity.ErrDownstream) {
		t.Fatalf("control plane verifying the nested server's SVID: %v, want ErrDownstream", err)
	}
	nestedCert := &tls.Certificate{Certificate: raw, PrivateKey: leafKey}
	if err := h.client("", nestedCert).Do(ctx, http.MethodGet, "/v1/workload/sync", nil, nil); err == nil {
		t.Fatal("the nested server's SVID called the control plane")
	}
	// A CA minted by a CA minted here: refused at the handshake, so no
	// chain of nested servers grows from one entry.
	if err := h.client("", nestedCert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil); err == nil {
		t.Fatal("an SVID under the downstream CA minted another CA")
	}

	// The CA is revocable by serial, as an issued certificate.
	var rev api.RevokeResponse
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{Serial: resp.Serial, Reason: "nested server retired"}, &rev); err != nil || len(rev.Revoked) != 1 {
		t.Fatalf("revoke the downstream CA: %v %+v", err, rev)
	}

	// A requested TTL shorter than the maximum is kept.
	var short api.DownstreamResponse
	if err := h.client("", cert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr, TTLSeconds: 600}, &short); err != nil {
		t.Fatal(err)
	}
	if d := short.ExpiresAt.Sub(now); d > 10*time.Minute || d < 9*time.Minute {
		t.Fatalf("ttl_seconds 600: expires in %v", d)
	}
}

// Who gets no CA: a server with downstream CAs off; a workload whose
// entry is not downstream; one whose downstream entry expired or was
// deleted; a quarantined one; and a CSR that is not one, or whose
// signature does not verify. Each refusal is counted.
func TestDownstreamCARefused(t *testing.T) {
	ctx := context.Background()
	_, csr := downstreamRequest(t)

	off := newHarness(t)
	offCert, _ := off.entryWorkload("node-1", api.Entry{SpiffeID: "spiffe://example.org/nested", Downstream: true})
	wantStatus(t, off.client("", offCert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil), http.StatusForbidden, "--downstream-max-ttl")

	h := downstreamHarness(t)
	plain, _ := h.entryWorkload("node-1", api.Entry{SpiffeID: "spiffe://example.org/plain"})
	wantStatus(t, h.client("", plain).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil), http.StatusForbidden, "no unexpired downstream entry")

	cert, entryID := h.entryWorkload("node-2", api.Entry{SpiffeID: "spiffe://example.org/nested", Downstream: true})
	c := h.client("", cert)
	tampered := append([]byte(nil), csr...)
	tampered[len(tampered)-3] ^= 0xff
	wantStatus(t, c.Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: tampered}, nil), http.StatusBadRequest, "signature")
	wantStatus(t, c.Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: []byte("not a csr")}, nil), http.StatusBadRequest, "PKCS#10")

	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines", respond.QuarantineRequest{Identity: "spiffe://example.org/nested", Reason: "stolen"}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.client("", cert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil), http.StatusForbidden, "quarantined")
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: "spiffe://example.org/nested", Reason: "cleaned and re-keyed"}, nil); err != nil {
		t.Fatal(err)
	}

	// Expired: the entry ends in a minute (the SVID signed before lives
	// on), and the clock passes it.
	var e api.Entry
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/entries/"+entryID, nil, &e); err != nil {
		t.Fatal(err)
	}
	e.ExpiresAt = h.clk.Now().Add(time.Minute)
	if err := h.admin.Do(ctx, http.MethodPut, "/v1/entries/"+entryID, e, nil); err != nil {
		t.Fatal(err)
	}
	h.clk.Add(2 * time.Minute)
	wantStatus(t, h.client("", cert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil), http.StatusForbidden, "no unexpired downstream entry")
	if err := h.admin.Do(ctx, http.MethodDelete, "/v1/entries/"+entryID, nil, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.client("", cert).Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr}, nil), http.StatusForbidden, "no unexpired downstream entry")
	if n := testutil.ToFloat64(h.srv.metrics.downstreamCAs.WithLabelValues("refused")); n < 6 {
		t.Fatalf("refused counter %v, want 6", n)
	}
	if n := testutil.ToFloat64(h.srv.metrics.downstreamCAs.WithLabelValues("minted")); n != 0 {
		t.Fatalf("minted counter %v, want 0", n)
	}
}
