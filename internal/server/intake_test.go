package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/intake"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/detect"
)

// alertsOver runs the default detection rules over the whole log, and
// returns the alerts by rule and group. (The harness's own admin calls
// may raise admin-after-hours for their actions, depending on when the
// test runs.)
func alertsOver(t *testing.T, l *audit.Log) map[string]int {
	t.Helper()
	eng := detect.NewEngine(detect.Default())
	fired := map[string]int{}
	for i := int64(0); i < l.Size(); i++ {
		b, err := l.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range eng.Process(i, e) {
			fired[a.Rule+" "+a.Group]++
		}
	}
	return fired
}

func noForgedAlert(t *testing.T, fired map[string]int) {
	t.Helper()
	for k := range fired {
		if strings.HasPrefix(k, "admin-token-used ") {
			continue // the test's own setup, with the admin token
		}
		if k != "admin-after-hours action=entry.create" && k != "admin-after-hours action=join_token.create" && k != "admin-after-hours action=policy.put" {
			t.Fatalf("alert raised: %s (all: %v)", k, fired)
		}
	}
}

// forgeries are what a compromised workload shipped on wave 1: an admin's
// entry.delete at night in the future, and a refresh-token reuse for a
// user (each raised an alert).
func forgeries(stream string, from uint64) []*audit.Entry {
	night := time.Date(2031, 1, 4, 23, 0, 0, 0, time.UTC) // a Saturday
	del := &audit.Entry{V: audit.SchemaVersion, Time: night, Actor: audit.Actor{User: "admin"}, Action: "entry.delete",
		Target: "spiffe://example.org/payments", Outcome: audit.OutcomeSuccess, Source: "server", Stream: stream, Seq: from,
		Details: map[string]string{"entry_id": "e1"}}
	reuse := &audit.Entry{V: audit.SchemaVersion, Time: night, Actor: audit.Actor{User: "alice"}, Action: "oauth.refresh_reuse",
		Outcome: audit.OutcomeFailure, Source: "oauth", Stream: stream, Seq: from + 1}
	return []*audit.Entry{del, reuse}
}

// Issue 26 item 3: a workload no policy protects (not a proxy or SDK
// service) may not ship at all; the refusal is recorded, once per interval
// with a count, and no alert is raised.
func TestIngestRefusesAWorkloadThatIsNotAnEnforcementPoint(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	job := h.workloadCert("node-1", "spiffe://example.org/batch-job")
	send := spool.APISender{Client: h.client("", job)}
	const tries = 20
	for range tries {
		_, err := send.Send(ctx, forgeries("0123456789abcdef0123456789abcdef", 1))
		wantStatus(t, err, http.StatusForbidden, "no policy protects spiffe://example.org/batch-job")
	}
	h.srv.record(ctx, h.srv.refusals.Flush(true)...)
	if es := logEntries(t, h.srv.audit, "entry.delete"); len(es) != 0 {
		t.Fatalf("forged entry.delete stored: %+v", es[0])
	}
	if es := logEntries(t, h.srv.audit, "oauth.refresh_reuse"); len(es) != 0 {
		t.Fatalf("forged oauth.refresh_reuse stored: %+v", es[0])
	}
	refusals := logEntries(t, h.srv.audit, "audit.ingest")
	if len(refusals) != 2 || refusals[0].Actor.SpiffeID != "spiffe://example.org/batch-job" || refusals[1].Details["count"] != strconv.Itoa(tries-1) {
		t.Fatalf("refusal entries %+v: want the first and an aggregate of %d", refusals, tries-1)
	}
	noForgedAlert(t, alertsOver(t, h.srv.audit))
}

