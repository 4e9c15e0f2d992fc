package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/upstream"
)

func TestDefaultConnLimits(t *testing.T) {
	up := upstream.DefaultLimits() // 1024 connections to each upstream
	for _, tc := range []struct {
		name      string
		nofile    uint64
		inbound   bool
		outbounds int
		want      ConnLimits
		low       bool
	}{
		// The red team's proxy: 20,000 descriptors. 256 + 1,024 to the app
		// are left to the rest of the proxy.
		{"inbound, 20000", 20000, true, 0, ConnLimits{InboundConns: 18720, InboundHandshakes: 1024, OutboundConns: 16}, false},
		{"inbound and one outbound", 20000, true, 1, ConnLimits{InboundConns: 8848, InboundHandshakes: 1024, OutboundConns: 8848}, false},
		{"two outbounds only", 20000, false, 2, ConnLimits{InboundConns: 16, InboundHandshakes: 8, OutboundConns: 8336}, false},
		// Too few for the reserve: the listeners get a quarter.
		{"inbound, 1024", 1024, true, 0, ConnLimits{InboundConns: 256, InboundHandshakes: 64, OutboundConns: 16}, true},
		{"inbound, 64", 64, true, 0, ConnLimits{InboundConns: 16, InboundHandshakes: 8, OutboundConns: 16}, true},
		{"a million", 1 << 20, true, 0, ConnLimits{InboundConns: 1<<20 - 1280, InboundHandshakes: 1024, OutboundConns: 16}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, low := DefaultConnLimits(tc.nofile, up, tc.inbound, tc.outbounds)
			if got != tc.want || low != tc.low {
				t.Fatalf("DefaultConnLimits(%d) = %+v, low %v; want %+v, low %v", tc.nofile, got, low, tc.want, tc.low)
			}
			if err := got.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConnLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		l    ConnLimits
		want string
	}{
		{ConnLimits{InboundConns: -1}, "must not be negative"},
		{ConnLimits{InboundConns: 50, InboundHandshakes: 51}, "--inbound-max-handshakes 51 is above --inbound-max-conns 50"},
	} {
		if err := tc.l.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.l, err, tc.want)
		}
	}
	if err := (ConnLimits{InboundHandshakes: 20}).Validate(); err != nil {
		t.Errorf("handshakes with derived connections: %v", err)
	}
}

// connLimitServer serves mTLS on an inbound listener bounded to conns
// connections and handshakes handshakes, answering 200 to every request.
func connLimitServer(t *testing.T, conns, handshakes int) (addr string, client *http.Client, dialTLS func() (*tls.Conn, error), lim *connLimit) {
	t.Helper()
	pki := newTestPKI(t)
	server, caller := pki.svid(t, "/payments"), pki.svid(t, "/orders")
	m := newMetrics(prometheus.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim = newConnLimit(conns, handshakes, m, "inbound", ln.Addr().String())
	srvCfg := mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td)})
	h2 := newConnListener(ln.Addr())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(h2) })
	wg.Go(func() { serveInbound(ctx, lim.listener(ln), srvCfg, nil, nil, h2, m) })
	t.Cleanup(func() { cancel(); ln.Close(); srv.Close(); h2.Close(); wg.Wait() })
	cliCfg := mtls.ClientConfig(mtls.Options{SVID: caller, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID)})
	client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cliCfg, DisableKeepAlives: true, ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	dialTLS = func() (*tls.Conn, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cliCfg}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return c.(*tls.Conn), nil
	}
	return ln.Addr().String(), client, dialTLS, lim
}

// waitNil polls cond until it returns nil (the server's own progress),
// failing with its last error after 20 s (a bound, not a pace).
func waitNil(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *connLimit) counts() (open, handshakes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.handshakes.Len()
}

// Stalled handshakes (connections that never send a byte) take at most
// the handshake bound, the oldest cut for each newer one; a caller that
// completes its handshake gets in while they are held. Connections that
// finished theirs take at most the connection bound; beyond it a new one
// is closed as it is accepted, and counted.
func TestInboundConnectionBounds(t *testing.T) {
	const conns, handshakes, flood = 50, 20, 200
	addr, client, dialTLS, lim := connLimitServer(t, conns, handshakes)
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	before := fds()
	var stalled []net.Conn
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	waitNil(t, "the flood taken in", func() error {
		if ev := testutil.ToFloat64(lim.evicted); ev != flood-handshakes {
			open, hs := lim.counts()
			return fmt.Errorf("%v handshakes cut, %d open, %d in handshakes, %v refused", ev, open, hs, testutil.ToFloat64(lim.refused))
		}
		return nil
	})
	// The connection a new one evicts is closed just after admit returns:
	// for that moment the listener holds one more than the bound.
	if open, hs := lim.counts(); open > handshakes+1 || hs > handshakes {
		t.Fatalf("the listener holds %d connections, %d in handshakes, under a flood of %d stalled ones (bound %d)", open, hs, flood, handshakes)
	}
	waitNil(t, "the evicted connection closed", func() error {
		if open, hs := lim.counts(); open > handshakes || hs > handshakes {
			return fmt.Errorf("the listener holds %d connections, %d in handshakes, under a flood of %d stalled ones (bound %d)", open, hs, flood, handshakes)
		}
		return nil
	})
	// This process holds both ends: the flood's client ends, and the
	// server's ends the handshake bound lets it keep.
	if n := fds(); n > before+flood+handshakes+16 {
		t.Fatalf("%d descriptors open, %d before a flood of %d (bound %d server-side)", n, before, flood, handshakes)
	}
	resp, err := client.Get("https://" + addr + "/x")
	if err != nil {
		t.Fatalf("a caller that completes its handshake, during the flood: %v", err)
	}
	resp.Body.Close()
	for _, c := range stalled {
		c.Close()
	}
	waitNil(t, "the stalled connections closed", func() error {
		if open, _ := lim.counts(); open != 0 {
			return fmt.Errorf("%d open", open)
		}
		return nil
	})

	// Finished handshakes fill the connection bound.
	var held []*tls.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range conns {
		c, err := dialTLS()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitNil(t, "the connections counted", func() error {
		if open, hs := lim.counts(); open != conns || hs != 0 {
			return fmt.Errorf("%d open, %d in handshakes", open, hs)
		}
		return nil
	})
	if c, err := dialTLS(); err == nil {
		// TLS 1.3: the client's handshake may end before the server has
		// read its Finished; the refusal shows at the first read.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection beyond --inbound-max-conns was served")
		}
		c.Close()
	}
	if n := testutil.ToFloat64(lim.refused); n != 1 {
		t.Fatalf("%v connections refused at the bound, want 1", n)
	}
	// One closes: a new caller gets its place.
	held[0].Close()
	held = held[1:]
	waitNil(t, "a place freed", func() error {
		if open, _ := lim.counts(); open != conns-1 {
			return fmt.Errorf("%d open", open)
		}
		return nil
	})
	resp, err = client.Get("https://" + addr + "/x")
	if err != nil {
		t.Fatalf("a caller once a place was free: %v", err)
	}
	resp.Body.Close()
}
