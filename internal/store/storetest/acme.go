package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

func acmeStore(t *testing.T, h harness) store.ACMEStore {
	t.Helper()
	s, ok := h.open(t).(store.ACMEStore)
	if !ok {
		t.Fatal("the store does not implement store.ACMEStore")
	}
	return s
}

func eabKey(kid string, reusable bool) store.ACMEEABKey {
	return store.ACMEEABKey{KeyID: kid, Sealed: []byte("sealed-" + kid), Label: "ingress", AllowedNames: []string{"*.example.org", "10.0.0.0/8"},
		Reusable: reusable, CreatedAt: at(0), ExpiresAt: at(24 * time.Hour)}
}

func account(id, thumb, kid string) store.ACMEAccount {
	return store.ACMEAccount{ID: id, Thumbprint: thumb, JWK: []byte(`{"kty":"EC"}`), Status: store.ACMEValid, Contact: []string{"mailto:ops@example.org"},
		EABKeyID: kid, CreatedAt: at(0), UpdatedAt: at(0)}
}

func testACMEEABKeys(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	k := eabKey("kid-1", false)
	must(t, s.CreateACMEEABKey(ctx, k))
	wantErrIs(t, "same kid again", s.CreateACMEEABKey(ctx, k), store.ErrConflict)
	got, err := s.GetACMEEABKey(ctx, "kid-1")
	must(t, err)
	wantEqual(t, "stored key", got, k)
	_, err = s.GetACMEEABKey(ctx, "nope")
	wantErrIs(t, "unknown kid", err, store.ErrNotFound)
	must(t, s.CreateACMEEABKey(ctx, store.ACMEEABKey{KeyID: "kid-2", Sealed: []byte("x"), CreatedAt: at(time.Second)}))
	list, err := s.ListACMEEABKeys(ctx)
	must(t, err)
	if len(list) != 2 || list[0].KeyID != "kid-1" || list[1].KeyID != "kid-2" || list[1].AllowedNames == nil {
		t.Fatalf("list = %+v", list)
	}
	must(t, s.RevokeACMEEABKey(ctx, "kid-1", at(time.Minute)))
	wantErrIs(t, "revoke twice", s.RevokeACMEEABKey(ctx, "kid-1", at(2*time.Minute)), store.ErrStateConflict)
	wantErrIs(t, "revoke unknown", s.RevokeACMEEABKey(ctx, "nope", at(time.Minute)), store.ErrNotFound)
	got, err = s.GetACMEEABKey(ctx, "kid-1")
	must(t, err)
	wantEqual(t, "revoked at", got.RevokedAt, at(time.Minute))
}

