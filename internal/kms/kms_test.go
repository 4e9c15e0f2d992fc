package kms

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store/storetest"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

type env struct {
	svc   *Service
	st    store.Store
	clock *fakeclock.Clock
	dir   string
	kek   string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	st := storetest.SQLite(t, dir)
	kek := filepath.Join(dir, "kek")
	w, err := keywrap.LoadOrCreateFile(kek)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeclock.New(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	svc, err := New(context.Background(), Config{Store: st, Wrapper: w, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, st: st, clock: c, dir: dir, kek: kek}
}

// must returns v, or panics (failing the test with a trace) on err. Go
// allows f(g()) only when g's results are f's only arguments, so it
// cannot take t.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func TestEncryptRoundTripAcrossRotation(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "orders-pii", "", 0))
	aad := []byte("customer:42")
	ct1, v1, err := e.svc.Encrypt(ctx, "orders-pii", []byte("4111 1111 1111 1111"), aad)
	if err != nil || v1 != 1 {
		t.Fatalf("encrypt: v%d %v", v1, err)
	}
	info := must(e.svc.Rotate(ctx, "orders-pii"))
	if info.Latest != 2 || len(info.Versions) != 2 {
		t.Fatalf("after rotate: %+v", info)
	}
	ct2, v2, _ := e.svc.Encrypt(ctx, "orders-pii", []byte("second"), nil)
	if v2 != 2 {
		t.Fatalf("new encryptions use version %d, want 2", v2)
	}
	for _, c := range []struct {
		ct   []byte
		aad  []byte
		want string
		v    int
	}{{ct1, aad, "4111 1111 1111 1111", 1}, {ct2, nil, "second", 2}} {
		pt, v, err := e.svc.Decrypt(ctx, "orders-pii", c.ct, c.aad)
		if err != nil || string(pt) != c.want || v != c.v {
			t.Fatalf("decrypt v%d: %q v%d %v", c.v, pt, v, err)
		}
	}
	// Rewrap moves the old ciphertext to version 2 without showing it.
	re, v, err := e.svc.Rewrap(ctx, "orders-pii", ct1, aad)
	if err != nil || v != 2 {
		t.Fatalf("rewrap: v%d %v", v, err)
	}
	if h, _, _, _ := ParseHeader(re); h.Version != 2 || h.Kind != KindCiphertext {
		t.Fatalf("rewrapped header %+v", h)
	}
	pt, _, err := e.svc.Decrypt(ctx, "orders-pii", re, aad)
	if err != nil || string(pt) != "4111 1111 1111 1111" {
		t.Fatalf("decrypt rewrapped: %q %v", pt, err)
	}

	// A new Service over the same store (a restart, another replica)
	// reads everything.
	w, _ := keywrap.LoadOrCreateFile(e.kek)
	other := must(New(ctx, Config{Store: e.st, Wrapper: w, Now: e.clock.Now}))
	if pt, _, err := other.Decrypt(ctx, "orders-pii", ct1, aad); err != nil || string(pt) != "4111 1111 1111 1111" {
		t.Fatalf("other replica: %q %v", pt, err)
	}
	// Rotated on one replica, used on the other before it reloads.
	must(other.Rotate(ctx, "orders-pii"))
	ct3, v3, _ := other.Encrypt(ctx, "orders-pii", []byte("third"), nil)
	if pt, _, err := e.svc.Decrypt(ctx, "orders-pii", ct3, nil); v3 != 3 || err != nil || string(pt) != "third" {
		t.Fatalf("version from another replica: v%d %q %v", v3, pt, err)
	}
}

func TestDataKey(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "dk", TypeAES, 0))
	pt, wrapped, v, err := e.svc.DataKey(ctx, "dk", []byte("ctx"))
	if err != nil || len(pt) != DataKeySize || v != 1 {
		t.Fatalf("datakey: %d bytes v%d %v", len(pt), v, err)
	}
	got, _, err := e.svc.Decrypt(ctx, "dk", wrapped, []byte("ctx"))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("unwrap: %v", err)
	}
	// A wrapped data key is kind 'd': relabelled as an ordinary
	// ciphertext it does not open.
	relabel := bytes.Clone(wrapped)
	relabel[2] = KindCiphertext
	_, _, err = e.svc.Decrypt(ctx, "dk", relabel, []byte("ctx"))
	wantErr(t, "data key relabelled as ciphertext", err, ErrDecrypt)
	re, _, err := e.svc.Rewrap(ctx, "dk", wrapped, []byte("ctx"))
	if err != nil || re[2] != KindDataKey {
		t.Fatalf("rewrap of a data key: %v kind %c", err, re[2])
	}
}

