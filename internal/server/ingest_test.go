package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
)

// workloadCert returns a TLS certificate holding an SVID for id, issued
// through an agent like a real workload's.
func (h *harness) workloadCert(agent, id string) *tls.Certificate {
	h.t.Helper()
	agentCert, _ := h.attest(agent)
	entry := h.createEntry(id, "spiffe://example.org/rampart/agent/"+agent)
	key, csr := newCSR(h.t, spiffeid.RequireFromString(id), nil)
	var resp api.SignResponse
	if err := h.client("", agentCert).Do(context.Background(), http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: []api.SignItem{{EntryID: entry, CSR: csr}}}, &resp); err != nil || resp.Results[0].SVID == nil {
		h.t.Fatalf("sign: %v %+v", err, resp)
	}
	return &tls.Certificate{Certificate: resp.Results[0].SVID.Chain, PrivateKey: key}
}

// protect publishes a policy for service, which makes it an enforcement
// point that may ship its decisions.
func (h *harness) protect(service string) {
	h.t.Helper()
	pol := "service: " + service + "\nrules:\n  - name: any\n    callers: [spiffe://example.org/gateway]\n    paths: [/*]\n"
	if err := h.admin.DoRaw(context.Background(), http.MethodPut, "/v1/policies", "application/yaml", []byte(pol), nil); err != nil {
		h.t.Fatal(err)
	}
}

func decision(i int) *audit.Entry {
	return &audit.Entry{V: audit.SchemaVersion, Time: time.Unix(1700000000, int64(i)), Actor: audit.Actor{SpiffeID: "spiffe://example.org/gateway"},
		Action: "authz.decision", Target: "spiffe://example.org/orders", Outcome: audit.OutcomeSuccess, Source: "server",
		Details: map[string]string{"path": "/orders/" + itoa(int64(i))}}
}

// shipped returns the log's entries that came through ingestion.
func shipped(t *testing.T, l *audit.Log) []*audit.Entry {
	t.Helper()
	var out []*audit.Entry
	for i := int64(0); i < l.Size(); i++ {
		b, err := l.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Stream != "" || e.Action == "audit.ingest.gap" {
			out = append(out, e)
		}
	}
	return out
}