func testACMEAccounts(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	must(t, s.CreateACMEEABKey(ctx, eabKey("single", false)))
	must(t, s.CreateACMEEABKey(ctx, eabKey("shared", true)))
	must(t, s.CreateACMEEABKey(ctx, eabKey("revoked", true)))
	must(t, s.RevokeACMEEABKey(ctx, "revoked", at(0)))

	a := account("acct-1", "thumb-1", "single")
	must(t, s.CreateACMEAccount(ctx, a, at(time.Minute)))
	wantErrIs(t, "single-use key bound twice", s.CreateACMEAccount(ctx, account("acct-2", "thumb-2", "single"), at(time.Minute)), store.ErrStateConflict)
	wantErrIs(t, "revoked key", s.CreateACMEAccount(ctx, account("acct-3", "thumb-3", "revoked"), at(time.Minute)), store.ErrRevoked)
	wantErrIs(t, "unknown key", s.CreateACMEAccount(ctx, account("acct-4", "thumb-4", "nope"), at(time.Minute)), store.ErrNotFound)
	wantErrIs(t, "key past its binding deadline", s.CreateACMEAccount(ctx, account("acct-5", "thumb-5", "shared"), at(25*time.Hour)), store.ErrExpired)
	wantErrIs(t, "same account key twice", s.CreateACMEAccount(ctx, account("acct-6", "thumb-1", "shared"), at(time.Minute)), store.ErrConflict)
	must(t, s.CreateACMEAccount(ctx, account("acct-7", "thumb-7", "shared"), at(time.Minute)))
	must(t, s.CreateACMEAccount(ctx, account("acct-8", "thumb-8", "shared"), at(time.Minute)))
	must(t, s.CreateACMEAccount(ctx, account("acct-9", "thumb-9", ""), at(time.Minute)))
	// A refused registration leaves nothing behind (the conflict above
	// did not count a binding).
	k, err := s.GetACMEEABKey(ctx, "shared")
	must(t, err)
	wantEqual(t, "accounts bound to the shared key", k.Accounts, 2)

	got, err := s.GetACMEAccount(ctx, "acct-1")
	must(t, err)
	wantEqual(t, "stored account", got, a)
	got, err = s.GetACMEAccountByThumbprint(ctx, "thumb-1")
	must(t, err)
	wantEqual(t, "by thumbprint", got.ID, "acct-1")
	_, err = s.GetACMEAccount(ctx, "acct-2")
	wantErrIs(t, "refused account", err, store.ErrNotFound)

	// Key change: to a key another account holds is a conflict; from a
	// key the account no longer has is a state conflict.
	wantErrIs(t, "change to another account's key", s.ChangeACMEAccountKey(ctx, "acct-1", "thumb-1", "thumb-7", []byte(`{}`), at(time.Hour)), store.ErrConflict)
	must(t, s.ChangeACMEAccountKey(ctx, "acct-1", "thumb-1", "thumb-1b", []byte(`{"kty":"OKP"}`), at(time.Hour)))
	wantErrIs(t, "change from a stale key", s.ChangeACMEAccountKey(ctx, "acct-1", "thumb-1", "thumb-1c", []byte(`{}`), at(time.Hour)), store.ErrStateConflict)
	got, err = s.GetACMEAccountByThumbprint(ctx, "thumb-1b")
	must(t, err)
	wantEqual(t, "new key", string(got.JWK), `{"kty":"OKP"}`)

	must(t, s.UpdateACMEAccount(ctx, "acct-1", []string{"mailto:new@example.org"}, store.ACMEValid, at(2*time.Hour)))
	must(t, s.UpdateACMEAccount(ctx, "acct-1", nil, store.ACMEDeactivated, at(3*time.Hour)))
	wantErrIs(t, "update a deactivated account", s.UpdateACMEAccount(ctx, "acct-1", nil, store.ACMEValid, at(4*time.Hour)), store.ErrStateConflict)
	wantErrIs(t, "key change of a deactivated account", s.ChangeACMEAccountKey(ctx, "acct-1", "thumb-1b", "thumb-1d", []byte(`{}`), at(4*time.Hour)), store.ErrStateConflict)
	got, err = s.GetACMEAccount(ctx, "acct-1")
	must(t, err)
	if got.Status != store.ACMEDeactivated || len(got.Contact) != 0 || !got.UpdatedAt.Equal(at(3*time.Hour)) {
		t.Fatalf("deactivated account = %+v", got)
	}
}

// Of many registrations racing for one single-use EAB key, one binds it.
func testACMEEABBindRace(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	must(t, s.CreateACMEEABKey(ctx, eabKey("race", false)))
	const n = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			id := string(rune('a' + i))
			errs[i] = s.CreateACMEAccount(ctx, account("acct-"+id, "thumb-"+id, "race"), at(0))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrStateConflict):
			t.Errorf("registration %d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d registrations bound the single-use key, want exactly 1", wins, n)
	}
}

func order(id, acct string, authzIDs ...string) (store.ACMEOrder, []store.ACMEAuthz) {
	o := store.ACMEOrder{ID: id, AccountID: acct, Status: store.ACMEPending, Identifiers: []store.ACMEIdentifier{{Type: "dns", Value: "a.example.org"}},
		ExpiresAt: at(24 * time.Hour), CreatedAt: at(0), UpdatedAt: at(0)}
	var as []store.ACMEAuthz
	for _, a := range authzIDs {
		as = append(as, store.ACMEAuthz{ID: a, OrderID: id, AccountID: acct, Identifier: store.ACMEIdentifier{Type: "dns", Value: a + ".example.org"},
			Status: store.ACMEPending, Token: "tok-" + a, ExpiresAt: at(24 * time.Hour), CreatedAt: at(0)})
	}
	return o, as
}

