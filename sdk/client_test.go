package sdk

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk/sdktest"
)

// newSource is a Source for spiffe://TD/NAME made by New from ca's SVID,
// without an agent and without a server.
func newSource(t *testing.T, ca *sdktest.CA, name string, opts ...Option) *Source {
	t.Helper()
	t.Setenv("RAMPART_SERVER", "")
	id := spiffeid.RequireFromPath(ca.TrustDomain(), "/"+name)
	s, err := New(context.Background(), append([]Option{WithX509Source(ca.SVID(id), ca.Bundle())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// serveTLS serves h with the SDK's server TLS configuration (HTTP/2 unless
// h1 is asked) and returns its address.
func serveTLS(t *testing.T, s *Source, h http.Handler, h1 bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: s.ServerTLSConfig()}
	if h1 {
		srv.TLSConfig.NextProtos = []string{"http/1.1"}
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// The SDK's Middleware removes forged identity headers, the built-in ones
// and those named with WithStripHeaders, and its client reaches the server
// over HTTP/2 with mutual TLS.
func TestSDKStripsForgedIdentityHeaders(t *testing.T) {
	ca := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	ledger := newSource(t, ca, "ledger", WithStripHeaders("X-Ledger-User", "x_ledger_claim_*"))
	if err := ledger.SetPolicy([]byte("service: spiffe://example.org/ledger\nrules:\n  - name: all\n    callers: ['*']\n")); err != nil {
		t.Fatal(err)
	}
	got := make(chan http.Header, 1)
	addr := serveTLS(t, ledger, ledger.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	})), false)
	orders := newSource(t, ca, "orders")
	c := orders.HTTPClient(ledger.ID())
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/x", nil)
	forged := []string{"X-Spiffe-Id", "X-Peer-Identity", "X-Client-Cert", "X-Remote-User", "X-Forwarded-User", "X-Auth-Request-Email",
		"X-Ms-Client-Principal-Name", "X-Ledger-User", "X-Ledger-Claim-Role"}
	for _, f := range forged {
		req.Header.Set(f, "spiffe://example.org/admin")
	}
	req.Header.Set("X-Ledger-Other", "kept")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	h := <-got
	for _, f := range forged {
		if v := h.Values(f); len(v) > 0 {
			t.Errorf("the handler received %s: %q", f, v)
		}
	}
	if h.Get("X-Ledger-Other") != "kept" {
		t.Error("a header not named was removed")
	}
	if _, err := New(context.Background(), WithStripHeaders("X Ledger"), WithSocket("/nonexistent")); err == nil || !strings.Contains(err.Error(), "WithStripHeaders") {
		t.Errorf("a bad header name: %v", err)
	}
}

// The SDK's client keeps to its limits: with its one connection busy on a
// slow server, a second request waits and fails with ErrOverloaded at the
// queue timeout, a third at once (the queue full); neither reaches the
// server, and once the server answers, requests pass again.
func TestSDKClientLimits(t *testing.T) {
	ca := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	ledger := newSource(t, ca, "ledger")
	release := make(chan struct{})
	var served atomic.Int64
	addr := serveTLS(t, ledger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Path == "/slow" {
			<-release
		}
	}), true)
	orders := newSource(t, ca, "orders")
	c := orders.HTTPClient(ledger.ID(), WithClientLimits(ClientLimits{MaxConns: 1, MaxPending: 1, QueueTimeout: 300 * time.Millisecond}))
	slow := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	for served.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Two more: one waits in the queue (room for one) until its timeout,
	// the other is refused at once, whichever comes second.
	errs := make(chan error, 2)
	for _, p := range []string{"/a", "/b"} {
		go func() {
			_, err := c.Get("https://" + addr + p)
			errs <- err
		}()
	}
	var full, timedOut int
	for range 2 {
		err := <-errs
		switch {
		case !errors.Is(err, ErrOverloaded):
			t.Fatalf("got %v, want ErrOverloaded", err)
		case strings.Contains(err.Error(), "queue full"):
			full++
		case strings.Contains(err.Error(), "busy for"):
			timedOut++
		}
	}
	if full != 1 || timedOut != 1 {
		t.Fatalf("%d refused for a full queue, %d at the queue timeout; want one each", full, timedOut)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("the server saw %d requests, want 1", n)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get("https://" + addr + "/after")
	if err != nil {
		t.Fatalf("after the load: %v", err)
	}
	resp.Body.Close()
}
