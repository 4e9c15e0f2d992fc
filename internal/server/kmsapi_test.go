package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/keywrap"
)

const kmsPolicyYAML = `service: spiffe://example.org/rampart/kms
rules:
  - name: orders-uses-pii
    callers: [spiffe://example.org/orders]
    paths: [/keys/orders-pii/encrypt, /keys/orders-pii/decrypt, /keys/orders-pii/datakey, /keys/orders-pii/rewrap]
  - name: reports-encrypts-only
    callers: [spiffe://example.org/reports]
    paths: [/keys/orders-pii/encrypt]
  - name: releases-sign
    callers: [spiffe://example.org/orders]
    paths: [/keys/release/sign, /keys/release/verify]
`

func (h *harness) kmsCall(c *api.Client, key, op string, req api.KMSRequest) (api.KMSResponse, error) {
	var resp api.KMSResponse
	err := c.Do(context.Background(), http.MethodPost, "/v1/kms/keys/"+key+"/"+op, req, &resp)
	return resp, err
}

func TestKMSAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var key api.KMSKey
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, &key); err != nil {
		t.Fatal(err)
	}
	if key.Type != "aes256-gcm" || key.Latest != 1 || len(key.Versions) != 1 {
		t.Fatalf("created %+v", key)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "release", Type: "ed25519"}, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil), 409, "exists")
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "Bad/Name"}, nil), 400, "key name")

	orders := h.client("", h.workloadCert("node-1", "spiffe://example.org/orders"))
	reports := h.client("", h.workloadCert("node-2", "spiffe://example.org/reports"))

	// No key-use policy yet: default deny.
	_, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")})
	wantStatus(t, err, 403, "may not encrypt")

	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(kmsPolicyYAML), nil); err != nil {
		t.Fatal(err)
	}
	aad := []byte("customer:42")
	enc, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("4111 1111 1111 1111"), AAD: aad})
	if err != nil || enc.Version != 1 {
		t.Fatalf("encrypt: %+v %v", enc, err)
	}
	dec, err := h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	if err != nil || string(dec.Plaintext) != "4111 1111 1111 1111" {
		t.Fatalf("decrypt: %+v %v", dec, err)
	}
	// reports may encrypt but not decrypt.
	if _, err := h.kmsCall(reports, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("y")}); err != nil {
		t.Fatalf("reports encrypt: %v", err)
	}
	_, err = h.kmsCall(reports, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	wantStatus(t, err, 403, "may not decrypt")
	// Without a certificate, or with only the admin token: no key use.
	_, err = h.kmsCall(h.client("", nil), "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	wantStatus(t, err, 401, "SVID")
	_, err = h.kmsCall(h.admin, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	wantStatus(t, err, 401, "SVID")

	// Rotation: old ciphertexts stay readable, rewrap moves them.
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys/orders-pii/rotate", nil, &key); err != nil || key.Latest != 2 {
		t.Fatalf("rotate: %+v %v", key, err)
	}
	dec, err = h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	if err != nil || dec.Version != 1 {
		t.Fatalf("decrypt v1 after rotation: %+v %v", dec, err)
	}
	re, err := h.kmsCall(orders, "orders-pii", "rewrap", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	if err != nil || re.Version != 2 || re.Plaintext != nil {
		t.Fatalf("rewrap: %+v %v", re, err)
	}
	// Data keys.
	dk, err := h.kmsCall(orders, "orders-pii", "datakey", api.KMSRequest{})
	if err != nil || len(dk.Plaintext) != 32 || len(dk.Ciphertext) == 0 {
		t.Fatalf("datakey: %v", err)
	}
	un, err := h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: dk.Ciphertext})
	if err != nil || !bytes.Equal(un.Plaintext, dk.Plaintext) {
		t.Fatalf("unwrap data key: %v", err)
	}
	// Tampering gives a 400 that says nothing of which check failed.
	bad := bytes.Clone(enc.Ciphertext)
	bad[len(bad)-3] ^= 1
	_, err = h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: bad, AAD: aad})
	wantStatus(t, err, 400, "does not decrypt")
	// Signatures.
	sig, err := h.kmsCall(orders, "release", "sign", api.KMSRequest{Message: []byte("v1.0.0")})
	if err != nil {
		t.Fatal(err)
	}
	ver, err := h.kmsCall(orders, "release", "verify", api.KMSRequest{Message: []byte("v1.0.0"), Signature: sig.Signature})
	if err != nil || ver.Valid == nil || !*ver.Valid {
		t.Fatalf("verify: %+v %v", ver, err)
	}
	// Disable version 1: its ciphertexts are refused until enabled.
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys/orders-pii/versions/1/disable", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext, AAD: aad})
	wantStatus(t, err, 409, "disabled")
	wantStatus(t, h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys/orders-pii/versions/2/destroy", nil, nil), 400, "rotate before")
	var list []api.KMSKey
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/kms/keys", nil, &list); err != nil || len(list) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}

	// Every use is in the audit log: caller, key, version, operation,
	// size; never the data.
	var uses, denied, defaultDenied int
	for i := int64(0); i < h.srv.audit.Size(); i++ {
		b, _ := h.srv.audit.Entry(i)
		// The card number itself, raw or as JSON would carry it (base64);
		// a bare "4111" also matches ports such as 127.0.0.1:41110.
		if bytes.Contains(b, []byte("4111 1111")) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte("4111 1111 1111 1111")))) || bytes.Contains(b, []byte(`"plaintext"`)) {
			t.Fatalf("audit entry %d carries data: %s", i, b)
		}
		e, _ := audit.ParseEntry(b)
		if !strings.HasPrefix(e.Action, "kms.") {
			continue
		}
		switch {
		case e.Action == "kms.decrypt" && e.Outcome == audit.OutcomeDenied:
			denied++
			if e.Actor.SpiffeID != "spiffe://example.org/reports" {
				t.Fatalf("denied use without the caller: %s", b)
			}
		case e.Action == "kms.encrypt" && e.Outcome == audit.OutcomeDenied:
			defaultDenied++
			if e.Details["policy_version"] != "none" {
				t.Fatalf("default deny entry: %s", b)
			}
		case e.Action == "kms.encrypt" && e.Outcome == audit.OutcomeSuccess && e.Actor.SpiffeID == "spiffe://example.org/orders":
			uses++
			if e.Details["key"] != "orders-pii" || e.Details["version"] != "1" || e.Details["size"] != "19" || e.Details["rule"] != "orders-uses-pii" {
				t.Fatalf("encrypt entry lacks detail: %s", b)
			}
		}
	}
	if uses != 1 || denied != 1 || defaultDenied != 1 {
		t.Fatalf("audit: %d encrypt uses by orders, %d denied decrypts, %d default denials", uses, denied, defaultDenied)
	}
}

