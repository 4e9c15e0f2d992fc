package store_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

func TestPostgres(t *testing.T) {
	var mu sync.Mutex
	dsns := map[*testing.T]string{} // reopening with the same t sees the same data
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		dsn, ok := dsns[t]
		if !ok {
			dsn = storetest.PostgresDSN(t)
			dsns[t] = dsn
		}
		mu.Unlock()
		s, err := store.OpenPostgres(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestPostgresConcurrentOpen opens one database from several "replicas" at
// once: exactly one must migrate it and all must succeed.
func TestPostgresConcurrentOpen(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	const replicas = 5
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Go(func() {
			s, err := store.OpenPostgres(t.Context(), dsn)
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
}

func TestPostgresConnectErrorHidesPassword(t *testing.T) {
	const password = "hunter2-secret"
	// Nothing listens on port 1.
	_, err := store.OpenPostgres(t.Context(), "postgres://rampart:"+password+"@127.0.0.1:1/rampart?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("OpenPostgres succeeded against a closed port")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "store: postgres: connect to host=127.0.0.1 port=1 user=rampart database=rampart: ") {
		t.Errorf("error %q does not say where it tried to connect", msg)
	}
	if strings.Contains(msg, password) {
		t.Errorf("error %q contains the password", msg)
	}
}
