package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/decision"
	"github.com/rampartsec/rampart/sdk/sdktest"
)

// The examples run without an agent: an in-memory CA (sdktest) gives each
// service its SVID, through sdk.WithX509Source. A real service calls
// sdk.New(ctx) and gets its SVID from the local agent instead.
var (
	td         = spiffeid.RequireTrustDomainFromString("example.org")
	paymentsID = spiffeid.RequireFromPath(td, "/payments")
	ordersID   = spiffeid.RequireFromPath(td, "/orders")
	ca         = sdktest.NewCA(td)
)

// serve serves h with src's server TLS configuration on a loopback port
// and returns its base URL.
func serve(src *sdk.Source, h http.Handler) (url string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: src.ServerTLSConfig(), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String(), func() { srv.Close() }
}

// Two services: payments serves mutual TLS behind its policy, orders calls
// it. Neither holds a certificate file or a secret.
func Example() {
	ctx := context.Background()
	payments, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(paymentsID), ca.Bundle())) // with an agent: sdk.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer payments.Close()
	if err := payments.SetPolicy([]byte("service: spiffe://example.org/payments\nrules:\n  - name: orders\n    callers: [spiffe://example.org/orders]\n")); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: payments.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := sdk.CallerID(r.Context())
			fmt.Fprintf(w, "hello %s", caller)
		})),
		TLSConfig: payments.ServerTLSConfig(),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	orders, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(ordersID), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	resp, err := orders.HTTPClient(paymentsID).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello spiffe://example.org/orders
}

func ExampleNew() {
	ctx := context.Background()
	// With an agent: src, err := sdk.New(ctx), the SVID from its Workload
	// API, kept current across rotations.
	src, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(paymentsID), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	fmt.Println(src.ID())
	// Output: spiffe://example.org/payments
}

// Middleware lets a request reach the handler only when the policy allows
// its caller, proven by the caller's certificate; the handler reads who
// called from the request's context.
func ExampleSource_Middleware() {
	ctx := context.Background()
	payments, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(paymentsID), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer payments.Close()
	// Without a server (WithServer or RAMPART_SERVER), the policy is set
	// here; without any policy, every call is denied.
	err = payments.SetPolicy([]byte(`
service: spiffe://example.org/payments
rules:
  - name: orders-reads-payments
    callers: [spiffe://example.org/orders]
    methods: [GET]
    paths: ["/payments/{id}"]
`))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /payments/{id}", func(w http.ResponseWriter, r *http.Request) {
		caller, _ := sdk.CallerID(r.Context())
		fmt.Fprintf(w, "payment %s for %s", r.PathValue("id"), caller)
	})
	url, stop := serve(payments, payments.Middleware(mux))
	defer stop()

	for _, caller := range []spiffeid.ID{ordersID, spiffeid.RequireFromPath(td, "/batch")} {
		src, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(caller), ca.Bundle()))
		if err != nil {
			log.Fatal(err)
		}
		resp, err := src.HTTPClient(paymentsID).Get(url + "/payments/42")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body = []byte(http.StatusText(resp.StatusCode)) // the body names only the policy's version
		}
		fmt.Printf("%s: %d %s\n", caller.Path(), resp.StatusCode, body)
		src.Close()
	}
	// Output:
	// /orders: 200 payment 42 for spiffe://example.org/orders
	// /batch: 403 Forbidden
}

// HTTPClient presents this service's SVID and accepts only a server that
// proves the SPIFFE ID it is given.
func ExampleSource_HTTPClient() {
	ctx := context.Background()
	orders, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(ordersID), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	// A server of the trust domain that is not payments.
	other, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(spiffeid.RequireFromPath(td, "/ledger")), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	url, stop := serve(other, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ledger") }))
	defer stop()

	if _, err := orders.HTTPClient(paymentsID).Get(url); err != nil {
		fmt.Println("to payments: refused, the server is not payments")
	}
	resp, err := orders.HTTPClient(other.ID()).Get(url)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("to ledger:", resp.Status, resp.Proto)
	// Output:
	// to payments: refused, the server is not payments
	// to ledger: 200 OK HTTP/2.0
}

// Every decision, allowed or denied, goes to the decision sink (by default
// the logger; with WithAuditSpool, also the server's audit log).
func ExampleWithDecisionSink() {
	ctx := context.Background()
	sink := decision.SinkFunc(func(_ context.Context, e decision.Event) {
		fmt.Printf("decision: %s %s %s allowed=%v rule=%q\n", e.Caller, e.Method, e.Path, e.Allowed, e.Rule)
	})
	payments, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(paymentsID), ca.Bundle()), sdk.WithDecisionSink(sink))
	if err != nil {
		log.Fatal(err)
	}
	defer payments.Close()
	if err := payments.SetPolicy([]byte("service: spiffe://example.org/payments\nrules:\n  - name: orders\n    callers: [spiffe://example.org/orders]\n    methods: [GET]\n")); err != nil {
		log.Fatal(err)
	}
	url, stop := serve(payments, payments.Middleware(http.NotFoundHandler()))
	defer stop()
	orders, err := sdk.New(ctx, sdk.WithX509Source(ca.SVID(ordersID), ca.Bundle()))
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	c := orders.HTTPClient(paymentsID)
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		req, _ := http.NewRequest(method, url+"/payments/7", nil)
		resp, err := c.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
	}
	// Output:
	// decision: spiffe://example.org/orders GET /payments/7 allowed=true rule="orders"
	// decision: spiffe://example.org/orders DELETE /payments/7 allowed=false rule=""
}
