package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	rev = revision(t, s)
	c.Disabled, c.Name = true, "Orders (disabled)"
	c.SecretHash = []byte("not replaced by an update")
	must(t, s.UpdateOAuthClient(ctx, c))
	if revision(t, s) <= rev {
		t.Fatal("updating a client did not bump the revision")
	}
	got, err = s.GetOAuthClient(ctx, "orders")
	must(t, err)
	if !got.Disabled || got.Name != "Orders (disabled)" || string(got.SecretHash) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("updated client %+v", got)
	}
	wantErrIs(t, "update unknown", s.UpdateOAuthClient(ctx, store.OAuthClient{ID: "nobody"}), store.ErrNotFound)
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

	// Two failures are free; the third backs off a minute, the next (after
	// it) two, then four, capped at five; failures during a back-off are
	// not counted.
	b := store.Backoff{Free: 3, Base: time.Minute, Max: 5 * time.Minute}
	for i := 1; i <= 2; i++ {
		got, err = s.LoginFailed(ctx, "alice", at(time.Duration(i)*time.Second), b)
		must(t, err)
		if got.FailedLogins != i || !got.LockedUntil.IsZero() {
			t.Fatalf("after %d failures: %d, locked until %v", i, got.FailedLogins, got.LockedUntil)
		}
	}
	now := at(3 * time.Second)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
		got, err = s.LoginFailed(ctx, "alice", now, b)
		must(t, err)
		if got.FailedLogins != 3+i || !got.LockedUntil.Equal(now.Add(want)) {
			t.Fatalf("failure %d: count %d, locked until %v, want %v", 3+i, got.FailedLogins, got.LockedUntil, now.Add(want))
		}
		// During the back-off: not counted, the lock unchanged.
		again, err := s.LoginFailed(ctx, "alice", now.Add(want-time.Second), b)
		must(t, err)
		if again.FailedLogins != got.FailedLogins || !again.LockedUntil.Equal(got.LockedUntil) {
			t.Fatalf("failure during the back-off counted: %+v", again)
		}
		now = got.LockedUntil
	}
	if _, err := s.LoginFailed(ctx, "alice", now, store.Backoff{}); err == nil {
		t.Fatal("a zero back-off was accepted")
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
	_, err = s.LoginFailed(ctx, "nobody", at(0), b)
	wantErrIs(t, "unknown user", err, store.ErrNotFound)

	// One-time code steps only move forward; the legacy JSON value counts.
	wantErrIs(t, "step of unknown user", s.UseTOTPStep(ctx, "nobody", 5), store.ErrNotFound)
	must(t, s.UseTOTPStep(ctx, "alice", 100))
	wantErrIs(t, "same step again", s.UseTOTPStep(ctx, "alice", 100), store.ErrConflict)
	wantErrIs(t, "earlier step", s.UseTOTPStep(ctx, "alice", 99), store.ErrConflict)
	got, err = s.GetOAuthUser(ctx, "alice")
	must(t, err)
	if got.TOTPLastStep != 100 {
		t.Fatalf("last step %d, want 100", got.TOTPLastStep)
	}
	// An admin update (which rewrites the document) does not move it back.
	u.TOTPLastStep = 0
	must(t, s.UpdateOAuthUser(ctx, u))
	if got, _ = s.GetOAuthUser(ctx, "alice"); got.TOTPLastStep != 100 {
		t.Fatalf("last step after an update %d, want 100", got.TOTPLastStep)
	}
	must(t, s.UseTOTPStep(ctx, "alice", 101))
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
	// family for proxies (a family never recorded as such, by its ID).
	rev := revision(t, s)
	r := store.TokenRevocation{Reason: "refresh token reused", RevokedAt: at(3 * time.Minute), ExpiresAt: at(13 * time.Minute)}
	ids, err := s.RevokeOAuthFamilies(ctx, store.FamilySelector{ID: "fam-1"}, r)
	must(t, err)
	if len(ids) != 1 || ids[0] != "fam-1" {
		t.Fatalf("revoked %v", ids)
	}
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

// testOAuthFamilies: revoking a family revokes the families exchanged from
// it, however deep; revoking by subject or client finds every live family
// and grant of theirs; a child of a revoked family cannot be recorded.
func testOAuthFamilies(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	fam := func(id, parent, client, subject string, life time.Duration) store.OAuthFamily {
		return store.OAuthFamily{ID: id, Parent: parent, ClientID: client, Subject: subject, ExpiresAt: at(life), CreatedAt: at(0)}
	}
	for _, f := range []store.OAuthFamily{
		fam("login-a", "", "web", "alice", 24*time.Hour),          // alice at web
		fam("ex-1", "login-a", "orders", "alice", 10*time.Minute), // web's token exchanged by orders
		fam("ex-2", "ex-1", "payments", "alice", 10*time.Minute),  // and again by payments
		fam("login-b", "", "web", "bob", 24*time.Hour),
		fam("cc-orders", "", "orders", "", 10*time.Minute), // orders' own token
		fam("ex-3", "cc-orders", "payments", "", 10*time.Minute),
		fam("old", "", "web", "alice", time.Minute), // expired by the time of revocation
	} {
		must(t, s.PutOAuthFamily(ctx, f))
	}
	wantErrIs(t, "family twice", s.PutOAuthFamily(ctx, fam("ex-1", "", "x", "", time.Hour)), store.ErrConflict)
	// A family whose parent was never recorded (older tokens) is allowed.
	must(t, s.PutOAuthFamily(ctx, fam("ex-legacy", "never-recorded", "orders", "carol", 10*time.Minute)))
	code := store.OAuthGrant{Hash: []byte("code-a"), Kind: store.GrantCode, Family: "login-a2", ClientID: "web", Subject: "alice",
		Data: []byte("{}"), ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.PutOAuthGrant(ctx, code))
	refreshB := store.OAuthGrant{Hash: []byte("refresh-b"), Kind: store.GrantRefresh, Family: "login-b", ClientID: "web", Subject: "bob",
		Data: []byte("{}"), ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.PutOAuthGrant(ctx, refreshB))

	r := store.TokenRevocation{Reason: "user disabled", RevokedAt: at(2 * time.Minute), ExpiresAt: at(13 * time.Minute)}
	ids, err := s.RevokeOAuthFamilies(ctx, store.FamilySelector{Subject: "alice"}, r)
	must(t, err)
	slices.Sort(ids)
	if want := []string{"ex-1", "ex-2", "login-a"}; !slices.Equal(ids, want) {
		t.Fatalf("alice's families revoked: %v, want %v", ids, want)
	}
	// Her unused code of another (unrecorded) family is spent too.
	_, err = s.UseOAuthGrant(ctx, store.GrantCode, code.Hash, at(3*time.Minute))
	wantErrIs(t, "alice's code after revocation", err, store.ErrGrantReused)
	// Nothing new descends from a revoked family.
	wantErrIs(t, "exchange from a revoked family", s.PutOAuthFamily(ctx, fam("ex-4", "ex-2", "reports", "alice", 10*time.Minute)), store.ErrRevoked)
	list, err := s.ListOAuthRevocations(ctx, at(3*time.Minute))
	must(t, err)
	got := map[string]time.Time{}
	for _, rv := range list {
		got[rv.ID] = rv.ExpiresAt
	}
	// Each is listed until its tokens are gone: the earlier of the
	// revocation's horizon and the family's own end.
	if len(got) != 3 || !got["login-a"].Equal(at(13*time.Minute)) || !got["ex-1"].Equal(at(10*time.Minute)) {
		t.Fatalf("revocation list %v", list)
	}

	// By client: orders' own family, the ones issued to it by exchange,
	// and what was exchanged from those; bob's login at web is untouched.
	ids, err = s.RevokeOAuthFamilies(ctx, store.FamilySelector{ClientID: "orders"}, r)
	must(t, err)
	slices.Sort(ids)
	if want := []string{"cc-orders", "ex-1", "ex-2", "ex-3", "ex-legacy"}; !slices.Equal(ids, want) {
		t.Fatalf("orders' families revoked: %v, want %v", ids, want)
	}
	if _, err := s.UseOAuthGrant(ctx, store.GrantRefresh, refreshB.Hash, at(3*time.Minute)); err != nil {
		t.Fatalf("bob's refresh token after other revocations: %v", err)
	}
	ids, err = s.RevokeOAuthFamilies(ctx, store.FamilySelector{ClientID: "web"}, r)
	must(t, err)
	if !slices.Contains(ids, "login-b") {
		t.Fatalf("web's families revoked: %v", ids)
	}
	_, err = s.RevokeOAuthFamilies(ctx, store.FamilySelector{Subject: "a", ClientID: "b"}, r)
	if err == nil {
		t.Fatal("a selector of two fields was accepted")
	}
	must(t, s.PruneExpired(ctx, at(25*time.Hour)))
	must(t, s.PutOAuthFamily(ctx, fam("login-a", "", "web", "alice", 48*time.Hour))) // pruned: the ID is free again
}

// testOAuthFamilyRace: an exchange recording a child family while its
// parent is revoked either fails or is revoked with it, never survives.
func testOAuthFamilyRace(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	for round := 0; round < 8; round++ {
		parent := fmt.Sprintf("p%d", round)
		must(t, s.PutOAuthFamily(ctx, store.OAuthFamily{ID: parent, ClientID: "web", Subject: "alice", ExpiresAt: at(time.Hour), CreatedAt: at(0)}))
		var wg sync.WaitGroup
		var children sync.Map
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("%s-c%d", parent, i)
				err := s.PutOAuthFamily(ctx, store.OAuthFamily{ID: id, Parent: parent, ClientID: "orders", Subject: "alice", ExpiresAt: at(time.Hour), CreatedAt: at(0)})
				switch {
				case err == nil:
					children.Store(id, true)
				case !errors.Is(err, store.ErrRevoked):
					t.Error(err)
				}
			}()
		}
		var ids []string
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			ids, err = s.RevokeOAuthFamilies(ctx, store.FamilySelector{ID: parent}, store.TokenRevocation{Reason: "r", RevokedAt: at(time.Second), ExpiresAt: at(time.Hour)})
			if err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		children.Range(func(k, _ any) bool {
			if !slices.Contains(ids, k.(string)) {
				t.Errorf("child %s recorded but not revoked with its parent (revoked %v)", k, ids)
			}
			return true
		})
	}
}

