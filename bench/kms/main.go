// Command kms measures the key store against a real rampart server on
// loopback: encrypt operations per second over mTLS through the API (each
// one authorised by the key-use policy and written durably to the audit
// log before the answer), at several concurrencies, and the SDK's field
// encryption with its data key cache. Run it through bench/kms.sh.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampartsec/rampart/bench/internal/benchserver"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/sdk/kms"
)

// Published figures to compare with.
const (
	target       = 20000 // the target, ops/s on this 2-core machine
	vaultTransit = 1100  // Vault transit benchmark example, ops/s
)

func main() {
	bin := flag.String("rampart", "bench/out/rampart", "rampart binary")
	dur := flag.Duration("duration", 5*time.Second, "load duration per concurrency (bounded to 30s)")
	concs := flag.String("concurrency", "16,64,128", "concurrent clients, comma separated")
	size := flag.Int("size", 64, "plaintext bytes per encryption")
	flag.Parse()
	if *dur > 30*time.Second {
		*dur = 30 * time.Second
	}
	if err := run(*bin, *dur, *concs, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const policy = `service: spiffe://example.org/rampart/kms
rules:
  - name: bench
    callers: [spiffe://example.org/orders]
    paths: [/keys/orders-pii/encrypt, /keys/orders-pii/decrypt, /keys/orders-pii/datakey]
`

func run(bin string, dur time.Duration, concs string, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := benchserver.StartTemp(ctx, bin)
	if err != nil {
		return err
	}
	defer srv.Stop()
	if err := srv.Admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		return err
	}
	if err := srv.Admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(policy), nil); err != nil {
		return err
	}
	cert, err := srv.WorkloadCert(ctx, "bench", "spiffe://example.org/orders")
	if err != nil {
		return err
	}
	body, _ := json.Marshal(api.KMSRequest{Plaintext: bytes.Repeat([]byte("x"), size), AAD: []byte("customer:42")})
	fmt.Printf("server API: POST /v1/kms/keys/orders-pii/encrypt, %d-byte plaintext, mTLS (TLS 1.3, HTTP/1.1 keep-alive), policy + durable audit per operation\n", size)
	for _, cs := range strings.Split(concs, ",") {
		conc, err := strconv.Atoi(strings.TrimSpace(cs))
		if err != nil || conc < 1 {
			return fmt.Errorf("concurrency %q", cs)
		}
		rate, p99, failed := load(ctx, srv, cert, body, conc, dur)
		fmt.Printf("  c=%-4d %8.0f ops/s  p99 %6.2f ms  failed %d  (%.2fx the %d/s target, %.1fx Vault transit's ~%d/s)\n",
			conc, rate, p99.Seconds()*1000, failed, rate/target, target, rate/vaultTransit, vaultTransit)
	}

	// The SDK: one data key call, then local AES-GCM.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(srv, cert)}}
	c, err := kms.New(nil, kms.WithServer(srv.Addr), kms.WithHTTPClient(hc))
	if err != nil {
		return err
	}
	field := bytes.Repeat([]byte("x"), 1024)
	n, start := 0, time.Now()
	for time.Since(start) < dur {
		if _, err := c.Encrypt(ctx, "orders-pii", field, []byte("customer:42")); err != nil {
			return err
		}
		n++
	}
	el := time.Since(start)
	fmt.Printf("SDK field encryption (1 KiB, one goroutine, against the live server): %.0f ops/s, %d server calls for %d encryptions\n",
		float64(n)/el.Seconds(), c.Calls(), n)
	return nil
}

func clientTLS(srv *benchserver.Server, cert *tls.Certificate) *tls.Config {
	cfg := srv.TLS.Clone()
	cfg.Certificates = []tls.Certificate{*cert}
	return cfg
}

func load(ctx context.Context, srv *benchserver.Server, cert *tls.Certificate, body []byte, conc int, dur time.Duration) (rate float64, p99 time.Duration, failed int64) {
	tr := &http.Transport{TLSClientConfig: clientTLS(srv, cert), MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "https://" + srv.Addr + "/v1/kms/keys/orders-pii/encrypt"
	var ok, bad atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				res, err := hc.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					bad.Add(1)
					continue
				}
				ok.Add(1)
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	if len(lat) > 0 {
		slices.Sort(lat)
		p99 = lat[len(lat)*99/100]
	}
	return float64(ok.Load()) / el.Seconds(), p99, bad.Load()
}