func cert(serial, acct, orderID string) store.ACMECert {
	return store.ACMECert{Serial: serial, AccountID: acct, OrderID: orderID, Names: []string{"a.example.org", "10.0.0.1"}, Chain: []byte("PEM"),
		AKI: []byte{1, 2, 3}, NotBefore: at(0), NotAfter: at(24 * time.Hour), IssuedAt: at(0)}
}

func testACMEOrders(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	o, as := order("ord-1", "acct-1", "az-1", "az-2")
	must(t, s.CreateACMEOrder(ctx, o, as, at(0)))
	wantErrIs(t, "same order twice", s.CreateACMEOrder(ctx, o, nil, at(0)), store.ErrConflict)
	gotO, gotA, err := s.GetACMEOrder(ctx, "ord-1")
	must(t, err)
	wantEqual(t, "order", gotO, o)
	wantEqual(t, "authorizations", gotA, as)
	ids, err := s.ListACMEOrders(ctx, "acct-1", 10)
	must(t, err)
	wantEqual(t, "orders", ids, []string{"ord-1"})

	// The first validation result recorded decides; a later one (of
	// the same or another challenge) changes nothing.
	must(t, s.FinishACMEChallenge(ctx, "az-1", "dns-01", true, nil, at(10*time.Minute), at(11*time.Minute)))
	wantErrIs(t, "a second result", s.FinishACMEChallenge(ctx, "az-1", "http-01", false, []byte(`{}`), at(10*time.Minute), at(12*time.Minute)), store.ErrStateConflict)
	wantErrIs(t, "the same result twice", s.FinishACMEChallenge(ctx, "az-1", "dns-01", true, nil, at(10*time.Minute), at(11*time.Minute)), store.ErrStateConflict)
	a, err := s.GetACMEAuthz(ctx, "az-1")
	must(t, err)
	if a.Status != store.ACMEValid || a.Attempted != "dns-01" || !a.AttemptedAt.Equal(at(10*time.Minute)) || !a.ValidatedAt.Equal(at(11*time.Minute)) || a.Error != nil {
		t.Fatalf("validated authorization = %+v", a)
	}

	// Finalize once; complete stores the certificate.
	must(t, s.FinalizeACMEOrder(ctx, "ord-1", at(12*time.Minute)))
	wantErrIs(t, "finalize twice", s.FinalizeACMEOrder(ctx, "ord-1", at(12*time.Minute)), store.ErrStateConflict)
	c := cert("abc1", "acct-1", "ord-1")
	must(t, s.CompleteACMEOrder(ctx, "ord-1", c, at(13*time.Minute)))
	wantErrIs(t, "complete twice", s.CompleteACMEOrder(ctx, "ord-1", cert("abc2", "acct-1", "ord-1"), at(13*time.Minute)), store.ErrStateConflict)
	gotO, _, err = s.GetACMEOrder(ctx, "ord-1")
	must(t, err)
	if gotO.Status != store.ACMEValid || gotO.CertSerial != "abc1" {
		t.Fatalf("completed order = %+v", gotO)
	}
	gotC, err := s.GetACMECert(ctx, "abc1")
	must(t, err)
	wantEqual(t, "certificate", gotC, c)

	// A failed challenge fails the authorization and its order.
	o2, as2 := order("ord-2", "acct-1", "az-3")
	o2.CreatedAt = at(time.Second)
	must(t, s.CreateACMEOrder(ctx, o2, as2, at(time.Second)))
	must(t, s.FinishACMEChallenge(ctx, "az-3", "http-01", false, []byte(`{"type":"urn:ietf:params:acme:error:unauthorized"}`), at(time.Minute), at(2*time.Minute)))
	gotO, gotA, err = s.GetACMEOrder(ctx, "ord-2")
	must(t, err)
	if gotO.Status != store.ACMEInvalid || gotA[0].Status != store.ACMEInvalid || string(gotA[0].Error) == "" || string(gotO.Error) == "" {
		t.Fatalf("failed order = %+v %+v", gotO, gotA)
	}
	wantErrIs(t, "finalize an invalid order", s.FinalizeACMEOrder(ctx, "ord-2", at(3*time.Minute)), store.ErrStateConflict)

	// Deactivation, and a processing order that fails.
	must(t, s.DeactivateACMEAuthz(ctx, "az-2", at(time.Hour)))
	wantErrIs(t, "deactivate twice", s.DeactivateACMEAuthz(ctx, "az-2", at(time.Hour)), store.ErrStateConflict)
	o3, as3 := order("ord-3", "acct-1", "az-4")
	o3.CreatedAt = at(2 * time.Second)
	must(t, s.CreateACMEOrder(ctx, o3, as3, at(2*time.Second)))
	must(t, s.FinalizeACMEOrder(ctx, "ord-3", at(time.Hour)))
	must(t, s.FailACMEOrder(ctx, "ord-3", []byte(`{"type":"x"}`), at(time.Hour)))
	wantErrIs(t, "fail twice", s.FailACMEOrder(ctx, "ord-3", nil, at(time.Hour)), store.ErrStateConflict)
	ids, err = s.ListACMEOrders(ctx, "acct-1", 2)
	must(t, err)
	wantEqual(t, "newest orders first", ids, []string{"ord-3", "ord-2"})
}