// A proxy or SDK service may ship decisions about itself only: forged
// admin and OAuth entries and decisions naming another service as target
// are refused (counted in one audit.ingest entry), the stream goes on, a
// time in the future is clamped, and no alert is raised.
func TestIngestKeepsAnEnforcementPointToItsOwnDecisions(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	orders := h.workloadCert("node-1", "spiffe://example.org/orders")
	h.protect("spiffe://example.org/orders")
	send := spool.APISender{Client: h.client("", orders)}
	stream := "fedcba9876543210fedcba9876543210"
	batch := forgeries(stream, 1)
	own := decision(3) // about orders, recorded by orders' guard
	own.Stream, own.Seq = stream, 3
	own.Time = h.clk.Now().Add(48 * time.Hour)
	other := decision(4)
	other.Target = "spiffe://example.org/payments"
	other.Stream, other.Seq = stream, 4
	batch = append(batch, own, other)
	if ack, err := send.Send(ctx, batch); err != nil || ack != 4 {
		t.Fatalf("ack %d, %v: the batch must be acknowledged so the stream goes on", ack, err)
	}
	for _, a := range []string{"entry.delete", "oauth.refresh_reuse"} {
		if es := logEntries(t, h.srv.audit, a); len(es) != 0 {
			t.Fatalf("forged %s stored: %+v", a, es[0])
		}
	}
	ds := logEntries(t, h.srv.audit, "authz.decision")
	if len(ds) != 1 || ds[0].Seq != 3 {
		t.Fatalf("decisions stored %+v: want only orders' own (seq 3)", ds)
	}
	if d := ds[0]; d.Source != "spiffe://example.org/orders" || !d.Time.Equal(h.clk.Now()) || d.Details["time_claimed"] == "" {
		t.Fatalf("own decision: source %q time %s claimed %q; want the shipper as source and the time clamped to receipt", d.Source, d.Time, d.Details["time_claimed"])
	}
	ref := logEntries(t, h.srv.audit, "audit.ingest")
	if len(ref) != 1 || ref[0].Outcome != audit.OutcomeDenied || ref[0].Actor.SpiffeID != "spiffe://example.org/orders" ||
		ref[0].Details["refused"] != "map[authz.decision:1 entry.delete:1 oauth.refresh_reuse:1]" {
		t.Fatalf("refusal entries %+v", ref)
	}
	noForgedAlert(t, alertsOver(t, h.srv.audit))
}

// An agent ships attestation refusals on its own host, nothing else.
func TestIngestKeepsAnAgentToItsHost(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	agentCert, _ := h.attest("node-1")
	self := "spiffe://example.org/rampart/agent/node-1"
	stream := "00112233445566778899aabbccddeeff"
	mk := func(seq uint64, target string) *audit.Entry {
		return &audit.Entry{V: audit.SchemaVersion, Time: h.clk.Now(), Actor: audit.Actor{User: "unix:uid:1000"}, Action: "workload.attest",
			Target: target, Outcome: audit.OutcomeDenied, Stream: stream, Seq: seq}
	}
	dec := decision(3)
	dec.Target, dec.Stream, dec.Seq = self, stream, 3
	if _, err := (spool.APISender{Client: h.client("", agentCert)}).Send(ctx, []*audit.Entry{mk(1, self), mk(2, "spiffe://example.org/rampart/agent/node-2"), dec}); err != nil {
		t.Fatal(err)
	}
	es := logEntries(t, h.srv.audit, "workload.attest")
	if len(es) != 1 || es[0].Seq != 1 || es[0].Source != self {
		t.Fatalf("attestation entries %+v: want only the one on the agent's own host", es)
	}
	if ds := logEntries(t, h.srv.audit, "authz.decision"); len(ds) != 0 {
		t.Fatal("an agent shipped a decision")
	}
}

// One identity cannot grow the stream table without bound.
func TestIngestCapsStreamsPerIdentity(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	orders := h.workloadCert("node-1", "spiffe://example.org/orders")
	h.protect("spiffe://example.org/orders")
	send := spool.APISender{Client: h.client("", orders)}
	for i := range intake.MaxStreamsPerIdentity + 1 {
		e := decision(i)
		e.Stream, e.Seq = fmt.Sprintf("%032x", i), 1
		_, err := send.Send(ctx, []*audit.Entry{e})
		if i < intake.MaxStreamsPerIdentity && err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if i == intake.MaxStreamsPerIdentity {
			wantStatus(t, err, http.StatusTooManyRequests, "already ships")
		}
	}
}
