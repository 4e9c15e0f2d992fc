package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// mesh is a server, an agent, and named proxy binaries with identities.
type mesh struct {
	t      *testing.T
	s      *server
	a      *agent
	binDir string
}

func newMesh(t *testing.T) *mesh {
	s, a := setup(t)
	return &mesh{t: t, s: s, a: a, binDir: t.TempDir()}
}

// identity registers spiffe://example.org/NAME for a copy of the rampart
// binary at binDir/NAME-proxy: same uid, distinct executable path, so the
// agent attests each proxy as its own service.
func (m *mesh) identity(name string, ttl string) string {
	m.t.Helper()
	bin := filepath.Join(m.binDir, name+"-proxy")
	if _, err := os.Stat(bin); err != nil {
		b, err := os.ReadFile(rampartBin)
		if err != nil {
			m.t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			m.t.Fatal(err)
		}
	}
	args := []string{"entry", "create", "--spiffe-id", "spiffe://example.org/" + name, "--parent", agentID,
		"--selector", myUID(), "--selector", "unix:path:" + bin}
	if ttl != "" {
		args = append(args, "--ttl", ttl)
	}
	mustCLI(m.t, m.s.adminEnv(), args...)
	return bin
}

// proxy starts NAME's proxy with args and returns the addresses it listens on.
func (m *mesh) proxy(name string, args ...string) []string {
	m.t.Helper()
	_, addrs := m.proxyProc(name, args...)
	return addrs
}

// proxyProc is proxy, also returning the process.
func (m *mesh) proxyProc(name string, args ...string) (*proc, []string) {
	m.t.Helper()
	bin := filepath.Join(m.binDir, name+"-proxy")
	ready := filepath.Join(m.binDir, name+".ready")
	os.Remove(ready)
	cmd := append([]string{"proxy", "--socket", m.a.socket, "--server", m.s.addr, "--log-level", "debug"}, args...)
	p := startBin(m.t, bin, []string{"RAMPART_READY_FILE=" + ready}, cmd...)
	return p, strings.Split(strings.TrimRight(waitFile(m.t, p, ready), "\n"), "\n")
}

func (m *mesh) putPolicy(yaml string) {
	m.t.Helper()
	f := filepath.Join(m.binDir, fmt.Sprintf("policy-%d.yaml", time.Now().UnixNano()))
	os.WriteFile(f, []byte(yaml), 0o600)
	mustCLI(m.t, m.s.adminEnv(), "policy", "put", f)
}