// A revoked SVID stops key use at once, even on a connection opened
// before the revocation (the verified-chain cache does not hide it).
func TestKMSRevokedCallerRefused(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(kmsPolicyYAML), nil); err != nil {
		t.Fatal(err)
	}
	cert := h.workloadCert("node-1", "spiffe://example.org/orders")
	orders := h.client("", cert)
	if _, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{SpiffeID: "spiffe://example.org/orders", Reason: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")})
	wantStatus(t, err, 403, "revoked")
}

func TestKMSScheduledRotationAudited(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "k", RotateEverySeconds: 3600}, nil); err != nil {
		t.Fatal(err)
	}
	h.clk.Add(time.Hour + time.Second)
	h.srv.kmsMaint.Step(ctx)
	var key api.KMSKey
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/kms/keys/k", nil, &key); err != nil || key.Latest != 2 {
		t.Fatalf("after schedule: %+v %v", key, err)
	}
	found := false
	for i := int64(0); i < h.srv.audit.Size(); i++ {
		b, _ := h.srv.audit.Entry(i)
		e, _ := audit.ParseEntry(b)
		found = found || (e.Action == "kms.rotate" && e.Details["trigger"] == "schedule" && e.Details["version"] == "2")
	}
	if !found {
		t.Fatal("the scheduled rotation is not in the audit log")
	}
}

// syncBuf collects log output from the server's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func forms(secret []byte) []string {
	return []string{string(secret), base64.StdEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret), hex.EncodeToString(secret)}
}