func testACMEReplaces(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	o, as := order("ord-1", "acct-1", "az-1")
	must(t, s.CreateACMEOrder(ctx, o, as, at(0)))
	must(t, s.FinalizeACMEOrder(ctx, "ord-1", at(0)))
	must(t, s.CompleteACMEOrder(ctx, "ord-1", cert("c1", "acct-1", "ord-1"), at(0)))

	r1, ras1 := order("ord-r1", "acct-1", "az-r1")
	r1.Replaces = "c1"
	must(t, s.CreateACMEOrder(ctx, r1, ras1, at(time.Hour)))
	r2, ras2 := order("ord-r2", "acct-1", "az-r2")
	r2.Replaces = "c1"
	wantErrIs(t, "second replacement while the first is live", s.CreateACMEOrder(ctx, r2, ras2, at(time.Hour)), store.ErrConflict)
	if _, _, err := s.GetACMEOrder(ctx, "ord-r2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused replacement order was stored: %v", err)
	}
	// Once the first replacement fails, another may replace the
	// certificate.
	must(t, s.FinishACMEChallenge(ctx, "az-r1", "http-01", false, []byte(`{}`), at(time.Hour), at(time.Hour)))
	must(t, s.CreateACMEOrder(ctx, r2, ras2, at(2*time.Hour)))
	c, err := s.GetACMECert(ctx, "c1")
	must(t, err)
	wantEqual(t, "replaced by", c.ReplacedBy, "ord-r2")
	// So may one after the second expired unfinished.
	r3, ras3 := order("ord-r3", "acct-1", "az-r3")
	r3.Replaces = "c1"
	wantErrIs(t, "while the second is live", s.CreateACMEOrder(ctx, r3, ras3, at(3*time.Hour)), store.ErrConflict)
	must(t, s.CreateACMEOrder(ctx, r3, ras3, at(25*time.Hour)))
	r4, ras4 := order("ord-r4", "acct-1", "az-r4")
	r4.Replaces = "nope"
	wantErrIs(t, "replace an unknown certificate", s.CreateACMEOrder(ctx, r4, ras4, at(0)), store.ErrNotFound)
}

