package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/identity"
)

// A forwarding replica ships the audit log only to another server: a
// listener presenting a workload SVID of the same trust domain (a
// compromised service posing as the holder) is refused at the handshake.
func TestReplicaClientTLSAcceptsOnlyAServer(t *testing.T) {
	h := newHarness(t)
	s := h.srv
	serve := func(id spiffeid.ID) string {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		chain, err := s.ca.SignX509SVID(id, key.Public(), time.Hour, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
		for _, c := range chain {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	dial := func(addr string) error {
		c, err := tls.Dial("tcp", addr, s.replicaClientTLS())
		if err == nil {
			c.Close()
		}
		return err
	}
	good := serve(identity.ServerID(td))
	if err := dial(good); err != nil {
		t.Fatalf("a server SVID refused: %v", err)
	}
	impostor := serve(spiffeid.RequireFromString("spiffe://" + td.Name() + "/orders"))
	if err := dial(impostor); err == nil || !strings.Contains(err.Error(), "not spiffe://"+td.Name()+"/rampart/server") {
		t.Fatalf("a workload SVID posing as the holder: %v", err)
	}
}
