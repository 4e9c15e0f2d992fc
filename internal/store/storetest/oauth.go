package storetest

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

func testOAuthClients(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	c := store.OAuthClient{
		ID: "orders", SecretHash: []byte("0123456789abcdef0123456789abcdef"), Name: "Orders",
		AuthMethod: "client_secret_basic", RedirectURIs: []string{"https://orders.example/cb"},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: []string{"openid", "orders:read"},
		Audience: []string{"spiffe://example.org/payments"}, JWKS: json.RawMessage(`{"keys":[]}`),
		SPIFFEID: "spiffe://example.org/orders", CreatedAt: at(0),
	}
	rev := revision(t, s)
	must(t, s.CreateOAuthClient(ctx, c))
	if revision(t, s) <= rev {
		t.Fatal("creating a client did not bump the revision")
	}
	wantErrIs(t, "create twice", s.CreateOAuthClient(ctx, c), store.ErrConflict)
	got, err := s.GetOAuthClient(ctx, "orders")
	must(t, err)
	wantEqual(t, "client", got, c)
	pub := store.OAuthClient{ID: "spa", AuthMethod: "none", GrantTypes: []string{"authorization_code"}, CreatedAt: at(time.Second)}
	must(t, s.CreateOAuthClient(ctx, pub))
	list, err := s.ListOAuthClients(ctx)
	must(t, err)
	if len(list) != 2 || list[0].ID != "orders" || list[1].ID != "spa" || list[1].SecretHash != nil {
		t.Fatalf("list = %+v", list)
	}
	must(t, s.DeleteOAuthClient(ctx, "orders"))
	_, err = s.GetOAuthClient(ctx, "orders")
	wantErrIs(t, "get deleted", err, store.ErrNotFound)
	wantErrIs(t, "delete twice", s.DeleteOAuthClient(ctx, "orders"), store.ErrNotFound)
}

func testOAuthUsers(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	u := store.OAuthUser{Username: "alice", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=2$c2FsdA$aGFzaA",
		Name: "Alice", Email: "alice@example.org", Groups: []string{"buyers"}, CreatedAt: at(0)}
	must(t, s.CreateOAuthUser(ctx, u))
	wantErrIs(t, "create twice", s.CreateOAuthUser(ctx, u), store.ErrConflict)
	got, err := s.GetOAuthUser(ctx, "alice")
	must(t, err)
	wantEqual(t, "user", got, u)

	// Three failures lock the account for a minute, then the count restarts.
	for i := 1; i <= 2; i++ {
		got, err = s.LoginFailed(ctx, "alice", at(time.Duration(i)*time.Second), 3, time.Minute)
		must(t, err)
		if got.FailedLogins != i || !got.LockedUntil.IsZero() {
			t.Fatalf("after %d failures: %d, locked until %v", i, got.FailedLogins, got.LockedUntil)
		}
	}
	got, err = s.LoginFailed(ctx, "alice", at(3*time.Second), 3, time.Minute)
	must(t, err)
	if got.FailedLogins != 0 || !got.LockedUntil.Equal(at(63*time.Second)) {
		t.Fatalf("third failure: count %d, locked until %v", got.FailedLogins, got.LockedUntil)
	}
	// An admin update does not clear the lock.
	u.Name = "Alice A."
	must(t, s.UpdateOAuthUser(ctx, u))
	got, err = s.GetOAuthUser(ctx, "alice")
	must(t, err)
	if got.Name != "Alice A." || got.LockedUntil.IsZero() {
		t.Fatalf("after update: %+v", got)
	}
	must(t, s.LoginSucceeded(ctx, "alice"))
	got, err = s.GetOAuthUser(ctx, "alice")
	must(t, err)
	if !got.LockedUntil.IsZero() || got.FailedLogins != 0 {
		t.Fatalf("after success: %+v", got)
	}
	_, err = s.LoginFailed(ctx, "nobody", at(0), 3, time.Minute)
	wantErrIs(t, "unknown user", err, store.ErrNotFound)
	wantErrIs(t, "update unknown", s.UpdateOAuthUser(ctx, store.OAuthUser{Username: "nobody"}), store.ErrNotFound)
	must(t, s.DeleteOAuthUser(ctx, "alice"))
	list, err := s.ListOAuthUsers(ctx)
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("users after delete: %+v", list)
	}
}