// app is a plain HTTP service that reports what it received.
func app(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(map[string]any{
			"path": r.URL.Path, "raw_path": r.URL.RawPath, "caller": r.Header.Values("X-Rampart-Caller"),
			"xfcc": r.Header.Values("X-Forwarded-Client-Cert"), "other": r.Header.Get("X-Rampart-Admin"), "body": string(body),
			"user": r.Header.Values("X-Rampart-User"),
		})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

const paymentsPolicy = `service: spiffe://example.org/payments
rules:
  - name: orders-reads-payments
    callers: [spiffe://example.org/orders]
    methods: [GET]
    paths: ["/payments/{id}"]
  - name: orders-creates-payments
    callers: [spiffe://example.org/orders]
    methods: [POST]
    paths: [/payments]
`

type appSaw struct {
	Path    string   `json:"path"`
	RawPath string   `json:"raw_path"`
	Caller  []string `json:"caller"`
	XFCC    []string `json:"xfcc"`
	Other   string   `json:"other"`
	User    []string `json:"user"`
	Body    string   `json:"body"`
}

func get(t *testing.T, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rawRequest sends a request line as is (no client-side path cleaning).
func rawRequest(t *testing.T, addr, requestLine string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s\r\nHost: payments\r\nConnection: close\r\n\r\n", requestLine)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// App A → proxy → proxy → app B over mTLS, with the policy deciding.
func TestProxyPairEndToEnd(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.identity("rogue", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	outRogue := m.proxy("rogue", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]

	// Allowed, and the forged identity headers are replaced by the verified one.
	code, body := get(t, "http://"+outA+"/payments/42", map[string]string{"X-Rampart-Caller": "spiffe://example.org/admin", "X-Rampart-Admin": "yes", "X-Forwarded-Client-Cert": "URI=spiffe://example.org/admin"})
	if code != 200 {
		t.Fatalf("allowed call: %d %s", code, body)
	}
	var saw appSaw
	json.Unmarshal([]byte(body), &saw)
	if len(saw.Caller) != 1 || saw.Caller[0] != "spiffe://example.org/orders" || saw.Other != "" || len(saw.XFCC) != 1 || !strings.Contains(saw.XFCC[0], "URI=spiffe://example.org/orders") {
		t.Fatalf("app saw forged or missing identity: %+v", saw)
	}

	// Not in the policy: 403 with a problem naming only the version.
	code, body = get(t, "http://"+outA+"/admin", nil)
	if code != 403 || !strings.Contains(body, "policy version") || strings.Contains(body, "orders-reads-payments") {
		t.Fatalf("denied path: %d %s", code, body)
	}
	// Unlisted caller.
	if code, body = get(t, "http://"+outRogue+"/payments/42", nil); code != 403 {
		t.Fatalf("unlisted caller: %d %s", code, body)
	}

	// Path tricks to reach a denied path.
	for _, line := range []string{"GET /payments/%2e%2e/admin HTTP/1.1", "GET /payments/42/../../admin HTTP/1.1", "GET //admin HTTP/1.1", "GET /payments/..%2f..%2fadmin HTTP/1.1", "GET /payments/1%2F..%2F..%2Fadmin HTTP/1.1", "GET /%61dmin HTTP/1.1"} {
		code, body := rawRequest(t, outA, line)
		if code != 403 && code != 400 {
			t.Errorf("%s: got %d %s, want 403 or 400", line, code, body)
		}
	}
	// An equivalent spelling of an allowed path is normalised, allowed, and
	// forwarded in its normalised form.
	code, body = rawRequest(t, outA, "GET /payments/x/../%34%32 HTTP/1.1")
	json.Unmarshal([]byte(body), &saw)
	if code != 200 || saw.Path != "/payments/42" {
		t.Fatalf("normalised allowed path: %d %s", code, body)
	}

	// A policy change takes effect without a restart.
	m.putPolicy(paymentsPolicy + `  - name: orders-admin
    callers: [spiffe://example.org/orders]
    paths: [/admin]
`)
	eventually(t, 10*time.Second, "new policy in force", func() error {
		if code, _ := get(t, "http://"+outA+"/admin", nil); code != 200 {
			return fmt.Errorf("still %d", code)
		}
		return nil
	})
	if code, _ := get(t, "http://"+outRogue+"/admin", nil); code != 403 {
		t.Fatal("the new rule let an unlisted caller in")
	}
}

// Attacks on the inbound port itself.
func TestInboundRefusesUnauthenticated(t *testing.T) {
	m := newMesh(t)
	m.identity("payments", "")
	m.identity("orders", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]

	// Plain HTTP to the mTLS port.
	c, err := net.Dial("tcp", inB)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /payments/42 HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if strings.Contains(string(b), "orders") || strings.Contains(string(b), `"path"`) || (len(b) > 0 && !strings.Contains(string(b), "400")) {
		t.Fatalf("plain HTTP reached the app: %q", b)
	}

	// TLS without a client certificate.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(filepath.Join(m.s.dir, "bundle.pem"))
	pool.AppendCertsFromPEM(pem)
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, InsecureSkipVerify: true}}}
	if resp, err := noCert.Get("https://" + inB + "/payments/42"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %d", resp.StatusCode)
	}

	// A certificate from another CA naming an allowed caller.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://example.org/orders")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	foreign := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}}
	if resp, err := foreign.Get("https://" + inB + "/payments/42"); err == nil {
		resp.Body.Close()
		t.Fatalf("a foreign-CA certificate got %d", resp.StatusCode)
	}
}

// The outbound side refuses an upstream that is not who it should be.
func TestOutboundChecksUpstreamIdentity(t *testing.T) {
	m := newMesh(t)
	m.identity("payments", "")
	m.identity("orders", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	// orders expects "billing" at that address, but payments answers.
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/billing")[1]
	code, body := get(t, "http://"+outA+"/payments/42", nil)
	if code != http.StatusBadGateway || !strings.Contains(body, "billing") {
		t.Fatalf("wrong upstream identity: got %d %s, want 502", code, body)
	}
}

// SVIDs rotating every few seconds under continuous traffic: no request fails.
func TestRotationUnderTraffic(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "4s")
	m.identity("payments", "4s")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(7 * time.Second) // several rotations of both sides
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableKeepAlives: false}}
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				resp, err := client.Get("http://" + outA + "/payments/7")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					if err == nil {
						b, _ := io.ReadAll(resp.Body)
						t.Logf("failed request: %d %s", resp.StatusCode, b)
					} else {
						t.Logf("failed request: %v", err)
					}
				} else {
					ok.Add(1)
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	// Fresh connections too, so new handshakes happen across rotations.
	wg.Go(func() {
		for time.Now().Before(stop) {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			if resp, err := c.Get("http://" + outA + "/payments/8"); err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			} else {
				ok.Add(1)
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 100 {
		t.Fatalf("%d requests failed, %d succeeded across SVID rotations", failed.Load(), ok.Load())
	}
	t.Logf("%d requests across rotations, none failed", ok.Load())
}

// gRPC, unary and server streaming, through the proxy pair over HTTP/2.
func TestGRPCStreamingThroughProxies(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(`service: spiffe://example.org/payments
rules:
  - name: health
    callers: [spiffe://example.org/orders]
    methods: [POST]
    paths: ["/grpc.health.v1.Health/*"]
`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", ln.Addr().String(), "--app-protocol", "h2c")[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]

	conn, err := grpc.NewClient(outA, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary gRPC through the proxies: %v %v", resp, err)
	}
	stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	hs.SetServingStatus("payments", healthpb.HealthCheckResponse_SERVING)
	var seen []healthpb.HealthCheckResponse_ServingStatus
	for len(seen) < 3 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream after %v: %v", seen, err)
		}
		seen = append(seen, msg.Status)
		switch len(seen) {
		case 1:
			hs.SetServingStatus("payments", healthpb.HealthCheckResponse_NOT_SERVING)
		case 2:
			hs.SetServingStatus("payments", healthpb.HealthCheckResponse_SERVING)
		}
	}
	if seen[len(seen)-1] != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("stream updates %v", seen)
	}
	// A method outside the policy is refused as a gRPC error.
	err = conn.Invoke(ctx, "/grpc.reflection.v1.ServerReflection/Nope", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if err == nil {
		t.Fatal("a gRPC method outside the policy was allowed")
	}
}

// Request smuggling (CL.TE): the proxy parses the ambiguous request once, by
// Transfer-Encoding as RFC 9112 6.3 requires, and re-frames it for the app,
// so the smuggled prefix never becomes a request of its own; conflicting
// Content-Length headers are refused outright.
func TestRequestSmugglingRefused(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(paymentsPolicy)
	var mu sync.Mutex
	var seen []string
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" body="+string(b))
		mu.Unlock()
	})}
	go srv.Serve(ln)
	defer srv.Close()
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", ln.Addr().String())[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]

	c, err := net.Dial("tcp", outA)
	if err != nil {
		t.Fatal(err)
	}
	// Content-Length says 35 bytes of body; chunked framing says the body
	// ends at "0\r\n\r\n" and what follows is a second request to /admin.
	smuggle := "POST /payments HTTP/1.1\r\nHost: p\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
	c.Write([]byte(smuggle))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var codes []int
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "/admin") {
			t.Fatalf("smuggled request reached the app: %v (responses %v)", seen, codes)
		}
	}
	if len(seen) != 1 || seen[0] != "POST /payments body=" {
		t.Fatalf("app saw %v; want exactly the POST with an empty chunked body", seen)
	}
	// The trailing "GET /admin" was read as the next request on the
	// connection and judged by the policy like any other: denied.
	if len(codes) != 2 || codes[0] != 200 || codes[1] != 403 {
		t.Fatalf("responses %v, want [200 403]", codes)
	}

	code, _ := rawRequest(t, outA, "POST /payments HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2")
	if code != 400 {
		t.Fatalf("conflicting Content-Length: got %d, want 400", code)
	}
}