func testACMECerts(t *testing.T, h harness) {
	st := h.open(t)
	s, ctx := st.(store.ACMEStore), t.Context()
	for i, serial := range []string{"c1", "c2", "c3"} {
		id := "ord-" + serial
		o, as := order(id, "acct-1", "az-"+serial)
		if serial == "c3" {
			o.AccountID = "acct-2"
		}
		must(t, s.CreateACMEOrder(ctx, o, as, at(0)))
		must(t, s.FinalizeACMEOrder(ctx, id, at(0)))
		c := cert(serial, o.AccountID, id)
		c.IssuedAt = at(time.Duration(i) * time.Minute)
		c.NotAfter = at(time.Duration(i+1) * time.Hour)
		must(t, s.CompleteACMEOrder(ctx, id, c, at(0)))
	}
	list, err := s.ListACMECerts(ctx, store.ACMECertFilter{}, at(90*time.Minute))
	must(t, err)
	if len(list) != 2 || list[0].Serial != "c3" || list[1].Serial != "c2" {
		t.Fatalf("unexpired certificates, newest first = %+v", list)
	}
	list, err = s.ListACMECerts(ctx, store.ACMECertFilter{AccountID: "acct-1", Expired: true}, at(90*time.Minute))
	must(t, err)
	if len(list) != 2 || list[0].Serial != "c2" || list[1].Serial != "c1" {
		t.Fatalf("acct-1's certificates = %+v", list)
	}

	// At 1h40m c2 (0 to 2h) is in the last quarter of its life, c3 (0 to
	// 3h) is not, and c1 has expired.
	valid, near, err := s.CountACMECerts(ctx, at(100*time.Minute))
	must(t, err)
	if valid != 2 || near != 1 {
		t.Fatalf("at 1h40m: valid %d, near expiry %d; want 2, 1", valid, near)
	}

	rev := revision(t, st)
	must(t, s.RevokeACMECert(ctx, "c2", 1, at(time.Minute)))
	wantErrIs(t, "revoke twice", s.RevokeACMECert(ctx, "c2", 1, at(time.Minute)), store.ErrStateConflict)
	wantErrIs(t, "revoke unknown", s.RevokeACMECert(ctx, "c9", 1, at(time.Minute)), store.ErrNotFound)
	if revision(t, st) <= rev {
		t.Fatal("revoking an ACME certificate did not bump the revision")
	}
	revs, err := st.ListRevocations(ctx, at(time.Minute))
	must(t, err)
	if len(revs) != 1 || revs[0].Serial != "c2" || !revs[0].NotAfter.Equal(at(2*time.Hour)) {
		t.Fatalf("revocation list = %+v", revs)
	}
	c, err := s.GetACMECert(ctx, "c2")
	must(t, err)
	if !c.RevokedAt.Equal(at(time.Minute)) || c.RevocationReason != 1 {
		t.Fatalf("revoked certificate = %+v", c)
	}
	valid, _, err = s.CountACMECerts(ctx, at(time.Minute))
	must(t, err)
	wantEqual(t, "valid after one revoked", valid, int64(2))

	// Pruning keeps what is still useful.
	must(t, s.PruneACME(ctx, at(4*time.Hour), at(150*time.Minute)))
	_, err = s.GetACMECert(ctx, "c1")
	wantErrIs(t, "pruned certificate", err, store.ErrNotFound)
	_, err = s.GetACMECert(ctx, "c3")
	must(t, err)
}

func testACMENonces(t *testing.T, h harness) {
	s, ctx := acmeStore(t, h), t.Context()
	must(t, s.UseACMENonce(ctx, []byte("n1"), at(time.Minute)))
	wantErrIs(t, "replayed nonce", s.UseACMENonce(ctx, []byte("n1"), at(time.Minute)), store.ErrConflict)
	must(t, s.UseACMENonce(ctx, []byte("n2"), at(time.Hour)))
	must(t, s.PruneACME(ctx, at(2*time.Minute), at(0)))
	// n2 is kept until it expires.
	wantErrIs(t, "replayed unexpired nonce after pruning", s.UseACMENonce(ctx, []byte("n2"), at(time.Hour)), store.ErrConflict)
	must(t, s.UseACMENonce(ctx, []byte("n1"), at(3*time.Minute)))
}
