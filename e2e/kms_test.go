package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/softhsmtest"
	"github.com/rampartsec/rampart/sdk"
	"github.com/rampartsec/rampart/sdk/kms"
)

// softHSM makes a fresh SoftHSM token and returns the server flags that
// seal the KEK with it.
func softHSM(t *testing.T) []string {
	t.Helper()
	softhsmtest.Token(t, "rampart", "4321")
	pin := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(pin, []byte("4321\n"), 0o600)
	return []string{"--master-key", "pkcs11", "--pkcs11-module", softhsmtest.Module, "--pkcs11-token", "rampart", "--pkcs11-pin-file", pin}
}

const kmsPolicy = `service: spiffe://example.org/rampart/kms
rules:
  - name: orders-uses-pii
    callers: [spiffe://example.org/orders]
    paths: [/keys/orders-pii/datakey, /keys/orders-pii/decrypt, /keys/orders-pii/encrypt]
`

// The key store end to end: a server whose key-encryption key is sealed
// by SoftHSM, keys managed with the CLI, and a service encrypting fields
// with the SDK over mTLS, across a rotation and a server restart.
func TestKMSWithSoftHSM(t *testing.T) {
	hsm := softHSM(t)
	root := t.TempDir()
	sdir := filepath.Join(root, "server")
	s := startServer(t, sdir, hsm...)
	if _, err := os.Stat(filepath.Join(sdir, "keys", "kek")); err == nil {
		t.Fatal("a plaintext KEK file exists next to the HSM-sealed one")
	}
	if _, err := os.Stat(filepath.Join(sdir, "keys", "kek.sealed")); err != nil {
		t.Fatalf("no sealed KEK: %v", err)
	}
	tok := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	a := startAgent(t, s, filepath.Join(root, "agent"), tok)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())
	out := mustCLI(t, s.adminEnv(), "kms", "key", "create", "orders-pii")
	if !strings.Contains(out, "aes256-gcm") || !strings.Contains(out, "enabled") {
		t.Fatalf("kms key create printed:\n%s", out)
	}
	mustCLI(t, s.adminEnv(), "kms", "key", "create", "payroll")
	pol := filepath.Join(root, "kms-policy.yaml")
	os.WriteFile(pol, []byte(kmsPolicy), 0o600)
	mustCLI(t, s.adminEnv(), "policy", "put", pol)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var src *sdk.Source
	eventually(t, 20*time.Second, "SDK source", func() error {
		var err error
		src, err = sdk.New(ctx, sdk.WithSocket(a.socket))
		return err
	})
	defer src.Close()
	keys, err := kms.New(src, kms.WithServer(s.addr))
	if err != nil {
		t.Fatal(err)
	}
	// 100 fields: one data key, one call.
	var cts [][]byte
	for i := range 100 {
		ct, err := keys.Encrypt(ctx, "orders-pii", fmt.Appendf(nil, "card-%03d", i), fmt.Appendf(nil, "customer:%d", i))
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	if n := keys.Calls(); n != 1 {
		t.Fatalf("100 encryptions made %d server calls, want 1", n)
	}
	// A new client (another instance of the service) needs one call to
	// read them all.
	reader, _ := kms.New(src, kms.WithServer(s.addr))
	for i, ct := range cts {
		pt, err := reader.Decrypt(ctx, "orders-pii", ct, fmt.Appendf(nil, "customer:%d", i))
		if err != nil || string(pt) != fmt.Sprintf("card-%03d", i) {
			t.Fatalf("decrypt %d: %q %v", i, pt, err)
		}
	}
	if n := reader.Calls(); n != 1 {
		t.Fatalf("100 decryptions made %d calls, want 1", n)
	}
	// Moved to another record: refused.
	if _, err := reader.Decrypt(ctx, "orders-pii", cts[0], []byte("customer:1")); !errors.Is(err, kms.ErrDecrypt) {
		t.Fatalf("ciphertext moved to another record: %v", err)
	}
	// The policy gives orders no right on payroll.
	var kerr *kms.Error
	if _, err := keys.Encrypt(ctx, "payroll", []byte("salary"), nil); !errors.As(err, &kerr) || kerr.Status != 403 {
		t.Fatalf("encrypt with payroll: %v", err)
	}

	// Rotation: new fields use version 2, old ones still read.
	mustCLI(t, s.adminEnv(), "kms", "key", "rotate", "orders-pii")
	keys.Flush()
	ct2, err := keys.Encrypt(ctx, "orders-pii", []byte("after rotation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if name, v, _ := kms.KeyOf(ct2); name != "orders-pii" || v != 2 {
		t.Fatalf("after rotation the data key is wrapped by %s v%d", name, v)
	}
	re, err := keys.Reencrypt(ctx, "orders-pii", cts[5], []byte("customer:5"))
	if _, v, _ := kms.KeyOf(re); err != nil || v != 2 {
		t.Fatalf("reencrypt: v%d %v", v, err)
	}

	// Restart: the token unseals the KEK again; everything reads.
	s.stop()
	s = startServerAt(t, sdir, s.addr, hsm...)
	fresh, _ := kms.New(src, kms.WithServer(s.addr))
	eventually(t, 20*time.Second, "decrypt after restart", func() error {
		pt, err := fresh.Decrypt(ctx, "orders-pii", cts[7], []byte("customer:7"))
		if err == nil && string(pt) != "card-007" {
			return fmt.Errorf("got %q", pt)
		}
		return err
	})
	s.stop()

	// A wrong PIN: the server does not start, and says why.
	bad := append([]string(nil), hsm...)
	wrongPin := filepath.Join(root, "wrong-pin")
	os.WriteFile(wrongPin, []byte("0000\n"), 0o600)
	bad[len(bad)-1] = wrongPin
	out, err = cli(t, nil, append([]string{"server", "--data", sdir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org"}, bad...)...)
	if err == nil || !strings.Contains(out, "log in to token") {
		t.Fatalf("server with a wrong PIN: %v\n%s", err, out)
	}
	// Without the HSM flags it refuses rather than make a second KEK.
	out, err = cli(t, nil, "server", "--data", sdir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org")
	if err == nil || !strings.Contains(out, "--master-key pkcs11") {
		t.Fatalf("server without the HSM: %v\n%s", err, out)
	}
	// Nothing in the data dir holds a key in the clear: the database
	// does not contain the data keys the SDK was given.
	db, _ := os.ReadFile(filepath.Join(sdir, "rampart.db"))
	if bytes.Contains(db, []byte("card-0")) {
		t.Fatal("plaintext field data in the server's database")
	}
}
