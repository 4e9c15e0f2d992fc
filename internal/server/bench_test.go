package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/dpop"
)

// BenchmarkSignAPI measures workload SVID issuance through the whole API
// path: mTLS, JSON, entry lookup, CSR check, signature, recording in SQLite.
// CSRs are made before the timer; each op is one batch of 100.
func BenchmarkSignAPI(b *testing.B) {
	h := newHarness(b)
	cert, _ := h.attest("node-1")
	const batch = 100
	var items []api.SignItem
	for i := range batch {
		id := fmt.Sprintf("spiffe://example.org/svc%d", i)
		var e api.Entry
		if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: "spiffe://example.org/rampart/agent/node-1", Selectors: []string{"unix:uid:1000"}}, &e); err != nil {
			b.Fatal(err)
		}
		_, csr := newCSR(b, spiffeid.RequireFromString(id), nil)
		items = append(items, api.SignItem{EntryID: e.ID, CSR: csr})
	}
	c := h.client("", cert)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var resp api.SignResponse
			if err := c.Do(context.Background(), http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: items}, &resp); err != nil {
				b.Error(err)
				return
			}
			if resp.Results[0].SVID == nil {
				b.Error(resp.Results[0].Error)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "svids/s")
}

// BenchmarkAdminAuth measures the admin guard alone (the handler is a
// sentinel): the break-glass token (a hash and a compare, plus its audit
// entry) against an operator's DPoP-bound token (token verification,
// proof signature, the proof recorded in SQLite, the operator and its user
// read from the store). Proofs are made before the timer.
func BenchmarkAdminAuth(b *testing.B) {
	h := newOperatorHarness(b)
	secret := h.addUser("alice", true)
	h.addOperator(api.OperatorCreate{Name: "alice", Kind: "user", Roles: []api.OperatorRole{{Role: "auditor"}}})
	key := newKey(b)
	s, err := h.deviceLogin("alice", secret, key)
	if err != nil {
		b.Fatal(err)
	}
	rt := Route{Method: http.MethodGet, Path: "/v1/entries", Auth: AuthAdmin, Permission: "entry.read",
		Handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }}
	guarded := h.srv.guard(rt)
	tok, _ := os.ReadFile(filepath.Join(h.dir, "admin.token"))
	b.Run("break-glass", func(b *testing.B) {
		for b.Loop() {
			r := requestAs(http.MethodGet, "/v1/entries", nil)
			r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
			w := httptest.NewRecorder()
			guarded(w, r)
			if w.Code != 299 {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
	b.Run("operator-dpop", func(b *testing.B) {
		proofs := make([]string, 0, 4096)
		next := 0
		for b.Loop() {
			if next == len(proofs) {
				b.StopTimer()
				proofs, next = proofs[:0], 0
				for range cap(proofs) {
					p, err := dpop.NewProof(key, jose.ES256, http.MethodGet, "https://rampart.test/v1/entries", s.AccessToken, "", h.clk.Now())
					if err != nil {
						b.Fatal(err)
					}
					proofs = append(proofs, p)
				}
				b.StartTimer()
			}
			r := requestAs(http.MethodGet, "/v1/entries", nil)
			r.Header.Set("Authorization", "DPoP "+s.AccessToken)
			r.Header.Set("DPoP", proofs[next])
			next++
			w := httptest.NewRecorder()
			guarded(w, r)
			if w.Code != 299 {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}
