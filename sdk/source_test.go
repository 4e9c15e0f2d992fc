package sdk

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/workload/endpoint"
	"github.com/rampartsec/rampart/sdk/sdktest"
)

var exampleTD = spiffeid.RequireTrustDomainFromString("example.org")

// With WithX509Source, New opens no socket: neither a missing socket nor a
// malformed agent uid in the environment matters.
func TestWithX509SourceNeedsNoAgent(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/workload.sock")
	t.Setenv("RAMPART_AGENT_UID", "not-a-uid")
	ca := sdktest.NewCA(exampleTD)
	id := spiffeid.RequireFromPath(exampleTD, "/payments")
	s, err := New(context.Background(), WithX509Source(ca.SVID(id), ca.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID() != id {
		t.Fatalf("ID = %s", s.ID())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Without the option the same environment is an error naming it.
	if _, err := New(context.Background()); err == nil || !strings.Contains(err.Error(), "RAMPART_AGENT_UID") {
		t.Fatalf("New without a source: %v", err)
	}
}

type svidFunc func() (*x509svid.SVID, error)

func (f svidFunc) GetX509SVID() (*x509svid.SVID, error) { return f() }

func TestWithX509SourceRefusesHalfASource(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	ca := sdktest.NewCA(exampleTD)
	sv := ca.SVID(spiffeid.RequireFromPath(exampleTD, "/payments"))
	for _, tt := range []struct {
		name    string
		opt     Option
		wantErr string
	}{
		{"no bundles", WithX509Source(sv, nil), "needs both"},
		{"no svids", WithX509Source(nil, ca.Bundle()), "needs both"},
		{"failing source", WithX509Source(svidFunc(func() (*x509svid.SVID, error) { return nil, errors.New("no SVID yet") }), ca.Bundle()), "no SVID yet"},
		{"empty SVID", WithX509Source(svidFunc(func() (*x509svid.SVID, error) { return nil, nil }), ca.Bundle()), "gave no SVID"},
	} {
		if _, err := New(context.Background(), tt.opt); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

// The source is asked at every handshake, so a rotating source (the
// Workload API's) rotates both the certificate the service presents and
// the one its client presents, without restarting anything.
func TestX509SourceRotates(t *testing.T) {
	t.Setenv("RAMPART_SERVER", "")
	ca := sdktest.NewCA(exampleTD)
	paymentsID := spiffeid.RequireFromPath(exampleTD, "/payments")
	ordersID := spiffeid.RequireFromPath(exampleTD, "/orders")
	var paySVID, ordSVID atomic.Pointer[x509svid.SVID]
	paySVID.Store(ca.SVID(paymentsID))
	ordSVID.Store(ca.SVID(ordersID))
	payments, err := New(context.Background(), WithX509Source(svidFunc(func() (*x509svid.SVID, error) { return paySVID.Load(), nil }), ca.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	orders, err := New(context.Background(), WithX509Source(svidFunc(func() (*x509svid.SVID, error) { return ordSVID.Load(), nil }), ca.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, payments, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.PeerCertificates[0].SerialNumber.Text(16))
	}), true)
	// call makes a new connection and returns the serials of the server's
	// certificate and of the client's, as the server saw it.
	call := func() (server, client string) {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, orders.ClientTLSConfig(paymentsID))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), b.String()
	}
	serial := func(p *atomic.Pointer[x509svid.SVID]) string { return p.Load().Certificates[0].SerialNumber.Text(16) }
	if s, c := call(); s != serial(&paySVID) || c != serial(&ordSVID) {
		t.Fatalf("before rotation: server %s client %s", s, c)
	}
	paySVID.Store(ca.SVID(paymentsID))
	ordSVID.Store(ca.SVID(ordersID))
	if s, c := call(); s != serial(&paySVID) || c != serial(&ordSVID) {
		t.Fatalf("after rotation: server presented %s (want %s), client %s (want %s)", s, serial(&paySVID), c, serial(&ordSVID))
	}
}

// DefaultSocket is written out for the documentation; it must stay the
// agent's.
func TestDefaultSocket(t *testing.T) {
	if want := endpoint.SystemDir + "/" + endpoint.SocketName; DefaultSocket != want {
		t.Fatalf("DefaultSocket = %q, the agent serves %q", DefaultSocket, want)
	}
	if got := endpoint.ClientPath(0, func(string) string { return "" }); got != DefaultSocket {
		t.Fatalf("root's socket is %q, DefaultSocket %q", got, DefaultSocket)
	}
}
