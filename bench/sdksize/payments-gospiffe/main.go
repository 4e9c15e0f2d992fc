// Command payments-gospiffe is examples/payments written with go-spiffe
// alone (mTLS with the Workload API's SVID, any caller of the trust domain,
// no policy, no header hygiene, no audit): the baseline bench/sdksize.sh
// compares the SDK's binary size with.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "address to serve mTLS on")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, log); err != nil {
		log.Error("payments", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string, log *slog.Logger) error {
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	sv, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	tc := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(sv.ID.TrustDomain()))
	srv := &http.Server{Addr: listen, Handler: newLedger().routes(), TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("payments serving", "id", sv.ID.String(), "listen", listen)
	if err := srv.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// callerID is the SPIFFE ID of the request's verified client certificate.
func callerID(r *http.Request) spiffeid.ID {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return spiffeid.ID{}
	}
	id, _ := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	return id
}

// Charge is a payment taken for an order.
type Charge struct {
	ID     int    `json:"id"`
	Order  string `json:"order"`
	Amount int    `json:"amount_cents"`
	Caller string `json:"caller"`
}

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
	var c Charge
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&c); err != nil || c.Amount <= 0 || c.Order == "" {
		http.Error(w, "payments: want {\"order\": ..., \"amount_cents\": N > 0}", http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	c.ID, c.Caller = len(l.charges)+1, callerID(r).String()
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