// rampart policy test and explain, as a user's CI would run them.
func TestPolicyCLI(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "payments.yaml")
	os.WriteFile(pol, []byte(paymentsPolicy), 0o600)
	tests := filepath.Join(dir, "tests.yaml")
	os.WriteFile(tests, []byte(`tests:
  - name: orders reads a payment
    request: {caller: spiffe://example.org/orders, method: GET, path: /payments/1}
    expect: allow
    rule: orders-reads-payments
  - name: rogue is refused
    request: {caller: spiffe://example.org/rogue, method: GET, path: /payments/1}
    expect: deny
`), 0o600)
	out, err := cli(t, nil, "policy", "test", pol, tests)
	if err != nil || !strings.Contains(out, "2 passed, 0 failed") {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	os.WriteFile(tests, []byte(`tests:
  - name: wrong expectation
    request: {caller: spiffe://example.org/rogue, path: /payments/1}
    expect: allow
`), 0o600)
	out, err = cli(t, nil, "policy", "test", pol, tests)
	if err == nil || !strings.Contains(out, "FAIL  wrong expectation") {
		t.Fatalf("a failing policy test passed: %v\n%s", err, out)
	}
	out, err = cli(t, nil, "policy", "explain", "--file", pol, "--caller", "spiffe://example.org/orders", "--method", "DELETE", "--path", "/payments/1")
	if err != nil || !strings.Contains(out, "method DELETE is not allowed") || !strings.Contains(out, "DENY") {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("service: spiffe://example.org/p\nrules:\n  - name: a\n    callers: ['*']\n    methods: [GTE]\n"), 0o600)
	if out, err := cli(t, nil, "policy", "test", bad, tests); err == nil || !strings.Contains(out, `line 5: rules[0].methods[0]: "GTE" is not an HTTP method`) {
		t.Fatalf("bad policy: %v\n%s", err, out)
	}
	// The server refuses the same bad policy, naming line and field, and stores nothing.
	s, _ := setup(t)
	out, err = cli(t, s.adminEnv(), "policy", "put", bad)
	if err == nil || !strings.Contains(out, "line 5") {
		t.Fatalf("server accepted a bad policy: %v\n%s", err, out)
	}
	if list := mustCLI(t, s.adminEnv(), "policy", "list", "--json"); strings.TrimSpace(list) != "[]" {
		t.Fatalf("something was stored: %s", list)
	}
	mustCLI(t, s.adminEnv(), "policy", "put", pol)
	if hist := mustCLI(t, s.adminEnv(), "policy", "history", "--service", "spiffe://example.org/payments", "--json"); !strings.Contains(hist, `"seq": 1`) {
		t.Fatalf("history: %s", hist)
	}
}