func TestSignAndMAC(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, typ := range []string{TypeECDSA, TypeEd25519} {
		t.Run(typ, func(t *testing.T) {
			must(e.svc.Create(ctx, "sig-"+typ, typ, 0))
			sig, v, err := e.svc.Sign(ctx, "sig-"+typ, []byte("release v1.2.3"))
			if err != nil || v != 1 {
				t.Fatal(err)
			}
			must(e.svc.Rotate(ctx, "sig-"+typ))
			if ok, _, err := e.svc.Verify(ctx, "sig-"+typ, []byte("release v1.2.3"), sig); !ok || err != nil {
				t.Fatalf("verify after rotation: %v %v", ok, err)
			}
			if ok, _, _ := e.svc.Verify(ctx, "sig-"+typ, []byte("release v1.2.4"), sig); ok {
				t.Fatal("signature verified for another message")
			}
			// Version edited in the header: the digest covers it.
			moved := bytes.Clone(sig)
			moved[5+len("sig-"+typ)+3] = 2
			if ok, _, _ := e.svc.Verify(ctx, "sig-"+typ, []byte("release v1.2.3"), moved); ok {
				t.Fatal("signature moved to version 2 verified")
			}
			info := must(e.svc.Get(ctx, "sig-"+typ))
			if len(info.Versions[0].PublicKey) == 0 {
				t.Fatal("no public key published")
			}
		})
	}
	must(e.svc.Create(ctx, "mac", TypeHMAC, 0))
	tag, _, err := e.svc.MAC(ctx, "mac", []byte("session=abc"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := e.svc.VerifyMAC(ctx, "mac", []byte("session=abc"), tag); !ok || err != nil {
		t.Fatalf("verify mac: %v %v", ok, err)
	}
	tag[len(tag)-1] ^= 1
	if ok, _, _ := e.svc.VerifyMAC(ctx, "mac", []byte("session=abc"), tag); ok {
		t.Fatal("edited MAC verified")
	}
	_, _, err = e.svc.Encrypt(ctx, "mac", []byte("x"), nil)
	wantErr(t, "encrypt with an HMAC key", err, ErrWrongType)
	_, _, err = e.svc.Sign(ctx, "mac", []byte("x"))
	wantErr(t, "sign with an HMAC key", err, ErrWrongType)
}

// Attacks on ciphertexts: every edit fails, and the error says nothing
// about which check failed.
func TestCiphertextAttacks(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "orders-pii", TypeAES, 0))
	must(e.svc.Create(ctx, "reports", TypeAES, 0))
	must(e.svc.Rotate(ctx, "orders-pii"))
	ct, _, _ := e.svc.Encrypt(ctx, "orders-pii", []byte("secret"), []byte("row:1"))
	hlen := 5 + len("orders-pii") + 4
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ct)) }
	tests := []struct {
		name string
		key  string
		ct   []byte
		aad  string
		want error
	}{
		{"other associated data", "orders-pii", ct, "row:2", ErrDecrypt},
		{"no associated data", "orders-pii", ct, "", ErrDecrypt},
		{"version swapped to 1", "orders-pii", edit(func(b []byte) []byte { b[hlen-1] = 1; return b }), "row:1", ErrDecrypt},
		{"version swapped to an unknown one", "orders-pii", edit(func(b []byte) []byte { b[hlen-1] = 9; return b }), "row:1", ErrNotFound},
		{"key name swapped (same length)", "reports-xx", edit(func(b []byte) []byte { copy(b[5:], "reports-xx"); return b }), "row:1", ErrNotFound},
		{"presented for another key", "reports", ct, "row:1", ErrOtherKey},
		{"truncated", "orders-pii", ct[:len(ct)-1], "row:1", ErrDecrypt},
		{"truncated to the header", "orders-pii", ct[:hlen+3], "row:1", ErrDecrypt},
		{"bit flipped in the body", "orders-pii", edit(func(b []byte) []byte { b[hlen+14] ^= 0x10; return b }), "row:1", ErrDecrypt},
		{"bit flipped in the nonce", "orders-pii", edit(func(b []byte) []byte { b[hlen] ^= 1; return b }), "row:1", ErrDecrypt},
		{"tag edited", "orders-pii", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "row:1", ErrDecrypt},
		{"magic edited", "orders-pii", edit(func(b []byte) []byte { b[0] = 'x'; return b }), "row:1", ErrMalformed},
		{"empty", "orders-pii", nil, "row:1", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, _, err := e.svc.Decrypt(ctx, tt.key, tt.ct, []byte(tt.aad))
			if pt != nil {
				t.Fatalf("decrypted: %q", pt)
			}
			wantErr(t, tt.name, err, tt.want)
		})
	}
	// Moving the ciphertext to a key the attacker may use: the name in the
	// header is part of the associated data, and the key differs.
	short, _, _ := e.svc.Encrypt(ctx, "reports", []byte("secret"), nil)
	forged := append(appendHeader(nil, Header{Kind: KindCiphertext, Name: "orders-pii", Version: 1}), short[5+len("reports")+4:]...)
	_, _, err := e.svc.Decrypt(ctx, "orders-pii", forged, nil)
	wantErr(t, "body of another key's ciphertext", err, ErrDecrypt)
}

