// Command acme measures ACME orders completed per second with http-01, for
// Rampart's ACME server and for step-ca's (smallstep/certificates), side
// by side in one run, driven by the same client: lego, as a library, with
// one account per worker and a shared http-01 responder on loopback.
//
// Both servers run as processes of their own on loopback with their
// default storage (Rampart: SQLite with FULL sync and its audit log;
// step-ca: BadgerDB), both validate through the same small DNS server
// (every *.bench.test name is 127.0.0.1), both issue 24-hour ECDSA P-256
// certificates from an intermediate, and both are reached over TLS 1.3.
// Rampart requires external account binding (its default); step-ca does
// not (its default); accounts are registered before the clock starts.
//
// Usage (bench/acme.sh builds both servers and runs it):
//
//	go run . --rampart ../out/rampart --step-ca ../out/step-ca [--orders 2000] [--concurrency 16]
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"

	"github.com/rampartsec/rampart/internal/acme/acmetest"
	"github.com/rampartsec/rampart/internal/api"
)

func main() {
	rampartBin := flag.String("rampart", "", "the rampart binary")
	stepBin := flag.String("step-ca", "", "the step-ca binary (built from smallstep/certificates)")
	orders := flag.Int("orders", 200, "orders to complete per server (timed)")
	conc := flag.Int("concurrency", 8, "lego clients ordering at once (one account each)")
	only := flag.String("only", "", "run only rampart or step-ca")
	keep := flag.Bool("keep", false, "keep the servers' directories (for their logs)")
	flag.Parse()
	if *rampartBin == "" && *only != "step-ca" || *stepBin == "" && *only != "rampart" {
		fmt.Fprintln(os.Stderr, "usage: acme --rampart BIN --step-ca BIN [--orders N] [--concurrency C] [--only rampart|step-ca]")
		os.Exit(2)
	}
	legolog.SetDefault(slog.New(slog.DiscardHandler))
	if err := run(*rampartBin, *stepBin, *orders, *conc, *only, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "acme bench:", err)
		os.Exit(1)
	}
}

// server is an ACME server under test.
type server struct {
	name      string
	directory string
	roots     *x509.CertPool
	eab       func() (kid, hmac string, err error) // nil: no EAB
	stop      func()
	pid       int
}

type result struct {
	name      string
	orders    int
	elapsed   time.Duration
	latencies []time.Duration
	failures  int
	serverCPU time.Duration // the server process, during the timed orders
	clientCPU time.Duration // this process (lego and the responder)
	requests  int64         // ACME requests lego sent
}

