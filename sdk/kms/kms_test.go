package kms

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/enroltest"
	"github.com/rampartsec/rampart/internal/server"
)

// testServer runs a real server in-process and returns an HTTP client
// presenting an SVID for spiffe://example.org/orders, which the key-use
// policy lets use orders-pii.
func testServer(t *testing.T) (addr string, hc *http.Client) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	srv, err := server.New(ctx, server.Config{DataDir: dir, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	addr = ln.Addr().String()
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	pem, _ := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	admin := &api.Client{BaseURL: "https://" + addr, AdminToken: strings.TrimSpace(string(tok)), HTTP: client(nil)}
	do := func(c *api.Client, method, path string, in, out any) {
		t.Helper()
		if err := c.Do(ctx, method, path, in, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	cert, err := enroltest.Workload(ctx, admin, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}, "node-1", "spiffe://example.org/orders")
	if err != nil {
		t.Fatal(err)
	}
	do(admin, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil)
	do(admin, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "other"}, nil)
	if err := admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(`service: spiffe://example.org/rampart/kms
rules:
  - name: orders
    callers: [spiffe://example.org/orders]
    paths: [/keys/orders-pii/datakey, /keys/orders-pii/decrypt, /keys/other/datakey, /keys/other/decrypt]
`), nil); err != nil {
		t.Fatal(err)
	}
	return addr, client(cert)
}

func TestEnvelopeRoundTripAndCache(t *testing.T) {
	addr, hc := testServer(t)
	clk := fakeclock.New(time.Now())
	c, err := New(nil, WithServer(addr), WithHTTPClient(hc), WithClock(clk.Now), WithDataKeyTTL(time.Minute), WithDataKeyUses(10))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cts [][]byte
	for i := range 25 {
		ct, err := c.Encrypt(ctx, "orders-pii", []byte{byte(i)}, []byte("row"))
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	// 10 uses per data key: 25 encryptions fetch 3.
	if c.Calls() != 3 {
		t.Fatalf("25 encryptions with 10 uses per data key made %d calls, want 3", c.Calls())
	}
	for i, ct := range cts {
		pt, err := c.Decrypt(ctx, "orders-pii", ct, []byte("row"))
		if err != nil || !bytes.Equal(pt, []byte{byte(i)}) {
			t.Fatalf("decrypt %d: %v", i, err)
		}
	}
	if c.Calls() != 3 {
		t.Fatalf("decrypting what this client encrypted called the server (%d calls)", c.Calls())
	}
	// The TTL ends the data key for encryption and decryption alike.
	clk.Add(time.Minute)
	if _, err := c.Encrypt(ctx, "orders-pii", []byte("x"), nil); err != nil || c.Calls() != 4 {
		t.Fatalf("after the TTL: %v, %d calls", err, c.Calls())
	}
	if _, err := c.Decrypt(ctx, "orders-pii", cts[0], []byte("row")); err != nil || c.Calls() != 5 {
		t.Fatalf("decrypt after the TTL: %v, %d calls", err, c.Calls())
	}
}

// Attacks on envelope ciphertexts.
func TestEnvelopeAttacks(t *testing.T) {
	addr, hc := testServer(t)
	c, _ := New(nil, WithServer(addr), WithHTTPClient(hc))
	ctx := context.Background()
	ct, _ := c.Encrypt(ctx, "orders-pii", []byte("4111 1111 1111 1111"), []byte("customer:42"))
	other, _ := c.Encrypt(ctx, "other", []byte("x"), []byte("customer:42"))
	wrapped, body, _ := Split(ct)
	owrapped, _, _ := Split(other)
	hdr := len(ct) - len(body)
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ct)) }
	// Another data key of the same key: wrapped by the server for us.
	fresh, _ := New(nil, WithServer(addr), WithHTTPClient(hc))
	ct2, _ := fresh.Encrypt(ctx, "orders-pii", []byte("y"), nil)
	w2, _, _ := Split(ct2)
	swapped := append(append(append([]byte("rke\x01"), byte(len(w2)>>8), byte(len(w2))), w2...), body...)

	tests := []struct {
		name string
		key  string
		ct   []byte
		aad  string
		want func(error) bool
	}{
		{"other associated data", "orders-pii", ct, "customer:43", is(ErrDecrypt)},
		{"body bit flipped", "orders-pii", edit(func(b []byte) []byte { b[hdr+20] ^= 1; return b }), "customer:42", is(ErrDecrypt)},
		{"tag edited", "orders-pii", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "customer:42", is(ErrDecrypt)},
		{"truncated", "orders-pii", ct[:len(ct)-1], "customer:42", is(ErrDecrypt)},
		{"truncated into the header", "orders-pii", ct[:hdr-1], "customer:42", is(ErrMalformed)},
		{"wrapped key of another data key", "orders-pii", swapped, "customer:42", is(ErrDecrypt)},
		{"wrapped key edited", "orders-pii", edit(func(b []byte) []byte { b[6+len(wrapped)-2] ^= 1; return b }), "customer:42", status(400)},
		{"another key's ciphertext", "orders-pii", other, "customer:42", contains(`for key "other"`)},
		{"relabelled to another key", "other", edit(func(b []byte) []byte {
			return append(append(append([]byte("rke\x01"), byte(len(owrapped)>>8), byte(len(owrapped))), owrapped...), body...)
		}), "customer:42", is(ErrDecrypt)},
		{"not an envelope", "orders-pii", []byte("hello"), "", is(ErrMalformed)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := c.Decrypt(ctx, tt.key, tt.ct, []byte(tt.aad))
			if pt != nil || !tt.want(err) {
				t.Fatalf("got %q, %v", pt, err)
			}
		})
	}
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

func status(code int) func(error) bool {
	return func(err error) bool {
		var e *Error
		return errors.As(err, &e) && e.Status == code
	}
}

func contains(s string) func(error) bool {
	return func(err error) bool { return err != nil && strings.Contains(err.Error(), s) }
}

// Many goroutines, one data key fetch.
func TestConcurrentEncryptFetchesOnce(t *testing.T) {
	addr, hc := testServer(t)
	c, _ := New(nil, WithServer(addr), WithHTTPClient(hc))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			for j := range 50 {
				pt := []byte{byte(i), byte(j)}
				ct, err := c.Encrypt(ctx, "orders-pii", pt, nil)
				if err == nil {
					var got []byte
					got, err = c.Decrypt(ctx, "orders-pii", ct, nil)
					if err == nil && !bytes.Equal(got, pt) {
						err = errors.New("round trip differs")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c.Calls() != 1 {
		t.Fatalf("800 concurrent operations made %d calls, want 1", c.Calls())
	}
}

func FuzzSplit(f *testing.F) {
	f.Add([]byte("rke\x01\x00\x05rkd\x01\x01body"))
	f.Add([]byte("rke\x01\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, body, err := Split(b)
		if err != nil {
			return
		}
		if 4+2+len(w)+len(body) != len(b) || len(w) == 0 {
			t.Fatalf("split %x into %d + %d bytes", b, len(w), len(body))
		}
		KeyOf(b)
	})
}