func TestIngestThroughSpool(t *testing.T) {
	h := newHarness(t)
	cert := h.workloadCert("node-1", "spiffe://example.org/orders")
	h.protect("spiffe://example.org/orders")
	sp, err := spool.Open(spool.Config{Dir: t.TempDir(), Sender: spool.APISender{Client: h.client("", cert)}, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ctx := context.Background()
	for i := range 300 {
		if err := sp.Record(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sp.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	got := shipped(t, h.srv.audit)
	if len(got) != 300 {
		t.Fatalf("%d entries in the log, want 300", len(got))
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) || e.Stream != sp.Stream() || e.Details["path"] != "/orders/"+itoa(int64(i)) {
			t.Fatalf("entry %d: stream %s seq %d path %s", i, e.Stream, e.Seq, e.Details["path"])
		}
		// The shipper claimed to be "server"; the server names the real one.
		if e.Source != "spiffe://example.org/orders" {
			t.Fatalf("entry %d: source %q, want the shipping workload's SPIFFE ID", i, e.Source)
		}
	}
}

func TestIngestDropsRetriedBatchesAndReportsGaps(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cert := h.workloadCert("node-1", "spiffe://example.org/orders")
	h.protect("spiffe://example.org/orders")
	send := spool.APISender{Client: h.client("", cert)}
	batch := func(from, to int) []*audit.Entry {
		var b []*audit.Entry
		for i := from; i <= to; i++ {
			e := decision(i)
			e.Stream, e.Seq = "0123456789abcdef0123456789abcdef", uint64(i)
			b = append(b, e)
		}
		return b
	}
	for range 2 { // the second is a retry after a lost answer
		if ack, err := send.Send(ctx, batch(1, 3)); err != nil || ack != 3 {
			t.Fatalf("ack %d, %v", ack, err)
		}
	}
	// Overlapping retry: 2-5 holds two new entries.
	if ack, err := send.Send(ctx, batch(2, 5)); err != nil || ack != 5 {
		t.Fatalf("ack %d, %v", ack, err)
	}
	if ack, err := send.Send(ctx, batch(8, 9)); err != nil || ack != 9 {
		t.Fatalf("ack %d, %v", ack, err)
	}
	got := shipped(t, h.srv.audit)
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	want := []uint64{1, 2, 3, 4, 5, 0, 8, 9} // 0: the gap entry
	if len(seqs) != len(want) {
		t.Fatalf("seqs %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("seqs %v, want %v", seqs, want)
		}
	}
	gap := got[5]
	if gap.Action != "audit.ingest.gap" || gap.Details["from"] != "6" || gap.Details["to"] != "7" || gap.Actor.SpiffeID != "spiffe://example.org/orders" {
		t.Fatalf("gap entry %+v", gap)
	}
}

func TestIngestAttacks(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	orders := h.workloadCert("node-1", "spiffe://example.org/orders")
	rogue := h.workloadCert("node-2", "spiffe://example.org/rogue")
	h.protect("spiffe://example.org/orders")
	h.protect("spiffe://example.org/rogue")
	stream := "fedcba9876543210fedcba9876543210"
	mk := func(seq uint64) *audit.Entry {
		e := decision(int(seq))
		e.Stream, e.Seq = stream, seq
		return e
	}
	if _, err := (spool.APISender{Client: h.client("", orders)}).Send(ctx, []*audit.Entry{mk(1)}); err != nil {
		t.Fatal(err)
	}
	before := h.srv.audit.Size()

	// Another workload cannot write into (or push ahead) orders' stream.
	_, err := (spool.APISender{Client: h.client("", rogue)}).Send(ctx, []*audit.Entry{mk(2), mk(3)})
	wantStatus(t, err, http.StatusForbidden, "belongs to another identity")

	raw := func(c *api.Client, entries ...string) error {
		req := api.AuditIngestRequest{}
		for _, e := range entries {
			req.Entries = append(req.Entries, json.RawMessage(e))
		}
		return c.Do(ctx, http.MethodPost, "/v1/audit/ingest", req, nil)
	}
	good, _ := mk(5).Marshal()
	// Not canonical (extra space), unknown field, out of order, no stream.
	wantStatus(t, raw(h.client("", orders), `{"v": 1}`), http.StatusBadRequest, "entry 0")
	e6, e8 := mk(6), mk(8)
	b6, _ := e6.Marshal()
	b8, _ := e8.Marshal()
	wantStatus(t, raw(h.client("", orders), string(b6), string(b8)), http.StatusBadRequest, "does not follow")
	noStream := decision(1)
	bn, _ := noStream.Marshal()
	wantStatus(t, raw(h.client("", orders), string(bn)), http.StatusBadRequest, "no stream")
	wantStatus(t, raw(h.client("", orders)), http.StatusBadRequest, "0 entries")
	// No certificate, or only the admin token: refused.
	wantStatus(t, raw(h.admin, string(good)), http.StatusUnauthorized, "SVID")
	if n := h.srv.audit.Size(); n != before+1 { // +1: the refusal of the rogue is itself audited
		t.Fatalf("log grew from %d to %d; only the refusal entry should have been added", before, n)
	}
}

// Senders of the previous version ship version 1 (JSON): still accepted.
func TestIngestAcceptsVersion1(t *testing.T) {
	h := newHarness(t)
	cert := h.workloadCert("node-1", "spiffe://example.org/orders")
	h.protect("spiffe://example.org/orders")
	for i, json := range []bool{true, false} {
		e := decision(i)
		e.Stream, e.Seq = "00000000000000000000000000000001", uint64(i+1)
		if ack, err := (spool.APISender{Client: h.client("", cert), JSON: json}).Send(context.Background(), []*audit.Entry{e}); err != nil || ack != uint64(i+1) {
			t.Fatalf("json=%v: ack %d, %v", json, ack, err)
		}
	}
	if got := shipped(t, h.srv.audit); len(got) != 2 {
		t.Fatalf("%d entries stored, want 2", len(got))
	}
	// An unknown format is refused by name.
	err := h.client("", cert).DoRaw(context.Background(), http.MethodPost, "/v1/audit/ingest", "application/x-other", []byte("x"), nil)
	wantStatus(t, err, http.StatusUnsupportedMediaType, spool.BatchContentType)
}