// counter counts the requests a client sends.
type counter struct {
	rt http.RoundTripper
	n  atomic.Int64
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func run(rampartBin, stepBin string, orders, conc int, only string, keep bool) error {
	dns, err := acmetest.StartDNS()
	if err != nil {
		return err
	}
	defer dns.Close()
	dns.SetDefault(netip.MustParseAddr("127.0.0.1"))
	resp, err := startResponder()
	if err != nil {
		return err
	}
	fmt.Printf("machine: %d CPUs; %d orders per server after one warm-up order per client, %d clients at once, http-01\n",
		numCPU(), orders, conc)
	var results []result
	for _, name := range []string{"rampart", "step-ca"} {
		if only != "" && only != name {
			continue
		}
		dir, err := os.MkdirTemp("", "acme-bench-"+name)
		if err != nil {
			return err
		}
		if !keep {
			defer os.RemoveAll(dir)
		} else {
			fmt.Println(name, "directory:", dir)
		}
		var s *server
		if name == "rampart" {
			s, err = startRampart(rampartBin, dir, dns.Addr, resp.port)
		} else {
			s, err = startStepCA(stepBin, dir, dns.Addr, resp.port)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		r, err := bench(s, resp, orders, conc)
		s.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, r)
	}
	fmt.Printf("\n%-8s %8s %10s %10s %10s %10s %9s %14s %14s %12s\n", "server", "orders", "elapsed", "orders/s", "p50", "p99", "failures",
		"server-CPU/op", "client-CPU/op", "requests/op")
	for _, r := range results {
		slices.Sort(r.latencies)
		n := time.Duration(max(1, r.orders))
		fmt.Printf("%-8s %8d %10s %10.1f %10s %10s %9d %14s %14s %12.1f\n", r.name, r.orders, r.elapsed.Round(time.Millisecond),
			float64(r.orders)/r.elapsed.Seconds(), pct(r.latencies, 50), pct(r.latencies, 99), r.failures,
			(r.serverCPU / n).Round(10*time.Microsecond), (r.clientCPU / n).Round(10*time.Microsecond), float64(r.requests)/float64(n))
	}
	if len(results) == 2 {
		a := float64(results[0].orders) / results[0].elapsed.Seconds()
		b := float64(results[1].orders) / results[1].elapsed.Seconds()
		fmt.Printf("\nrampart completes %.2fx the orders per second of step-ca\n", a/b)
	}
	return nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return max(1, strings.Count(string(b), "processor\t:"))
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	return ds[min(len(ds)-1, len(ds)*p/100)].Round(100 * time.Microsecond).String()
}

// responder serves http-01 key authorizations for every client (lego's
// own provider opens a listener per challenge, which concurrent clients
// cannot share).
type responder struct {
	port int
	mu   sync.Mutex
	m    map[string]string
}

func startResponder() (*responder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &responder{port: ln.Addr().(*net.TCPAddr).Port, m: map[string]string{}}
	go http.Serve(ln, r)
	return r, nil
}

func (r *responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ka, ok := r.m[strings.TrimPrefix(req.URL.Path, "/.well-known/acme-challenge/")]
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	io.WriteString(w, ka)
}

func (r *responder) Present(_ context.Context, _, token, keyAuth string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[token] = keyAuth
	return nil
}

func (r *responder) CleanUp(_ context.Context, _, token, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, token)
	return nil
}

type user struct {
	key crypto.Signer
	reg *acme.ExtendedAccount
}

func (u *user) GetEmail() string                       { return "" }
func (u *user) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer           { return u.key }