// Raw TCP mode: bytes pass through mTLS; the policy decides per connection
// on identity alone (rules naming methods or paths cannot match a TCP
// connection).
func TestTCPMode(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.identity("rogue", "")
	m.putPolicy(`service: spiffe://example.org/payments
rules:
  - name: orders-connects
    callers: [spiffe://example.org/orders]
  - name: rogue-http-only
    callers: [spiffe://example.org/rogue]
    methods: [GET]
`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }() // echo
		}
	}()
	inB := m.proxy("payments", "--tcp", "--inbound", "127.0.0.1:0", "--app", ln.Addr().String())[0]
	outA := m.proxy("orders", "--tcp", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	outR := m.proxy("rogue", "--tcp", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]
	echo := func(addr string) (string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "ping over tcp")
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if got, err := echo(outA); got != "ping over tcp" {
		t.Fatalf("allowed TCP caller: %q %v", got, err)
	}
	if got, _ := echo(outR); got != "" {
		t.Fatalf("TCP caller with HTTP-only rules got through: %q", got)
	}

	// A connection outlives the handshake that checked the caller: when
	// orders' SVIDs are revoked, payments' proxy closes the open one.
	c, err := net.Dial("tcp", outA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "before\n")
	if line, err := br.ReadString('\n'); line != "before\n" {
		t.Fatalf("long-lived connection: %q %v", line, err)
	}
	mustCLI(t, m.s.adminEnv(), "svid", "revoke", "--spiffe-id", "spiffe://example.org/orders", "--reason", "test")
	if _, err := br.ReadString('\n'); err != io.EOF {
		t.Fatalf("the connection of a revoked caller stayed open: %v", err)
	}
	// New connections use orders' replacement SVID.
	eventually(t, 15*time.Second, "a new connection with the replacement SVID", func() error {
		if got, err := echo(outA); got != "ping over tcp" {
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})
}

// SIGTERM drains: the listener stops accepting at once; a request that was
// arriving is still forwarded (its upstream connection taken or dialled
// during the drain) and answered with Connection: close; a connection that
// never sent anything does not hold the exit, which comes well inside the
// 20 s bound (a systemd unit's TimeoutStopSec is 30 s).
func TestProxyDrainsOnSIGTERM(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	p, addrs := m.proxyProc("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")
	out := addrs[1]
	eventually(t, 10*time.Second, "the policy at payments' proxy", func() error {
		resp, err := http.Get("http://" + out + "/payments/7")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	half, err := net.Dial("tcp", out)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(half, "GET /payments/7 HTTP/1.1\r\nHo")
	silent, err := net.Dial("tcp", out)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Another process must read those bytes before the signal (else the
	// connection is idle, and a drain rightly closes idle ones): no clock
	// to inject here, only a socket to be read.
	time.Sleep(200 * time.Millisecond)
	stopped := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 10*time.Second, "the listener closed", func() error {
		if c, err := net.Dial("tcp", out); err == nil {
			c.Close()
			return errorf("still accepting")
		}
		return nil
	})
	io.WriteString(half, "st: payments\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(half), nil)
	if err != nil {
		t.Fatalf("the request arriving during the drain got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request during the drain: %d close=%v %s, want 200 and Connection: close", resp.StatusCode, resp.Close, body)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit within 15 s of SIGTERM: a silent connection held the drain")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after a drain", code)
	}
	t.Logf("drained and exited %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
}

// The proxies' Prometheus metrics count what happened: requests by code,
// their latency, refused handshakes by reason, the SVID's expiry.
func TestProxyMetrics(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(paymentsPolicy)
	metricsB, metricsA := freeAddr(t), freeAddr(t)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--metrics-listen", metricsB)[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments", "--metrics-listen", metricsA)[1]
	eventually(t, 10*time.Second, "the policy at payments' proxy", func() error {
		if code, _ := get(t, "http://"+outA+"/payments/0", nil); code != 200 {
			return fmt.Errorf("got %d", code)
		}
		return nil
	})
	// Counted from here: the polling above may have seen 403s.
	before := scrape(t, metricsB)
	for i := range 3 {
		if code, body := get(t, fmt.Sprintf("http://%s/payments/%d", outA, i), nil); code != 200 {
			t.Fatalf("allowed call: %d %s", code, body)
		}
	}
	if code, _ := get(t, "http://"+outA+"/admin", nil); code != 403 {
		t.Fatalf("denied call: %d", code)
	}
	c, err := net.Dial("tcp", inB)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c)
	c.Close()
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := noCert.Get("https://" + inB + "/payments/1"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %d", resp.StatusCode)
	}

	// A request is counted once its response is written, so a scrape can
	// come before the count: wait until each series has come up, then
	// require it went up by exactly as much.
	want := map[string]float64{
		`rampart_proxy_requests_total{code="200",direction="inbound"}`:      3,
		`rampart_proxy_requests_total{code="403",direction="inbound"}`:      1,
		`rampart_proxy_request_duration_seconds_count{direction="inbound"}`: 4,
		`rampart_proxy_handshake_failures_total{reason="plain_http"}`:       1,
		`rampart_proxy_handshake_failures_total{reason="no_client_cert"}`:   1,
	}
	var after map[string]float64
	delta := func(series string) float64 { return after[series] - before[series] }
	eventually(t, 5*time.Second, "the requests and refused handshakes counted", func() error {
		after = scrape(t, metricsB)
		for series, n := range want {
			if delta(series) < n {
				return fmt.Errorf("%s went up by %v so far", series, delta(series))
			}
		}
		return nil
	})
	for series, n := range want {
		if got := delta(series); got != n {
			t.Errorf("%s went up by %v, want %v", series, got, n)
		}
	}
	if exp := after["rampart_proxy_svid_not_after_timestamp_seconds"]; exp < float64(time.Now().Unix()) {
		t.Errorf("SVID expiry metric %v is not in the future", exp)
	}
	eventually(t, 5*time.Second, "the outbound proxy's counts", func() error {
		out := scrape(t, metricsA)
		if out[`rampart_proxy_requests_total{code="200",direction="outbound"}`] < 3 || out[`rampart_proxy_requests_total{code="403",direction="outbound"}`] < 1 {
			return fmt.Errorf("200=%v 403=%v", out[`rampart_proxy_requests_total{code="200",direction="outbound"}`], out[`rampart_proxy_requests_total{code="403",direction="outbound"}`])
		}
		return nil
	})
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads a /metrics page into series -> value (the series as the
// text format writes it, labels sorted).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	values := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			values[line[:i]] = v
		}
	}
	return values
}
