package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

// Policies of the sample system: default deny, and exactly the calls it makes.
const (
	paymentsPolicy = `service: spiffe://demo.rampart.local/payments
rules:
  - name: orders-reads-payments
    callers: [spiffe://demo.rampart.local/orders]
    methods: [GET]
    paths: ["/payments/{id}"]
  # A card on file is the user's: orders may read it only on behalf of
  # that user (a token exchanged for payments), never on its own authority.
  - name: orders-reads-a-card-for-its-owner
    callers: [spiffe://demo.rampart.local/orders]
    methods: [GET]
    paths: ["/users/{user}/card"]
    when: 'has(user.sub) && request.params.user == user.sub'
`
	ordersPolicy = `service: spiffe://demo.rampart.local/orders
rules:
  - name: gateway-reads-orders
    callers: [spiffe://demo.rampart.local/gateway]
    methods: [GET]
    paths: ["/orders/{id}", "/users/{user}/card"]
`
)

// services are the sample system's parts, each behind its own proxy.
type services struct {
	PaymentsInbound string // payments' mTLS port
	OrdersInbound   string
	GatewayURL      string // plain HTTP on loopback: how a user calls in
	OrdersToPay     string // orders' outbound listener for payments
	Customers       string // customers' mTLS port (SDK, no proxy)
	CustomersDB     string // its SQLite file
}

// startServices starts the payments and orders apps (in this process) and
// a rampart proxy process for payments, orders and gateway. Each proxy runs
// from its own copy of this binary, so the agent attests each, from the
// kernel, as a distinct service.
func startServices(ctx context.Context, sys *System, agentID string, done chan<- struct{}) (*services, int, error) {
	binDir := filepath.Join(sys.Dir, "bin")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return nil, 0, err
	}
	for _, name := range []string{"payments-proxy", "orders-proxy", "gateway-proxy", "customers-app"} {
		bin := filepath.Join(binDir, name)
		if err := copyFile(sys.Exe, bin); err != nil {
			return nil, 0, fmt.Errorf("demo: %w", err)
		}
		svcName, _, _ := strings.Cut(name, "-")
		if err := ensureEntry(ctx, sys.Admin, api.Entry{SpiffeID: "spiffe://" + TrustDomain.Name() + "/" + svcName, ParentID: agentID,
			Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + bin}}); err != nil {
			return nil, 0, err
		}
	}
	for _, p := range []string{paymentsPolicy, ordersPolicy, customersPolicy, kmsPolicy} {
		if err := sys.Admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(p), nil); err != nil {
			return nil, 0, fmt.Errorf("demo: policy: %w", err)
		}
	}
	var key api.KMSKey
	if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/kms/keys/"+customersKey, nil, &key); err != nil {
		if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: customersKey}, nil); err != nil {
			return nil, 0, fmt.Errorf("demo: key store: %w", err)
		}
	}
	svc := &services{}
	payApp, err := serveApp(ctx, func(w http.ResponseWriter, r *http.Request) {
		if user, ok := strings.CutPrefix(r.URL.Path, "/users/"); ok {
			user = strings.TrimSuffix(user, "/card")
			json.NewEncoder(w).Encode(map[string]string{"user": user, "card": "**** **** **** " + cardEnding(user),
				"verified_caller": r.Header.Get("X-Rampart-Caller"), "verified_user": r.Header.Get("X-Rampart-User")})
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"payment": strings.TrimPrefix(r.URL.Path, "/payments/"), "status": "settled",
			"verified_caller": r.Header.Get("X-Rampart-Caller")})
	})
	if err != nil {
		return nil, 0, err
	}
	ordersApp, err := serveApp(ctx, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/users/") {
			// A card on file: orders asks payments, passing on the user's
			// token; its proxy exchanges it for one addressed to payments.
			req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+svc.OrdersToPay+r.URL.Path, nil)
			if a := r.Header.Get("Authorization"); a != "" {
				req.Header.Set("Authorization", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, io.LimitReader(resp.Body, 1<<20))
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/orders/")
		resp, err := http.Get("http://" + svc.OrdersToPay + "/payments/" + id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var payment any
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&payment)
		json.NewEncoder(w).Encode(map[string]any{"order": id, "verified_caller": r.Header.Get("X-Rampart-Caller"), "payment": payment})
	})
	if err != nil {
		return nil, 0, err
	}
	procs := 0
	launch := func(name string, args ...string) ([]string, error) {
		ready := filepath.Join(sys.Dir, name+".ready")
		os.Remove(ready)
		logf, _ := os.OpenFile(filepath.Join(sys.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		cmd := exec.Command(filepath.Join(binDir, name), args...)
		cmd.Env = append(os.Environ(), "RAMPART_READY_FILE="+ready)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs++
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			logf.Close()
			close(exited)
		}()
		go func() {
			select {
			case <-ctx.Done():
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
			case <-exited:
			}
			done <- struct{}{}
		}()
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
			if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
				return strings.Split(strings.TrimRight(string(b), "\n"), "\n"), nil
			}
			select {
			case <-exited:
				return nil, fmt.Errorf("demo: %s exited (see %s.log)", name, filepath.Join(sys.Dir, name))
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil, fmt.Errorf("demo: %s not ready within 30s", name)
	}
	proxy := func(name string, args ...string) ([]string, error) {
		return launch(name+"-proxy", append([]string{"proxy", "--socket", sys.Socket, "--server", sys.ServerAddr,
			"--data", filepath.Join(sys.Dir, name+"-proxy-data")}, args...)...)
	}
	addrs, err := proxy("payments", "--inbound", "127.0.0.1:0", "--app", payApp)
	if err != nil {
		return nil, procs, err
	}
	svc.PaymentsInbound = addrs[0]
	addrs, err = proxy("orders", "--inbound", "127.0.0.1:0", "--app", ordersApp, "--exchange-client-id", ordersClient,
		"--outbound", "127.0.0.1:0="+svc.PaymentsInbound+",spiffe://"+TrustDomain.Name()+"/payments,exchange")
	if err != nil {
		return nil, procs, err
	}
	svc.OrdersInbound, svc.OrdersToPay = addrs[0], addrs[1]
	addrs, err = proxy("gateway", "--outbound", "127.0.0.1:0="+svc.OrdersInbound+",spiffe://"+TrustDomain.Name()+"/orders")
	if err != nil {
		return nil, procs, err
	}
	svc.GatewayURL = "http://" + addrs[1]
	svc.CustomersDB = filepath.Join(sys.Dir, "customers.db")
	addrs, err = launch("customers-app", "demo", "customers-service", "--socket", sys.Socket, "--server", sys.ServerAddr, "--db", svc.CustomersDB)
	if err != nil {
		return nil, procs, err
	}
	svc.Customers = addrs[0]
	return svc, procs, nil
}

func serveApp(ctx context.Context, h http.HandlerFunc) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return ln.Addr().String(), nil
}

// cardEnding is a user's made-up card ending.
func cardEnding(user string) string {
	switch user {
	case "alice":
		return "4242"
	case "bob":
		return "1881"
	}
	return "0000"
}
