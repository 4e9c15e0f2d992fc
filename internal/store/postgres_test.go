package store_test

import (
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

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

// One audit log per deployment: replicas sharing a database (schema) get
// the holder's lock one at a time; another deployment's schema is apart;
// the lock goes with the holder's connection.
func TestPostgresHoldAuditLog(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	open := func(dsn string) store.Store {
		s, err := store.OpenPostgres(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(dsn), open(dsn)
	release, err := a.HoldAuditLog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HoldAuditLog(t.Context()); !errors.Is(err, store.ErrAuditLogHeld) {
		t.Fatalf("second replica's claim: %v, want ErrAuditLogHeld", err)
	}
	if _, err := a.HoldAuditLog(t.Context()); !errors.Is(err, store.ErrAuditLogHeld) {
		t.Fatalf("a second claim by the holder itself: %v, want ErrAuditLogHeld", err)
	}
	other := open(storetest.PostgresDSN(t))
	if rel, err := other.HoldAuditLog(t.Context()); err != nil {
		t.Fatalf("another deployment's schema: %v", err)
	} else {
		rel()
	}
	release()
	relB, err := b.HoldAuditLog(t.Context())
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	// A holder that closes its store frees the log.
	relB()
	c := open(dsn)
	if _, err := c.HoldAuditLog(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if rel, err := b.HoldAuditLog(t.Context()); err != nil {
		t.Fatalf("after the holder's store closed: %v", err)
	} else {
		rel()
	}
	// One that dies frees it when PostgreSQL sees its session end.
	d := open(dsn)
	if _, err := d.HoldAuditLog(t.Context()); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var pid int
	if err := raw.QueryRowContext(t.Context(), `WITH k AS (SELECT hashtextextended('rampart-audit-log:' || current_schema(), 0) AS v)
		SELECT pid FROM pg_locks, k WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND classid = ((k.v >> 32) & 4294967295)::oid AND objid = (k.v & 4294967295)::oid`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		rel, err := b.HoldAuditLog(t.Context())
		if err == nil {
			rel()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock still held 10 s after its session was killed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