func TestVersionStates(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "k", TypeAES, 0))
	ct1, _, _ := e.svc.Encrypt(ctx, "k", []byte("v1 data"), nil)
	must(e.svc.Rotate(ctx, "k"))

	_, err := e.svc.SetState(ctx, "k", 2, ActionDestroy, 0)
	wantErr(t, "destroy the latest", err, ErrInvalid)
	_, err = e.svc.SetState(ctx, "k", 1, ActionDestroy, time.Minute)
	wantErr(t, "grace below the minimum", err, ErrInvalid)

	must(e.svc.SetState(ctx, "k", 1, ActionDisable, 0))
	_, _, err = e.svc.Decrypt(ctx, "k", ct1, nil)
	wantErr(t, "decrypt with a disabled version", err, ErrDisabled)
	must(e.svc.SetState(ctx, "k", 1, ActionEnable, 0))
	if _, _, err := e.svc.Decrypt(ctx, "k", ct1, nil); err != nil {
		t.Fatalf("re-enabled: %v", err)
	}
	// Disabling the latest stops new encryptions with a clear error.
	must(e.svc.SetState(ctx, "k", 2, ActionDisable, 0))
	_, _, err = e.svc.Encrypt(ctx, "k", []byte("x"), nil)
	wantErr(t, "encrypt with the latest disabled", err, ErrDisabled)
	must(e.svc.SetState(ctx, "k", 2, ActionEnable, 0))

	// Scheduled destruction: refused at once, restorable, then final.
	info := must(e.svc.SetState(ctx, "k", 1, ActionDestroy, 48*time.Hour))
	if info.Versions[0].State != store.KMSDestroyScheduled || !info.Versions[0].DestroyAt.Equal(e.clock.Now().Add(48*time.Hour)) {
		t.Fatalf("scheduled: %+v", info.Versions[0])
	}
	_, _, err = e.svc.Decrypt(ctx, "k", ct1, nil)
	wantErr(t, "decrypt while destruction is scheduled", err, ErrDisabled)
	must(e.svc.SetState(ctx, "k", 1, ActionRestore, 0))
	must(e.svc.SetState(ctx, "k", 1, ActionEnable, 0))
	must(e.svc.SetState(ctx, "k", 1, ActionDestroy, 48*time.Hour))
	e.clock.Add(47 * time.Hour)
	if ev, err := e.svc.Maintain(ctx); err != nil || len(ev) != 0 {
		t.Fatalf("maintain before due: %v %v", ev, err)
	}
	e.clock.Add(time.Hour)
	ev, err := e.svc.Maintain(ctx)
	if err != nil || len(ev) != 1 || ev[0] != (Event{Action: "kms.destroy", Key: "k", Version: 1}) {
		t.Fatalf("maintain when due: %+v %v", ev, err)
	}
	_, _, err = e.svc.Decrypt(ctx, "k", ct1, nil)
	wantErr(t, "decrypt with a destroyed version", err, ErrDisabled)
	_, err = e.svc.SetState(ctx, "k", 1, ActionRestore, 0)
	wantErr(t, "restore a destroyed version", err, ErrInvalid)
	_, vs, _ := e.st.GetKMSKey(ctx, "k")
	if vs[0].Material != nil {
		t.Fatal("a destroyed version's material is still in the store")
	}
	// Even a fresh replica with the KEK cannot read it.
	w, _ := keywrap.LoadOrCreateFile(e.kek)
	other := must(New(ctx, Config{Store: e.st, Wrapper: w, Now: e.clock.Now}))
	_, _, err = other.Decrypt(ctx, "k", ct1, nil)
	wantErr(t, "decrypt with a destroyed version on a fresh replica", err, ErrDisabled)
}