func testOAuthGrants(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	g := store.OAuthGrant{Hash: []byte("hash-1"), Kind: store.GrantRefresh, Family: "fam-1", ClientID: "orders",
		Subject: "alice", Data: []byte(`{"scope":"openid"}`), ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.PutOAuthGrant(ctx, g))
	wantErrIs(t, "put twice", s.PutOAuthGrant(ctx, g), store.ErrConflict)
	g2 := g
	g2.Hash = []byte("hash-2")
	must(t, s.PutOAuthGrant(ctx, g2))

	got, err := s.UseOAuthGrant(ctx, store.GrantRefresh, g.Hash, at(time.Minute))
	must(t, err)
	g.UsedAt = at(time.Minute)
	wantEqual(t, "used grant", got, g)
	got, err = s.UseOAuthGrant(ctx, store.GrantRefresh, g.Hash, at(2*time.Minute))
	wantErrIs(t, "second use", err, store.ErrGrantReused)
	if got.Family != "fam-1" {
		t.Fatalf("reuse returned family %q", got.Family)
	}
	_, err = s.UseOAuthGrant(ctx, store.GrantRefresh, []byte("unknown"), at(time.Minute))
	wantErrIs(t, "unknown", err, store.ErrNotFound)
	// A refresh token presented as a code is unknown, and left usable.
	g3 := g
	g3.Hash, g3.Family = []byte("hash-3"), "fam-3"
	must(t, s.PutOAuthGrant(ctx, g3))
	_, err = s.UseOAuthGrant(ctx, store.GrantCode, g3.Hash, at(time.Minute))
	wantErrIs(t, "a refresh token presented as a code", err, store.ErrNotFound)
	_, err = s.UseOAuthGrant(ctx, store.GrantRefresh, g3.Hash, at(time.Minute))
	must(t, err)
	_, err = s.UseOAuthGrant(ctx, store.GrantRefresh, g2.Hash, at(2*time.Hour))
	wantErrIs(t, "expired", err, store.ErrNotFound)

	// Revoking the family makes the unused sibling unusable and lists the
	// family for proxies.
	rev := revision(t, s)
	r := store.TokenRevocation{ID: "fam-1", Reason: "refresh token reused", RevokedAt: at(3 * time.Minute), ExpiresAt: at(13 * time.Minute)}
	must(t, s.RevokeOAuthFamily(ctx, "fam-1", r))
	if revision(t, s) <= rev {
		t.Fatal("revoking a family did not bump the revision")
	}
	_, err = s.UseOAuthGrant(ctx, store.GrantRefresh, g2.Hash, at(4*time.Minute))
	wantErrIs(t, "use after family revoked", err, store.ErrGrantReused)
	must(t, s.RevokeOAuthToken(ctx, store.TokenRevocation{ID: "jti-1", Reason: "revoked", RevokedAt: at(0), ExpiresAt: at(5 * time.Minute)}))
	rev = revision(t, s)
	must(t, s.RevokeOAuthToken(ctx, store.TokenRevocation{ID: "jti-1", Reason: "again", RevokedAt: at(time.Minute), ExpiresAt: at(5 * time.Minute)}))
	if revision(t, s) != rev {
		t.Fatal("revoking a revoked token bumped the revision")
	}
	list, err := s.ListOAuthRevocations(ctx, at(4*time.Minute))
	must(t, err)
	if len(list) != 2 || list[0].ID != "fam-1" || list[1].ID != "jti-1" || list[1].Reason != "revoked" {
		t.Fatalf("revocations = %+v", list)
	}
	list, err = s.ListOAuthRevocations(ctx, at(6*time.Minute))
	must(t, err)
	if len(list) != 1 || list[0].ID != "fam-1" {
		t.Fatalf("revocations after jti-1 expired = %+v", list)
	}
	must(t, s.PruneExpired(ctx, at(2*time.Hour)))
	_, err = s.UseOAuthGrant(ctx, store.GrantRefresh, g.Hash, at(2*time.Hour))
	wantErrIs(t, "pruned", err, store.ErrNotFound)
}

// testOAuthGrantRace: of many concurrent uses of one refresh token, exactly
// one succeeds and every other is reported as reuse.
func testOAuthGrantRace(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	g := store.OAuthGrant{Hash: []byte("race"), Kind: store.GrantCode, Family: "f", ClientID: "c", Data: []byte("{}"),
		ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.PutOAuthGrant(ctx, g))
	var ok, reused atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UseOAuthGrant(ctx, store.GrantCode, g.Hash, at(time.Second))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrGrantReused):
				reused.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || reused.Load() != 15 {
		t.Fatalf("successes %d, reuses %d; want 1 and 15", ok.Load(), reused.Load())
	}
}
