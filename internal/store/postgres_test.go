package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers driver "pgx"

	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testPostgres returns a connection to the test server, failing in CI and
// skipping elsewhere when there is none.
func testPostgres(t *testing.T) (*sql.DB, string) {
	t.Helper()
	dsn := os.Getenv("RAMPART_TEST_POSTGRES")
	if dsn == "" {
		dsn = defaultTestPostgres
	}
	db, err := sql.Open("pgx", dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL unreachable (%v); CI must start PostgreSQL and set RAMPART_TEST_POSTGRES if not at the default", err)
		}
		t.Skipf("PostgreSQL unreachable, set RAMPART_TEST_POSTGRES: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dsn
}

// withSearchPath returns dsn with search_path set, which pgx sends to the
// server as a run-time parameter.
func withSearchPath(t *testing.T, dsn, schema string) string {
	t.Helper()
	if !strings.Contains(dsn, "://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// newSchema creates an empty schema dropped when t ends, so that tests
// running at the same time never see each other's tables.
func newSchema(t *testing.T, admin *sql.DB) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "rampart_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func TestPostgres(t *testing.T) {
	admin, dsn := testPostgres(t)
	var mu sync.Mutex
	schemas := map[*testing.T]string{}
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		schema, ok := schemas[t]
		if !ok {
			schema = newSchema(t, admin)
			schemas[t] = schema
		}
		mu.Unlock()
		s, err := store.OpenPostgres(t.Context(), withSearchPath(t, dsn, schema))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestPostgresConcurrentOpen opens one database from several "replicas" at
// once: exactly one must migrate it and all must succeed.
func TestPostgresConcurrentOpen(t *testing.T) {
	admin, dsn := testPostgres(t)
	dsn = withSearchPath(t, dsn, newSchema(t, admin))
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
