package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a minimal CA built in code (go-spiffe's test PKI habit).
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64 = 100

func newCA(t *testing.T, td string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{d.ID().URL()}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: d, cert: cert, key: key}
}

func (ca *testCA) svid(t *testing.T, path string, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(ca.td, path)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()}, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

type reasons struct {
	mu  sync.Mutex
	got []string
}

func (r *reasons) add(s string) { r.mu.Lock(); r.got = append(r.got, s); r.mu.Unlock() }

// handshake runs one TLS 1.3 handshake over loopback TCP and returns both
// errors and the peer the server verified.
func handshake(serverCfg, clientCfg *tls.Config) (peer spiffeid.ID, serverErr, clientErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return peer, err, err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		raw, err := ln.Accept()
		if err != nil {
			serverErr = err
			return
		}
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(raw, serverCfg)
		serverErr = s.Handshake()
		if serverErr == nil {
			cs := s.ConnectionState()
			peer, _ = PeerID(&cs)
			// TLS 1.3 clients learn of a refused certificate on first read.
			s.Write([]byte("x"))
		}
		s.Close()
	})
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return peer, err, err
	}
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, clientCfg)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	c.Close()
	wg.Wait()
	return peer, serverErr, clientErr
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "example.org")
	other := newCA(t, "evil.org")
	impostor := newCA(t, "example.org") // same trust domain name, another key
	server := ca.svid(t, "/payments", time.Now().Add(time.Hour))
	revoked := ca.svid(t, "/orders", time.Now().Add(time.Hour))
	revs := &Revocations{}
	revs.Set([]string{revoked.Certificates[0].SerialNumber.Text(16)})

	tests := []struct {
		name       string
		client     *x509svid.SVID
		expect     spiffeid.ID // the server ID the client insists on
		wantOK     bool
		wantReason string
	}{
		{"valid", ca.svid(t, "/orders", time.Now().Add(time.Hour)), server.ID, true, ""},
		{"revoked client", revoked, server.ID, false, ReasonRevoked},
		{"expired client", ca.svid(t, "/orders", time.Now().Add(-time.Minute)), server.ID, false, ReasonUntrusted},
		{"foreign trust domain", other.svid(t, "/orders", time.Now().Add(time.Hour)), server.ID, false, ReasonUntrusted},
		{"impostor CA, same domain", impostor.svid(t, "/orders", time.Now().Add(time.Hour)), server.ID, false, ReasonUntrusted},
		{"server is not who the client expects", ca.svid(t, "/orders", time.Now().Add(time.Hour)), spiffeid.RequireFromString("spiffe://example.org/billing"), false, ReasonUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r reasons
			srvCfg := ServerConfig(Options{SVID: server, Bundles: ca.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(ca.td), Revocations: revs, OnFail: r.add})
			// The client trusts both CAs of its own, so refusals come from the server.
			cliCfg := ClientConfig(Options{SVID: tt.client, Bundles: x509bundle.NewSet(ca.bundle(), other.bundle()), Authorize: tlsconfig.AuthorizeID(tt.expect), OnFail: r.add})
			peer, serr, cerr := handshake(srvCfg, cliCfg)
			if tt.wantOK {
				if serr != nil || cerr != nil || peer != tt.client.ID {
					t.Fatalf("handshake failed: server %v, client %v, peer %v", serr, cerr, peer)
				}
				if srvCfg.MinVersion != tls.VersionTLS13 {
					t.Fatal("TLS below 1.3 allowed")
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.got) == 0 || r.got[0] != tt.wantReason {
				t.Fatalf("reasons %v, want %s", r.got, tt.wantReason)
			}
		})
	}
}

func TestRevocationsZeroValue(t *testing.T) {
	var r Revocations
	if r.Revoked("1") {
		t.Fatal("empty set revokes")
	}
	r.Set([]string{"a", "b"})
	if !r.Revoked("a") || r.Revoked("c") {
		t.Fatal("Set")
	}
	var nilRevs *Revocations
	if nilRevs.Revoked("a") {
		t.Fatal("nil set revokes")
	}
}

// downstream is a CA the trust domain's CA signed for a workload (SPIRE's
// downstream entries): its SVIDs chain leaf, downstream CA, root.
func (ca *testCA) downstream(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{ca.td.ID().URL()}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: ca.td, cert: cert, key: key}
}

// A revoked downstream CA takes the SVIDs it signed with it: their own
// serials were never revoked (the control plane never saw them), but the
// chain holds a revoked certificate. Refused at the handshake and by
// RevokedChain, which the per-request guard asks.
func TestRevokedDownstreamCA(t *testing.T) {
	ca := newCA(t, "example.org")
	server := ca.svid(t, "/payments", time.Now().Add(time.Hour))
	good, bad := ca.downstream(t), ca.downstream(t)
	revs := &Revocations{}
	revs.Set([]string{bad.cert.SerialNumber.Text(16)})
	for _, tc := range []struct {
		name string
		ds   *testCA
		ok   bool
	}{{"downstream CA not revoked", good, true}, {"downstream CA revoked", bad, false}} {
		t.Run(tc.name, func(t *testing.T) {
			client := tc.ds.svid(t, "/batch", time.Now().Add(time.Hour))
			client.Certificates = append(client.Certificates, tc.ds.cert)
			if got := revs.RevokedChain(client.Certificates); (got == nil) != tc.ok {
				t.Fatalf("RevokedChain: %v", got)
			}
			var r reasons
			srvCfg := ServerConfig(Options{SVID: server, Bundles: ca.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(ca.td), Revocations: revs, OnFail: r.add})
			cliCfg := ClientConfig(Options{SVID: client, Bundles: ca.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
			_, serr, cerr := handshake(srvCfg, cliCfg)
			if ok := serr == nil && cerr == nil; ok != tc.ok {
				t.Fatalf("handshake: server %v, client %v; want ok=%v", serr, cerr, tc.ok)
			}
			if !tc.ok && (len(r.got) == 0 || r.got[0] != ReasonRevoked) {
				t.Fatalf("reasons %v, want %s", r.got, ReasonRevoked)
			}
		})
	}
}
