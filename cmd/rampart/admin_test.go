package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/identity/ids"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// The admin CLI sends the admin token only to the server: a TLS
// certificate ACME issued from the same CA for the address the CLI
// dials (the name of another replica, say) chains to the bundle, and
// must still be refused for lacking the server's SPIFFE ID.
func TestAdminClientRefusesACMECertificates(t *testing.T) {
	dir := t.TempDir()
	w, err := keywrap.LoadOrCreateFile(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := identity.New(t.Context(), identity.Config{TrustDomain: td, Store: storetest.SQLite(t, dir), Wrapper: w})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, identity.EncodePEM(ca.X509Bundle()), 0o644); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	acmeChain, err := ca.SignTLS(key.Public(), identity.TLSCert{IPs: loopback, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	serverChain, err := ca.SignX509SVID(ids.ServerID(td), key.Public(), time.Hour, nil, loopback)
	if err != nil {
		t.Fatal(err)
	}
	call := func(chain []*x509.Certificate) (tokenSeen string, err error) {
		ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tokenSeen = r.Header.Get("Authorization")
			w.Write([]byte("{}"))
		}))
		c := tls.Certificate{PrivateKey: key}
		for _, x := range chain {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		ts.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
		ts.StartTLS()
		defer ts.Close()
		a := &adminFlags{server: ts.Listener.Addr().String(), bundle: bundle, token: &secretFlag{name: "admin-token", value: "rpa_secret"}}
		cl, err := a.client(&cliEnv{})
		if err != nil {
			t.Fatal(err)
		}
		err = cl.Do(context.Background(), http.MethodGet, "/v1/ca", nil, nil)
		return tokenSeen, err
	}
	seen, err := call(acmeChain)
	if err == nil || !strings.Contains(err.Error(), "not the Rampart server's") || seen != "" {
		t.Fatalf("an ACME certificate for the server's address: err %v, token seen %q", err, seen)
	}
	if seen, err := call(serverChain); err != nil || seen != "Bearer rpa_secret" {
		t.Fatalf("the server's certificate: err %v, token seen %q", err, seen)
	}
}