func bench(s *server, resp *responder, orders, conc int) (result, error) {
	ctx := context.Background()
	// One kept-alive connection per client at least, as separate clients
	// on separate machines would have.
	cnt := &counter{rt: &http.Transport{MaxIdleConnsPerHost: 2 * conc,
		TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS13}}}
	hc := &http.Client{Timeout: time.Minute, Transport: cnt}
	clients := make([]*lego.Client, conc)
	for i := range clients {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u := &user{key: k}
		cfg := lego.NewConfig(u)
		cfg.CADirURL, cfg.HTTPClient = s.directory, hc
		c, err := lego.NewClient(cfg)
		if err != nil {
			return result{}, err
		}
		if s.eab != nil {
			kid, mac, err := s.eab()
			if err != nil {
				return result{}, err
			}
			u.reg, err = c.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{TermsOfServiceAgreed: true, Kid: kid, HmacEncoded: mac})
			if err != nil {
				return result{}, fmt.Errorf("register: %w", err)
			}
		} else if u.reg, err = c.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
			return result{}, fmt.Errorf("register: %w", err)
		}
		if err := c.Challenge.SetHTTP01Provider(resp); err != nil {
			return result{}, err
		}
		clients[i] = c
	}
	var seq atomic.Int64
	obtain := func(c *lego.Client) (time.Duration, error) {
		name := fmt.Sprintf("o%d.%s.bench.test", seq.Add(1), s.name)
		start := time.Now()
		res, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{name}, KeyType: certcrypto.EC256, Bundle: true})
		if err != nil {
			return 0, err
		}
		if !strings.Contains(string(res.Certificate), "BEGIN CERTIFICATE") {
			return 0, errors.New("no certificate")
		}
		return time.Since(start), nil
	}
	// Warm-up: one order per client (connections, caches).
	for _, c := range clients {
		if _, err := obtain(c); err != nil {
			return result{}, fmt.Errorf("warm-up order: %w", err)
		}
	}
	var mu sync.Mutex
	r := result{name: s.name}
	var left atomic.Int64
	left.Store(int64(orders))
	var wg sync.WaitGroup
	server0, client0, req0 := procCPU(s.pid), procCPU(os.Getpid()), cnt.n.Load()
	start := time.Now()
	for _, c := range clients {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				d, err := obtain(c)
				mu.Lock()
				if err != nil {
					r.failures++
					if r.failures <= 3 {
						fmt.Fprintln(os.Stderr, s.name+": order failed:", err)
					}
				} else {
					r.orders++
					r.latencies = append(r.latencies, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.serverCPU, r.clientCPU, r.requests = procCPU(s.pid)-server0, procCPU(os.Getpid())-client0, cnt.n.Load()-req0
	return r, nil
}

// startRampart runs "rampart server" and makes EAB keys through its admin
// API.
func startRampart(bin, dir, dns string, httpPort int) (*server, error) {
	data := filepath.Join(dir, "data")
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command(bin, "server", "--data", data, "--listen", "127.0.0.1:0", "--trust-domain", "bench.test",
		"--acme-dns-resolver", dns, "--acme-http-port", strconv.Itoa(httpPort), "--acme-allow", "*.bench.test")
	cmd.Env = append(os.Environ(), "RAMPART_READY_FILE="+ready)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(os.Interrupt); cmd.Wait(); logf.Close() }
	var addr string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			addr = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("rampart server did not start; see " + logf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	bundle, err := os.ReadFile(filepath.Join(data, "bundle.pem"))
	if err != nil {
		stop()
		return nil, err
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		stop()
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	admin := &api.Client{BaseURL: "https://" + addr, AdminToken: strings.TrimSpace(string(tok)),
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}}}
	return &server{name: "rampart", directory: "https://" + addr + "/acme/directory", roots: roots, stop: stop, pid: cmd.Process.Pid,
		eab: func() (string, string, error) {
			var k api.ACMEEABKey
			err := admin.Do(context.Background(), http.MethodPost, "/v1/acme/eab-keys", api.ACMEEABKeyRequest{Label: "bench"}, &k)
			return k.KeyID, k.HMACKey, err
		}}, nil
}

// startStepCA writes a root, an intermediate and a ca.json with one ACME
// provisioner, and runs step-ca on them.
func startStepCA(bin, dir, dns string, httpPort int) (*server, error) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench root"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.AddDate(1, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench intermediate"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.AddDate(0, 1, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	interKeyDER, _ := x509.MarshalECPrivateKey(interKey)
	files := map[string][]byte{
		"root.crt":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		"intermediate.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		"intermediate.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: interKeyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := map[string]any{
		"root": filepath.Join(dir, "root.crt"), "crt": filepath.Join(dir, "intermediate.crt"), "key": filepath.Join(dir, "intermediate.key"),
		"address": addr, "dnsNames": []string{"127.0.0.1", "localhost"},
		"logger": map[string]any{"format": "text"},
		"db":     map[string]any{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{"provisioners": []any{map[string]any{"type": "ACME", "name": "acme",
			"claims": map[string]any{"defaultTLSCertDuration": "24h0m0s"}}}},
		"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "ca.json"), b, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, filepath.Join(dir, "ca.json"), "--resolver", dns, "--acme-http-port", strconv.Itoa(httpPort), "--insecure")
	logf, err := os.Create(filepath.Join(dir, "step-ca.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(os.Interrupt); cmd.Wait(); logf.Close() }
	roots := x509.NewCertPool()
	roots.AddCert(root)
	directory := "https://" + addr + "/acme/acme/directory"
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := hc.Get(directory); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("step-ca did not start; see " + logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &server{name: "step-ca", directory: directory, roots: roots, stop: stop, pid: cmd.Process.Pid}, nil
}

// procCPU is the user and system CPU time a process has used (Linux,
// /proc/PID/stat; clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from after ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
