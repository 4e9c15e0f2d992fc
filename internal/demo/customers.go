package demo

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the customers service's own database

	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/kms"
)

// The customers service keeps its records in its own SQLite file, with the
// personal fields encrypted by the key store's SDK under customersKey.
const (
	customersKey    = "customers-pii"
	customersPolicy = `service: spiffe://demo.rampart.local/customers
rules:
  - name: demo-client-reads-and-writes-customers
    callers: [spiffe://demo.rampart.local/demo/client]
    methods: [GET, PUT]
    paths: ["/customers/{id}"]
`
	// kmsPolicy: customers may use its key; nobody else may use any.
	kmsPolicy = `service: spiffe://demo.rampart.local/rampart/kms
rules:
  - name: customers-uses-its-key
    callers: [spiffe://demo.rampart.local/customers]
    paths: [/keys/customers-pii/datakey, /keys/customers-pii/decrypt]
`
)

// Customer is a record as the service returns it.
type Customer struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Card  string `json:"card"`
	// KeyVersions says which key version protects each encrypted field.
	KeyVersions map[string]int `json:"key_versions,omitempty"`
}

// CustomersConfig configures the customers service process.
type CustomersConfig struct {
	Socket    string // the agent's Workload API
	Server    string // the rampart server (policy, key store)
	DB        string // SQLite file
	ReadyFile string // written with the listen address when serving
}

// RunCustomers runs the demo's customers service: a Go service secured by
// the SDK instead of a sidecar (its mTLS server and policy come from
// sdk.Source), storing customer records whose email and card number are
// encrypted field by field with sdk/kms.
func RunCustomers(ctx context.Context, cfg CustomersConfig) error {
	src, err := sdk.New(ctx, sdk.WithSocket(cfg.Socket), sdk.WithServer(cfg.Server))
	if err != nil {
		return err
	}
	defer src.Close()
	keys, err := kms.New(src, kms.WithServer(cfg.Server), kms.WithDataKeyTTL(time.Minute))
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, email BLOB NOT NULL, card BLOB NOT NULL)`); err != nil {
		return fmt.Errorf("customers: %w", err)
	}
	st := &customerStore{db: db, keys: keys}
	var n int
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM customers`).Scan(&n)
	if n == 0 {
		if err := st.put(ctx, Customer{ID: "42", Name: "Alice Example", Email: "alice@example.com", Card: "4111 1111 1111 1111"}); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /customers/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, err := st.get(r.Context(), r.PathValue("id"))
		if errors.Is(err, sql.ErrNoRows) {
			http.Error(w, "no such customer", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(c)
	})
	mux.HandleFunc("PUT /customers/{id}", func(w http.ResponseWriter, r *http.Request) {
		var c Customer
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&c); err != nil {
			http.Error(w, "want a JSON customer", http.StatusBadRequest)
			return
		}
		c.ID = r.PathValue("id")
		if err := st.put(r.Context(), c); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: src.Middleware(mux), TLSConfig: src.ServerTLSConfig(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
	if cfg.ReadyFile != "" {
		os.WriteFile(cfg.ReadyFile, []byte(ln.Addr().String()+"\n"), 0o600)
	}
	go func() { <-ctx.Done(); srv.Close() }()
	// Through the SDK's listener: a quarantined caller's open connections
	// are ended, not only its next ones refused.
	if err := srv.Serve(src.Listener(ln)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type customerStore struct {
	db   *sql.DB
	keys *kms.Client
}

// aad binds a field's ciphertext to its record and column: copied onto
// another customer or into another column, it does not decrypt.
func aad(id, field string) []byte { return []byte("customers/" + id + "/" + field) }

func (s *customerStore) put(ctx context.Context, c Customer) error {
	email, err := s.keys.Encrypt(ctx, customersKey, []byte(c.Email), aad(c.ID, "email"))
	if err != nil {
		return err
	}
	card, err := s.keys.Encrypt(ctx, customersKey, []byte(c.Card), aad(c.ID, "card"))
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO customers (id, name, email, card) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, card = excluded.card`, c.ID, c.Name, email, card)
	return err
}

func (s *customerStore) get(ctx context.Context, id string) (Customer, error) {
	c := Customer{ID: id, KeyVersions: map[string]int{}}
	var email, card []byte
	if err := s.db.QueryRowContext(ctx, `SELECT name, email, card FROM customers WHERE id = ?`, id).Scan(&c.Name, &email, &card); err != nil {
		return Customer{}, err
	}
	for _, f := range []struct {
		name string
		ct   []byte
		out  *string
	}{{"email", email, &c.Email}, {"card", card, &c.Card}} {
		pt, err := s.keys.Decrypt(ctx, customersKey, f.ct, aad(id, f.name))
		if err != nil {
			return Customer{}, fmt.Errorf("customers: %s of %s: %w", f.name, id, err)
		}
		*f.out = string(pt)
		_, c.KeyVersions[f.name], _ = kms.KeyOf(f.ct)
	}
	c.Card = maskCard(c.Card)
	return c, nil
}

// maskCard shows the last four digits only: the service needs the number,
// its callers do not.
func maskCard(s string) string {
	d := strings.ReplaceAll(s, " ", "")
	if len(d) <= 4 {
		return d
	}
	return strings.Repeat("*", len(d)-4) + d[len(d)-4:]
}
