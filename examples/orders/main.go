// Command orders is an example service that calls another with the Rampart
// SDK: it takes orders over plain HTTP on loopback (a stand-in for your
// front door) and charges each through payments over mutual TLS, where it
// proves it is orders with its SVID and accepts only payments' SVID in
// return (see README.md).
//
//	POST /orders {"amount_cents": 1250} -> 201 {"order": "ord-1", "charge": {...}}
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7080", "plain HTTP address to take orders on (keep it on loopback)")
	payments := flag.String("payments", "127.0.0.1:7443", "payments' address")
	paymentsID := flag.String("payments-id", "", "payments' SPIFFE ID (default: spiffe://THIS-TRUST-DOMAIN/examples/payments)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *payments, *paymentsID, log); err != nil {
		log.Error("orders", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, payments, paymentsID string, log *slog.Logger) error {
	src, err := sdk.New(ctx, sdk.WithLogger(log))
	if err != nil {
		return err
	}
	defer src.Close()
	id, err := spiffeid.FromPath(src.ID().TrustDomain(), "/examples/payments")
	if paymentsID != "" {
		id, err = spiffeid.FromString(paymentsID)
	}
	if err != nil {
		return fmt.Errorf("-payments-id: %w", err)
	}
	srv := &http.Server{Addr: listen, Handler: newShop(src, payments, id).routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("orders serving", "id", src.ID().String(), "listen", listen, "payments", id.String()+" at "+payments)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shop places orders and charges them through payments.
type shop struct {
	payments *http.Client // mutual TLS: presents orders' SVID, accepts only payments'
	base     string       // https://payments-address
	orders   atomic.Int64
}

func newShop(src *sdk.Source, addr string, paymentsID spiffeid.ID) *shop {
	return &shop{payments: src.HTTPClient(paymentsID), base: "https://" + addr}
}

func (s *shop) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.place)
	return mux
}

// Charge is payments' answer.
type Charge struct {
	ID     int    `json:"id"`
	Order  string `json:"order"`
	Amount int    `json:"amount_cents"`
	Caller string `json:"caller"`
}

func (s *shop) place(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Amount int `json:"amount_cents"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&in); err != nil || in.Amount <= 0 {
		http.Error(w, `orders: want {"amount_cents": N}, N > 0`, http.StatusBadRequest)
		return
	}
	order := fmt.Sprintf("ord-%d", s.orders.Add(1))
	body, _ := json.Marshal(map[string]any{"order": order, "amount_cents": in.Amount})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, s.base+"/charges", bytes.NewReader(body))
	if err != nil {
		http.Error(w, "orders: "+err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.payments.Do(req)
	if err != nil {
		http.Error(w, "orders: payments: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var c Charge
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &c) != nil {
		// A refusal says only the policy's version, never its rules: what
		// was missing is in payments' log and in the audit log.
		http.Error(w, fmt.Sprintf("orders: payments answered %d: %s", resp.StatusCode, b), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"order": order, "charge": c})
}