// The master key, the data keys handed out and the data never appear in
// the server's logs (at debug level) or its database; nor does the
// passphrase that seals a master key.
func TestKMSSecretsNeverLogged(t *testing.T) {
	dir := t.TempDir()
	kek := make([]byte, 32)
	rand.Read(kek)
	os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "keys", "kek"), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	h := newHarnessWith(t, Config{DataDir: dir, TrustDomain: td, Listen: "127.0.0.1:0",
		Log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(kmsPolicyYAML), nil); err != nil {
		t.Fatal(err)
	}
	orders := h.client("", h.workloadCert("node-1", "spiffe://example.org/orders"))
	dk, err := h.kmsCall(orders, "orders-pii", "datakey", api.KMSRequest{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("4111 1111 1111 1111")})
	if err != nil {
		t.Fatal(err)
	}
	h.kmsCall(orders, "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext})
	h.kmsCall(h.client("", h.workloadCert("node-2", "spiffe://example.org/reports")), "orders-pii", "decrypt", api.KMSRequest{Ciphertext: enc.Ciphertext})
	h.srv.caMaint.Step(ctx)
	h.srv.oauth.Maintain(ctx)
	h.srv.kmsMaint.Step(ctx)
	out := logs.String()
	if !strings.Contains(out, "kms.key_create") {
		t.Fatalf("the test captured no server logs: %q", out)
	}
	db, _ := os.ReadFile(filepath.Join(dir, "rampart.db"))
	wal, _ := os.ReadFile(filepath.Join(dir, "rampart.db-wal"))
	audit, _ := os.ReadFile(filepath.Join(dir, "audit", "entries.log"))
	for name, secret := range map[string][]byte{"KEK": kek, "data key": dk.Plaintext, "plaintext": []byte("4111 1111 1111 1111")} {
		for _, form := range forms(secret) {
			if strings.Contains(out, form) {
				t.Fatalf("the %s appears in the logs", name)
			}
			for where, b := range map[string][]byte{"database": db, "database WAL": wal, "audit log": audit} {
				if bytes.Contains(b, []byte(form)) {
					t.Fatalf("the %s appears in the %s", name, where)
				}
			}
		}
	}

	// A passphrase-sealed master key: the passphrase is not logged either.
	pass := "correct horse battery staple"
	var plogs syncBuf
	newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0",
		Log:    slog.New(slog.NewJSONHandler(&plogs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Master: keywrap.MasterConfig{Source: keywrap.SourcePassphrase, Passphrase: func() ([]byte, error) { return []byte(pass), nil }}})
	for _, form := range forms([]byte(pass)) {
		if strings.Contains(plogs.String(), form) {
			t.Fatal("the passphrase appears in the logs")
		}
	}
}

// The verified-chain cache does not outlive the certificate: an SVID that
// expired since the connection was opened is refused on that connection.
func TestVerifiedChainCacheHonoursExpiry(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "orders-pii"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(kmsPolicyYAML), nil); err != nil {
		t.Fatal(err)
	}
	orders := h.client("", h.workloadCert("node-1", "spiffe://example.org/orders"))
	if _, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatal(err) // verified and cached
	}
	h.clk.Add(DefaultX509TTL + time.Minute)
	_, err := h.kmsCall(orders, "orders-pii", "encrypt", api.KMSRequest{Plaintext: []byte("x")})
	wantStatus(t, err, 403, "expired")
}

// Periods in seconds whose nanoseconds wrap past int64 are refused: a
// rotation every 36028797019568768 seconds must not become a rotation
// every 7 days, nor a destruction grace of ages one of hours.
func TestKMSPeriodsDoNotWrap(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const wrapsToAWeek = 36028797019568768 // ×1e9 mod 2^64 = 7 days
	err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "k", RotateEverySeconds: wrapsToAWeek}, nil)
	wantStatus(t, err, http.StatusBadRequest, "rotate_every_seconds: at most")
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys", api.KMSCreateKeyRequest{Name: "k"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys/k/rotate", nil, nil); err != nil {
		t.Fatal(err)
	}
	err = h.admin.Do(ctx, http.MethodPost, "/v1/kms/keys/k/versions/1/destroy", api.KMSVersionRequest{GraceSeconds: wrapsToAWeek}, nil)
	wantStatus(t, err, http.StatusBadRequest, "grace_seconds: at most")
}
