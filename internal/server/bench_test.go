package server

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
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
