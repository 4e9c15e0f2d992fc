package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/intake"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/authz"
)

// realisticDecision is an entry as a proxy's guard records it.
func realisticDecision(stream string, seq uint64, at time.Time) *audit.Entry {
	return &audit.Entry{V: audit.SchemaVersion, Time: at, Actor: audit.Actor{SpiffeID: "spiffe://example.org/gateway"},
		Action: "authz.decision", Target: "spiffe://example.org/orders", Outcome: audit.OutcomeSuccess, Stream: stream, Seq: seq,
		Details: map[string]string{"latency_ns": "1834", "method": "GET", "path": "/orders/" + strconv.FormatUint(seq, 10),
			"rule": "gateway-reads-orders", "policy_version": "sha256:9f2c4e1a0b7d", "remote": "127.0.0.1:51234"}}
}

const benchBatch = 500

// ingestBodies encodes n batches of consecutive entries of one stream.
func ingestBodies(b *testing.B, n int, encode func([]*audit.Entry) ([]byte, string)) ([][]byte, string) {
	stream := "0123456789abcdef0123456789abcdef"
	at := time.Now()
	bodies := make([][]byte, n)
	var ctype string
	for i := range n {
		es := make([]*audit.Entry, benchBatch)
		for j := range es {
			es[j] = realisticDecision(stream, uint64(i*benchBatch+j+1), at)
		}
		bodies[i], ctype = encode(es)
	}
	return bodies, ctype
}

func encodeJSONBatch(es []*audit.Entry) ([]byte, string) {
	req := api.AuditIngestRequest{Entries: make([]json.RawMessage, len(es))}
	for i, e := range es {
		req.Entries[i], _ = e.Marshal()
	}
	b, _ := json.Marshal(req)
	return b, "application/json"
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchmarkIngest measures the server's side of ingestion: decoding,
// checking and appending (durably) one batch of 500 decisions per op, as
// the handler sees it after TLS. It reports CPU-seconds per 1,000 entries
// (process CPU time; the log's fsync wait is not CPU).
func benchmarkIngest(b *testing.B, encode func([]*audit.Entry) ([]byte, string)) {
	h := newHarness(b)
	h.protect("spiffe://example.org/orders")
	caller := spiffeid.RequireFromString("spiffe://example.org/orders")
	bodies, ctype := ingestBodies(b, b.N, encode)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		r := httptest.NewRequest(http.MethodPost, "/v1/audit/ingest", bytes.NewReader(bodies[i]))
		r.Header.Set("Content-Type", ctype)
		r = r.WithContext(context.WithValue(r.Context(), agentKey{}, caller))
		w := httptest.NewRecorder()
		h.srv.handleIngest(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(cpu.Seconds()/float64(b.N*benchBatch)*1000, "cpu-s/1000entries")
	b.ReportMetric(float64(len(bodies[0])), "body-bytes")
}

func BenchmarkIngestJSON(b *testing.B) { benchmarkIngest(b, encodeJSONBatch) }

func encodeV2Batch(es []*audit.Entry) ([]byte, string) {
	raw := make([][]byte, len(es))
	for i, e := range es {
		raw[i], _ = e.Marshal()
	}
	return spool.EncodeBatch(raw), spool.BatchContentType
}

func BenchmarkIngestV2(b *testing.B) { benchmarkIngest(b, encodeV2Batch) }

// The decoding half of ingestion alone (no log, no background work), so
// ns/op and allocs/op are not blurred by the server's other goroutines.
func benchmarkDecode(b *testing.B, encode func([]*audit.Entry) ([]byte, string), decode func(*http.Request) error) {
	bodies, ctype := ingestBodies(b, 1, encode)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r := httptest.NewRequest(http.MethodPost, "/v1/audit/ingest", bytes.NewReader(bodies[0]))
		r.Header.Set("Content-Type", ctype)
		if err := decode(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/entry")
}

func decodeNow(r *http.Request) error {
	_, err := intake.DecodeBatch(r.Body, r.Header.Get("Content-Type"))
	return err
}

// decodeBefore is what the server did before version 2: the JSON batch,
// then ParseEntry (decode, encode again, compare) per entry.
func decodeBefore(r *http.Request) error {
	var req api.AuditIngestRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, intake.MaxBatchBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return err
	}
	for _, raw := range req.Entries {
		if _, err := audit.ParseEntry(raw); err != nil {
			return err
		}
	}
	return nil
}

func BenchmarkIngestDecodeBefore(b *testing.B) { benchmarkDecode(b, encodeJSONBatch, decodeBefore) }
func BenchmarkIngestDecodeJSON(b *testing.B)   { benchmarkDecode(b, encodeJSONBatch, decodeNow) }
func BenchmarkIngestDecodeV2(b *testing.B)     { benchmarkDecode(b, encodeV2Batch, decodeNow) }

// BenchmarkShipPaced is a proxy's shipping at 1,000 decisions/s end to end
// in one process: the spool (writer, fsync, sender, mTLS client) and the
// server (TLS, ingest, the log's group commit, detection tailing it). Each
// op is one decision; run with -benchtime 3000x (3 s). cpu-s/1000entries
// is the process's CPU time for the lot, from the first Record to the
// server's acknowledgement of the last. Compare with the proxies' own
// 0.36 CPU-s per 1,000 requests (docs/benchmarks.md). Every decision is
// distinct here (no aggregation helps).
func BenchmarkShipPaced(b *testing.B) {
	for _, tc := range []struct {
		name   string
		json   bool
		linger time.Duration
	}{
		{"baseline-pacing-only", false, -2},
		{"before-v1-nolinger", true, 0},
		{"v2-nolinger", false, 0},
		{"v2-linger250ms", false, 250 * time.Millisecond},
		{"after-v2-linger250ms-write50ms", false, -1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b)
			cert := h.workloadCert("node-1", "spiffe://example.org/orders")
			h.protect("spiffe://example.org/orders")
			cfg := spool.Config{Dir: b.TempDir(), Linger: max(tc.linger, 0)}
			if tc.linger == -1 { // as ShipDecisions sets it up
				cfg.Linger, cfg.WriteLinger = authz.ShipLinger, authz.ShipWriteLinger
			}
			sp, err := spool.Open(spool.Config{Dir: cfg.Dir, Linger: cfg.Linger, WriteLinger: cfg.WriteLinger,
				Sender: spool.APISender{Client: h.client("", cert), JSON: tc.json}})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			at := time.Now()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range b.N {
				<-tick.C
				e := realisticDecision("", 0, at)
				e.Details["path"] = "/orders/" + strconv.Itoa(i)
				if tc.linger == -2 {
					continue // the loop's own cost, to subtract
				}
				if err := sp.Record(e); err != nil {
					b.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := sp.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime() - cpu0
			b.StopTimer()
			b.ReportMetric(cpu.Seconds()/float64(b.N)*1000, "cpu-s/1000entries")
		})
	}
}
