package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/upstream"
)

// inboundTLS is an inbound listener over real TLS 1.3 (tickets issued,
// sessions resumed), its guard deciding with a test clock, in front of an
// app that echoes the verified caller.
type inboundTLS struct {
	addr   string
	now    atomic.Int64 // unix nanoseconds; the guard's and the TLS stack's clock
	revs   *mtls.Revocations
	client *x509svid.SVID
	cfg    *tls.Config // the client's
}

func (x *inboundTLS) clock() time.Time { return time.Unix(0, x.now.Load()) }

func newInboundTLS(t *testing.T) *inboundTLS {
	t.Helper()
	pki := newTestPKI(t)
	x := &inboundTLS{revs: &mtls.Revocations{}}
	x.now.Store(time.Now().UnixNano())
	server := pki.svid(t, "/payments")
	x.client = pki.svid(t, "/orders")
	p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n  - name: all\n    callers: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	guard := authz.NewGuard(authz.GuardConfig{Service: server.ID, Revocations: x.revs, Now: x.clock})
	guard.SetPolicy(eng)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "caller="+r.Header.Get("X-Rampart-Caller"))
	})}
	go appSrv.Serve(app)
	t.Cleanup(func() { appSrv.Close() })
	m := newMetrics(prometheus.NewRegistry())
	appAddr := app.Addr().String()
	f := &h1Forwarder{guard: guard, m: m.forDirection("inbound"), log: slog.New(slog.DiscardHandler), conns: newConnSet(),
		pool: newPool(func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", appAddr)
		}, upstream.Limits{}, nil),
		badGateway: func(err error) string { return err.Error() }}
	tlsCfg := mtls.ServerConfig(mtls.Options{SVID: server, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(pki.td),
		Revocations: x.revs, Now: x.clock})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		serveInbound(context.Background(), ln, tlsCfg, authz.NewConns(&mtls.Quarantine{Self: server.ID}), f, newConnListener(ln.Addr()), m)
		close(done)
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.conns.shutdown(ctx)
		<-done
		f.pool.closeAll()
	})
	x.cfg = mtls.ClientConfig(mtls.Options{SVID: x.client, Bundles: pki.bundle(), Authorize: tlsconfig.AuthorizeID(server.ID), Now: x.clock})
	x.cfg.NextProtos = []string{"http/1.1"}
	return x
}

type tlsClientConn struct {
	*tls.Conn
	br *bufio.Reader
}

func (x *inboundTLS) dial(t *testing.T) (*tlsClientConn, error) {
	t.Helper()
	c, err := (&mtls.Dialer{Config: x.cfg}).DialContext(context.Background(), "tcp", x.addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &tlsClientConn{Conn: c.(*tls.Conn), br: bufio.NewReader(c)}, nil
}

func (c *tlsClientConn) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: payments\r\n\r\n", path)
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A resumed session is judged like any other: the guard finds the caller's
// certificate on it (carried over from the first handshake), and refuses
// the next request on it once that certificate is revoked, or expired;
// a new connection cannot resume it either.
func TestResumedSessionStillCheckedPerRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		breaks func(x *inboundTLS)
		want   string
	}{
		{"revoked", func(x *inboundTLS) { x.revs.Set([]string{x.client.Certificates[0].SerialNumber.Text(16)}) }, "revoked"},
		{"expired", func(x *inboundTLS) { x.now.Store(x.client.Certificates[0].NotAfter.Add(time.Second).UnixNano()) }, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newInboundTLS(t)
			first, err := x.dial(t)
			if err != nil {
				t.Fatal(err)
			}
			if resp, body := first.get(t, "/a"); resp.StatusCode != 200 || body != "caller=spiffe://example.org/orders" {
				t.Fatalf("first connection: %d %s", resp.StatusCode, body)
			}
			first.Close()
			resumed, err := x.dial(t)
			if err != nil {
				t.Fatal(err)
			}
			if !resumed.ConnectionState().DidResume {
				t.Fatal("the second connection did not resume the first one's session")
			}
			if resp, body := resumed.get(t, "/b"); resp.StatusCode != 200 || body != "caller=spiffe://example.org/orders" {
				t.Fatalf("resumed connection: %d %s", resp.StatusCode, body)
			}
			tc.breaks(x)
			resp, body := resumed.get(t, "/c")
			if resp.StatusCode != http.StatusUnauthorized || !resp.Close || !strings.Contains(body, tc.want) {
				t.Fatalf("on the resumed connection after the certificate was %s: %d close=%v %s, want 401 naming it and a close", tc.name, resp.StatusCode, resp.Close, body)
			}
			if c, err := x.dial(t); err == nil {
				if resp, err := c.Write([]byte("GET /d HTTP/1.1\r\nHost: payments\r\n\r\n")); err == nil && resp > 0 {
					if r, err := http.ReadResponse(c.br, nil); err == nil && r.StatusCode == 200 {
						t.Fatalf("a new connection with the %s certificate was served (resumed %v)", tc.name, c.ConnectionState().DidResume)
					}
				}
			}
		})
	}
}

// Past three quarters of the caller's certificate life, the answer asks it
// to reconnect, and the reconnection is a full handshake (the ticket is
// declined), so the caller presents its rotated SVID, which the guard sees.
func TestStaleSessionReconnectsInFull(t *testing.T) {
	x := newInboundTLS(t)
	first, err := x.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	first.get(t, "/a")
	first.Close()
	x.now.Store(time.Now().Add(50 * time.Minute).UnixNano()) // of a 60-minute SVID
	c, err := x.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().DidResume {
		t.Fatal("a session whose certificate is due for rotation was resumed")
	}
	if resp, _ := c.get(t, "/b"); !resp.Close {
		t.Fatal("the answer to a caller whose certificate is due for rotation did not ask it to reconnect")
	}
}
