package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
)

// The ACME operator calls are admin calls, audited as the admin; the
// protocol itself is served at /acme/ on the same port.
func TestACMEAdminAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var k api.ACMEEABKey
	err := h.client("", nil).Do(ctx, http.MethodPost, "/v1/acme/eab-keys", api.ACMEEABKeyRequest{}, &k)
	var p *api.Problem
	if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		t.Fatalf("without the admin token: %v", err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/acme/eab-keys", api.ACMEEABKeyRequest{AllowedNames: []string{"*.internal.example.org"}}, &k); err != nil {
		t.Fatal(err)
	}
	if k.HMACKey == "" || k.Directory != "https://"+h.addr+"/acme/directory" || !slices.Equal(k.AllowedNames, []string{"*.internal.example.org"}) {
		t.Fatalf("created key %+v", k)
	}
	var list []api.ACMEEABKey
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/acme/eab-keys", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].HMACKey != "" {
		t.Fatalf("list %+v: the HMAC key must never be listed", list)
	}
	err = h.admin.Do(ctx, http.MethodPost, "/v1/acme/eab-keys", api.ACMEEABKeyRequest{AllowedNames: []string{"a.*.example.org"}}, nil)
	if !errors.As(err, &p) || p.Status != http.StatusBadRequest || !strings.Contains(p.Detail, `name pattern "a.*.example.org"`) {
		t.Fatalf("bad pattern: %v", err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/acme/eab-keys/"+k.KeyID+"/revoke", nil, &k); err != nil || k.RevokedAt.IsZero() {
		t.Fatalf("revoke: %v %+v", err, k)
	}
	err = h.admin.Do(ctx, http.MethodPost, "/v1/acme/certs/abc/revoke", api.ACMERevokeRequest{Reason: "keyCompromise"}, nil)
	if !errors.As(err, &p) || p.Status != http.StatusNotFound {
		t.Fatalf("revoke an unknown certificate: %v", err)
	}
	var found bool
	for i := range h.srv.Audit().Size() {
		b, err := h.srv.Audit().Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == "acme.eab_create" && e.Outcome == audit.OutcomeSuccess && e.Actor.User == "admin" && e.Target == k.KeyID {
			found = true
		}
	}
	if !found {
		t.Error("EAB key creation not audited as the admin")
	}
	resp, err := h.client("", nil).HTTP.Get("https://" + h.addr + "/acme/directory")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Replay-Nonce") == "" {
		t.Fatalf("directory: %d", resp.StatusCode)
	}
}

// The server never lets ACME issue its own names.
func TestACMEOwnNames(t *testing.T) {
	s := &Server{cfg: Config{Listen: "10.0.0.7:8443", DNSNames: []string{"rampart.corp.example"}, Issuer: "https://auth.corp.example"}}
	names := s.ownNames()
	want := []string{"localhost", "127.0.0.0/8", "::1", "rampart.corp.example", "10.0.0.7", "auth.corp.example"}
	if h, err := os.Hostname(); err == nil && h != "localhost" && !strings.Contains(h, "_") {
		want = append(want, strings.ToLower(h))
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("own names %v lack %s", names, w)
		}
	}
}

func TestACMEDisabled(t *testing.T) {
	h := newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0", ACME: ACMEConfig{Disabled: true}})
	err := h.admin.Do(context.Background(), http.MethodGet, "/v1/acme/eab-keys", nil, nil)
	var p *api.Problem
	if !errors.As(err, &p) || p.Status != http.StatusNotFound || !strings.Contains(p.Detail, "no such API endpoint") {
		t.Fatalf("disabled: %v", err)
	}
	resp, err := h.client("", nil).HTTP.Get("https://" + h.addr + "/acme/directory")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("directory of a disabled ACME server: %d", resp.StatusCode)
	}
}