// testTOTPStepRace: of concurrent logins with one code, one wins.
func testTOTPStepRace(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	must(t, s.CreateOAuthUser(ctx, store.OAuthUser{Username: "alice", PasswordHash: "x", CreatedAt: at(0)}))
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := s.UseTOTPStep(ctx, "alice", 7); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrConflict):
				refused.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != 15 {
		t.Fatalf("accepted %d, refused %d; want 1 and 15", ok.Load(), refused.Load())
	}
}

// testDPoPProofs: a proof is recorded once; a key holds at most its quota
// of live proofs; expired ones stop counting and are pruned.
func testDPoPProofs(t *testing.T, h harness) {
	s := h.open(t)
	ctx := t.Context()
	must(t, s.UseDPoPProof(ctx, "key-a", "jti-1", at(2*time.Minute), at(0), 2))
	wantErrIs(t, "replay", s.UseDPoPProof(ctx, "key-a", "jti-1", at(2*time.Minute), at(time.Second), 2), store.ErrConflict)
	// The same jti from another key is another proof.
	must(t, s.UseDPoPProof(ctx, "key-b", "jti-1", at(2*time.Minute), at(0), 2))
	must(t, s.UseDPoPProof(ctx, "key-a", "jti-2", at(3*time.Minute), at(0), 2))
	wantErrIs(t, "over quota", s.UseDPoPProof(ctx, "key-a", "jti-3", at(3*time.Minute), at(0), 2), store.ErrQuota)
	// Another key is not affected by key-a's quota.
	must(t, s.UseDPoPProof(ctx, "key-b", "jti-2", at(2*time.Minute), at(0), 2))
	// Once jti-1 expires, key-a has room again.
	must(t, s.UseDPoPProof(ctx, "key-a", "jti-3", at(4*time.Minute), at(2*time.Minute), 2))
	must(t, s.PruneExpired(ctx, at(10*time.Minute)))
	must(t, s.UseDPoPProof(ctx, "key-a", "jti-1", at(12*time.Minute), at(10*time.Minute), 2))
	if err := s.UseDPoPProof(ctx, "key-a", "jti-9", at(12*time.Minute), at(10*time.Minute), 0); err == nil {
		t.Fatal("a quota of 0 was accepted")
	}
}
