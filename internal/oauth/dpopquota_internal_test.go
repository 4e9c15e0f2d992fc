package oauth

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// Finding 8: the per-key DPoP proof quota was counted and then written in
// two steps, so proofs of one key arriving at once (on one replica or on
// several sharing the database) could all see room and all be taken: a
// key could have far more proofs recorded than its quota. Here many
// goroutines, through several replicas' handles on one database, each
// present a fresh proof of one key; no more than the quota may be
// accepted, and every other one is refused with ErrQuota (nothing else).
func TestDPoPQuotaUnderConcurrency(t *testing.T) {
	const quota, replicas, perReplica = 5, 4, 16
	for _, backend := range []struct {
		name string
		open func(t *testing.T) func() store.Store
	}{
		{"sqlite", func(t *testing.T) func() store.Store {
			path := filepath.Join(t.TempDir(), "rampart.db")
			return func() store.Store {
				st, err := store.OpenSQLite(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
		}},
		{"postgres", func(t *testing.T) func() store.Store {
			dsn := storetest.PostgresDSN(t)
			return func() store.Store {
				st, err := store.OpenPostgres(t.Context(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			open := backend.open(t)
			clock := fakeclock.New(time.Now().Truncate(time.Second))
			var accepted, refused atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make(chan error, replicas*perReplica)
			for r := range replicas {
				st := open()
				rp := storeReplay{st: st, quota: quota, now: clock.Now}
				for i := range perReplica {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						err := rp.Use(t.Context(), "jkt-under-attack", fmt.Sprintf("jti-%d-%d", r, i), clock.Now().Add(2*time.Minute))
						switch {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, dpop.ErrQuota):
							refused.Add(1)
						default:
							errs <- err
						}
					}()
				}
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("a proof was neither taken nor refused for the quota: %v", err)
			}
			if accepted.Load() > quota {
				t.Fatalf("%d proofs of one key accepted at once, quota %d", accepted.Load(), quota)
			}
			if accepted.Load()+refused.Load() != replicas*perReplica || accepted.Load() == 0 {
				t.Fatalf("accepted %d, refused %d of %d", accepted.Load(), refused.Load(), replicas*perReplica)
			}
		})
	}
}
