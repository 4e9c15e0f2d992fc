// Command payments is an example service secured in-process with the Rampart
// SDK, no sidecar: it serves mutual TLS with its own SPIFFE ID, and a
// request reaches its handlers only when the policy allows the caller (see
// README.md, and policy.yaml for the policy).
//
//	POST /charges      {"order": "ord-1", "amount_cents": 1250} -> 201 and the charge
//	GET  /charges/{id} -> the charge
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rampartsec/rampart/sdk"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7443", "address to serve mutual TLS on")
	policyFile := flag.String("policy", "", "policy YAML to enforce (default: the one the server distributes, with RAMPART_SERVER set)")
	spool := flag.String("audit-spool", "", "directory where decisions wait for the server's audit log (needs RAMPART_SERVER; default: decisions are only logged)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *policyFile, *spool, log); err != nil {
		log.Error("payments", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, policyFile, spool string, log *slog.Logger) error {
	// The SVID comes from the agent's Workload API (SPIFFE_ENDPOINT_SOCKET,
	// or the default socket) and follows its rotations; with RAMPART_SERVER
	// set, so does the policy.
	opts := []sdk.Option{sdk.WithLogger(log)}
	if spool != "" {
		opts = append(opts, sdk.WithAuditSpool(spool)) // every decision, in the tamper-evident log
	}
	src, err := sdk.New(ctx, opts...)
	if err != nil {
		return err
	}
	defer src.Close()
	if policyFile != "" {
		b, err := os.ReadFile(policyFile)
		if err != nil {
			return err
		}
		if err := src.SetPolicy(b); err != nil {
			return err
		}
	}
	srv := newServer(src, listen)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("payments serving", "id", src.ID().String(), "listen", ln.Addr().String())
	// src.Listener: mutual TLS, and a caller the server quarantines loses
	// its open connections too, not only its next calls.
	if err := srv.Serve(src.Listener(ln)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newServer serves the ledger on addr: mutual TLS (TLS 1.3, a client SVID
// of this trust domain, not revoked), then the policy, then the handlers.
func newServer(src *sdk.Source, addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           src.Middleware(newLedger().routes()),
		TLSConfig:         src.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// Charge is a payment taken for an order.
type Charge struct {
	ID     int    `json:"id"`
	Order  string `json:"order"`
	Amount int    `json:"amount_cents"`
	Caller string `json:"caller"` // the SPIFFE ID that asked for it, as its certificate proved
}

// ledger keeps the charges in memory.
type ledger struct {
	mu      sync.Mutex
	charges []Charge
}

func newLedger() *ledger { return &ledger{} }

func (l *ledger) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /charges", l.create)
	mux.HandleFunc("GET /charges/{id}", l.get)
	return mux
}

func (l *ledger) create(w http.ResponseWriter, r *http.Request) {
	caller, _ := sdk.CallerID(r.Context()) // from the verified certificate, never from a header
	var c Charge
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&c); err != nil || c.Amount <= 0 || c.Order == "" {
		http.Error(w, `payments: want {"order": "...", "amount_cents": N}, N > 0`, http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	c.ID, c.Caller = len(l.charges)+1, caller.String()
	l.charges = append(l.charges, c)
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(c)
}

func (l *ledger) get(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || id < 1 || id > len(l.charges) {
		http.Error(w, fmt.Sprintf("payments: no charge %q", r.PathValue("id")), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l.charges[id-1])
}
