package sdk

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk/sdktest"
)

// A service on the SDK, served through Listener, ends a quarantined
// caller's open HTTP/2 stream and refuses its next calls; a client whose
// server is quarantined refuses to call it.
func TestSDKQuarantineEndsOpenStreams(t *testing.T) {
	ca := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	ledger := newSource(t, ca, "ledger")
	if err := ledger.SetPolicy([]byte("service: spiffe://example.org/ledger\nrules:\n  - name: all\n    callers: ['*']\n")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ledger.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "start\n")
		if r.URL.Path == "/stream" {
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}
	}))}
	go srv.Serve(ledger.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String()

	orders := newSource(t, ca, "orders")
	client := orders.HTTPClient(ledger.ID())
	client.Timeout = 0
	resp, err := client.Get(url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "start\n" {
		t.Fatalf("stream: %q", line)
	}
	ledger.quarantine.Set([]string{"spiffe://example.org/orders"})
	start := time.Now()
	io.ReadAll(br)
	if time.Since(start) > 4*time.Second {
		t.Error("the open stream outlived the quarantine of its caller")
	}
	if r, err := client.Get(url + "/x"); err == nil {
		t.Errorf("quarantined caller answered %d", r.StatusCode)
		r.Body.Close()
	}

	// The client side: orders learns that ledger is quarantined.
	ledger.quarantine.Set(nil)
	orders.quarantine.Set([]string{"spiffe://example.org/ledger"})
	if _, err := client.Get(url + "/x"); !errors.Is(err, ErrQuarantined) {
		t.Errorf("call to a quarantined server: %v, want ErrQuarantined", err)
	}
	orders.quarantine.Set(nil)
	r, err := client.Get(url + "/x")
	if err != nil {
		t.Fatalf("after the lift: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("after the lift: %d", r.StatusCode)
	}
}