func TestScheduledRotation(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, err := e.svc.Create(ctx, "k", TypeAES, time.Minute)
	wantErr(t, "period below the minimum", err, ErrInvalid)
	must(e.svc.Create(ctx, "k", TypeAES, 24*time.Hour))
	must(e.svc.Create(ctx, "manual", TypeAES, 0))
	e.clock.Add(23 * time.Hour)
	if ev, _ := e.svc.Maintain(ctx); len(ev) != 0 {
		t.Fatalf("rotated early: %+v", ev)
	}
	e.clock.Add(time.Hour)
	ev, err := e.svc.Maintain(ctx)
	if err != nil || len(ev) != 1 || ev[0] != (Event{Action: "kms.rotate", Key: "k", Version: 2}) {
		t.Fatalf("scheduled rotation: %+v %v", ev, err)
	}
	if _, v, _ := e.svc.Encrypt(ctx, "k", []byte("x"), nil); v != 2 {
		t.Fatalf("encrypt after scheduled rotation used v%d", v)
	}
	if ev, _ := e.svc.Maintain(ctx); len(ev) != 0 {
		t.Fatalf("rotated twice in one period: %+v", ev)
	}
}

func TestCreateChecks(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, name := range []string{"", "Orders", "-x", "a/b", "a b", string(bytes.Repeat([]byte("a"), 65))} {
		if _, err := e.svc.Create(ctx, name, TypeAES, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	_, err := e.svc.Create(ctx, "k", "rsa-1024", 0)
	wantErr(t, "unknown type", err, ErrInvalid)
	must(e.svc.Create(ctx, "k", TypeAES, 0))
	_, err = e.svc.Create(ctx, "k", TypeAES, 0)
	wantErr(t, "create twice", err, ErrExists)
	_, _, err = e.svc.Encrypt(ctx, "nope", []byte("x"), nil)
	wantErr(t, "unknown key", err, ErrNotFound)
}

// Neither the KEK nor any key's raw material is in the database file.
func TestNoPlaintextKeysInStore(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, typ := range Types {
		must(e.svc.Create(ctx, "k-"+typ, typ, 0))
	}
	db, err := os.ReadFile(filepath.Join(e.dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	if wal, err := os.ReadFile(filepath.Join(e.dir, "rampart.db-wal")); err == nil {
		db = append(db, wal...)
	}
	kek, _ := os.ReadFile(e.kek)
	if bytes.Contains(db, kek) {
		t.Fatal("the KEK is in the database")
	}
	for _, typ := range []string{TypeAES, TypeHMAC} {
		v := e.svc.lookup("k-" + typ).versions[1]
		_, vs, _ := e.st.GetKMSKey(ctx, "k-"+typ)
		w, _ := keywrap.LoadOrCreateFile(e.kek)
		raw, err := w.Open(sealID("k-"+typ, 1), vs[0].Material)
		if err != nil || (v.macKey != nil && !bytes.Equal(raw, v.macKey)) {
			t.Fatalf("material does not open: %v", err)
		}
		if bytes.Contains(db, raw) {
			t.Fatalf("%s key material is in the database in plaintext", typ)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must(e.svc.Create(ctx, "k", TypeAES, 0))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if i == 0 && j%10 == 0 {
					if _, err := e.svc.Rotate(ctx, "k"); err != nil {
						errs <- err
					}
				}
				ct, _, err := e.svc.Encrypt(ctx, "k", []byte{byte(i), byte(j)}, nil)
				if err != nil {
					errs <- err
					return
				}
				pt, _, err := e.svc.Decrypt(ctx, "k", ct, nil)
				if err != nil || !bytes.Equal(pt, []byte{byte(i), byte(j)}) {
					errs <- errors.Join(err, errors.New("round trip differs"))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// FuzzDecrypt feeds arbitrary bytes to Decrypt: it must never panic and
// never decrypt anything but the one real ciphertext.
func FuzzDecrypt(f *testing.F) {
	e := newEnv(f)
	ctx := context.Background()
	must(e.svc.Create(ctx, "k", TypeAES, 0))
	ct, _, _ := e.svc.Encrypt(ctx, "k", []byte("secret"), nil)
	f.Add(ct)
	f.Add(ct[:len(ct)-1])
	f.Add([]byte("rkd\x01\x01k\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, _, err := e.svc.Decrypt(ctx, "k", b, nil)
		if err == nil && !bytes.Equal(b, ct) {
			t.Fatalf("decrypted forged input %x to %q", b, pt)
		}
	})
}
