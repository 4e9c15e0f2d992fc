package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/spool"
	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/store"
)

var (
	td     = spiffeid.RequireTrustDomainFromString("example.org")
	orders = spiffeid.RequireFromString("spiffe://example.org/orders")
)

// protected is a policy store in which a policy protects the services it
// lists.
type protected map[string]bool

func (p protected) PolicyHistory(_ context.Context, service string) ([]store.Policy, error) {
	if p[service] {
		return []store.Policy{{Service: service, Seq: 1}}, nil
	}
	return nil, store.ErrNotFound
}

type fixture struct {
	t     *testing.T
	dir   string
	log   *audit.Log
	clk   *fakeclock.Clock
	cfg   Config
	in    *Intake
	extra []*audit.Entry // refusal entries handed out
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), clk: fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	l, err := audit.Open(filepath.Join(f.dir, "audit"), "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f.log = l
	f.cfg = Config{TrustDomain: td, StatePath: filepath.Join(f.dir, "audit-streams.json"), Policies: protected{orders.String(): true},
		Revision: func() int64 { return 1 }, Now: f.clk.Now,
		Append: func(ctx context.Context, es ...*audit.Entry) error { _, err := l.AppendEntries(ctx, es...); return err }}
	f.reload()
	return f
}

func (f *fixture) reload() {
	f.t.Helper()
	in, err := Load(f.cfg, f.log)
	if err != nil {
		f.t.Fatal(err)
	}
	f.in = in
}

func decisions(stream string, from, n int, target string) []*audit.Entry {
	es := make([]*audit.Entry, n)
	for i := range es {
		es[i] = &audit.Entry{V: audit.SchemaVersion, Time: time.Date(2026, 1, 1, 0, 0, 0, from+i, time.UTC),
			Actor: audit.Actor{SpiffeID: "spiffe://example.org/gateway"}, Action: "authz.decision", Target: target,
			Outcome: audit.OutcomeSuccess, Stream: stream, Seq: uint64(from + i)}
	}
	return es
}

func (f *fixture) ship(caller spiffeid.ID, es []*audit.Entry) (Ack, error) {
	f.t.Helper()
	return f.in.Take(context.Background(), Batch{Caller: caller, Body: bytes.NewReader(encode(f.t, es)), ContentType: spool.BatchContentType,
		Refused: func(reason string, kv ...any) []*audit.Entry {
			e := &audit.Entry{V: audit.SchemaVersion, Time: f.clk.Now(), Action: "audit.ingest", Outcome: audit.OutcomeDenied, Reason: reason}
			f.extra = append(f.extra, e)
			return []*audit.Entry{e}
		}})
}

func encode(t testing.TB, es []*audit.Entry) []byte {
	raws := make([][]byte, len(es))
	for i, e := range es {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = b
	}
	return spool.EncodeBatch(raws)
}

const stream = "0123456789abcdef0123456789abcdef"

// The stream table survives a restart, rebuilt from the entries alone and
// from a snapshot plus the entries after it: a batch retried after the
// restart is not stored twice.
func TestStreamTableSurvivesRestart(t *testing.T) {
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprint("snapshot=", snap), func(t *testing.T) {
			f := newFixture(t)
			if _, err := f.ship(orders, decisions(stream, 1, 3, orders.String())); err != nil {
				t.Fatal(err)
			}
			if snap {
				if err := f.in.Snapshot(f.log.Size()); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.ship(orders, decisions(stream, 4, 3, orders.String())); err != nil {
				t.Fatal(err)
			}
			f.reload()
			size := f.log.Size()
			ack, err := f.ship(orders, decisions(stream, 1, 6, orders.String()))
			if err != nil || ack.Through != 6 || ack.Stream != stream {
				t.Fatalf("retried batch: %+v %v, want acknowledged through 6", ack, err)
			}
			if f.log.Size() != size {
				t.Fatalf("a retried batch was stored again: %d entries, want %d", f.log.Size(), size)
			}
			// And the stream is still its owner's.
			other := spiffeid.RequireFromString("spiffe://example.org/rampart/agent/node-1")
			if _, err := f.ship(other, decisions(stream, 7, 1, other.String())); !errors.Is(err, ErrNotOwner) {
				t.Fatalf("another identity continuing the stream: %v, want ErrNotOwner", err)
			}
		})
	}
}

// Streams idle for StreamIdle no longer count against the limit.
func TestIdleStreamsDoNotCount(t *testing.T) {
	f := newFixture(t)
	for i := range MaxStreamsPerIdentity {
		if _, err := f.ship(orders, decisions(fmt.Sprintf("%032x", i), 1, 1, orders.String())); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	_, err := f.ship(orders, decisions(fmt.Sprintf("%032x", 1000), 1, 1, orders.String()))
	var ref *RefusedError
	if !errors.As(err, &ref) || ref.Kind != ErrStreamLimit || !strings.Contains(ref.Reason, "already ships 64 streams") {
		t.Fatalf("stream %d: %v, want the stream limit", MaxStreamsPerIdentity, err)
	}
	f.clk.Add(StreamIdle)
	if _, err := f.ship(orders, decisions(fmt.Sprintf("%032x", 1000), 1, 1, orders.String())); err != nil {
		t.Fatalf("a new stream after the others went idle: %v", err)
	}
}

// What each kind of shipper may put in the log.
func TestAdmit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	agent := "spiffe://example.org/rampart/agent/node-1"
	for _, c := range []struct {
		name, action, target, caller string
		role                         role
		refused                      string
	}{
		{"own decision", "authz.decision", orders.String(), orders.String(), roleEnforcer, ""},
		{"another's decision", "authz.decision", "spiffe://example.org/payments", orders.String(), roleEnforcer, "a decision about another service"},
		{"enforcer attests", "workload.attest", orders.String(), orders.String(), roleEnforcer, "not one a proxy or SDK service records"},
		{"own host", "workload.attest", agent, agent, roleAgent, ""},
		{"another host", "workload.attest", "spiffe://example.org/rampart/agent/node-2", agent, roleAgent, "another agent's host"},
		{"own drops", "netpol.dropped", agent, agent, roleAgent, ""},
		{"another host's drops", "netpol.dropped", "spiffe://example.org/rampart/agent/node-2", agent, roleAgent, "another agent's host"},
		{"own drift", "netpol.drift", agent, agent, roleAgent, ""},
		{"a workload's drops", "netpol.dropped", orders.String(), orders.String(), roleEnforcer, "not one a proxy or SDK service records"},
		{"agent decides", "authz.decision", agent, agent, roleAgent, "not one an agent records"},
		{"forged admin action", "entry.delete", orders.String(), orders.String(), roleEnforcer, "action entry.delete is not one"},
		{"spool bookkeeping", "audit.entries_dropped", "anything", orders.String(), roleEnforcer, ""},
		{"replica", "entry.delete", "x", "spiffe://example.org/rampart/server", roleServer, ""},
	} {
		e := &audit.Entry{V: audit.SchemaVersion, Time: now.Add(time.Hour), Action: c.action, Target: c.target, Actor: audit.Actor{User: "admin"}}
		got := admit(e, c.caller, c.role, now)
		if (c.refused == "") != (got == "") || !strings.Contains(got, c.refused) {
			t.Errorf("%s: refused %q, want %q", c.name, got, c.refused)
			continue
		}
		if got == "" && c.role != roleServer {
			if e.Source != c.caller || !e.Time.Equal(now) || e.Details["time_claimed"] == "" {
				t.Errorf("%s: admitted entry %+v: want the shipper as source and a future time clamped", c.name, e)
			}
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(encode(f, decisions(stream, 1, 2, orders.String())), spool.BatchContentType)
	f.Add([]byte(`{"entries":[]}`), "application/json")
	f.Add([]byte(`{"entries":[{"v":1,"stream":"s","seq":1}]}`), "")
	f.Fuzz(func(t *testing.T, b []byte, ct string) {
		es, err := DecodeBatch(bytes.NewReader(b), ct)
		if err == nil && (len(es) == 0 || len(es) > MaxBatchEntries || checkSequence(es) != nil) {
			t.Fatalf("accepted a batch breaking its rules: %d entries", len(es))
		}
		var ref *RefusedError
		if err != nil && !errors.As(err, &ref) {
			t.Fatalf("error %v is not a *RefusedError", err)
		}
	})
}

// Red team finding 10: an enforcer shipped a 16.5 KB decision of "<"
// characters (JSON need not escape them); re-encoded, "<" is \u003c and
// the entry took 96 KB, past the log's entry limit, so the append failed,
// the server answered 503 and the batch with the gap and refusal entries
// in it was lost (and retried, forever). Now every entry is bounded by
// what it takes encoded, and the batch is stored whole.
func TestIngestEntryOfEscapedCharacters(t *testing.T) {
	f := newFixture(t)
	lt := strings.Repeat("<", 399)
	big := decisions(stream, 5, 1, orders.String())[0]
	big.Actor.User, big.Reason, big.Details = lt, lt, map[string]string{}
	for i := range 32 {
		big.Details[fmt.Sprintf("%02d%s", i, strings.Repeat("<", 60))] = lt
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(big); err != nil {
		t.Fatal(err)
	}
	raw := bytes.TrimSpace(buf.Bytes())
	if len(raw) < 16_000 || len(raw) > audit.MaxEntrySize {
		t.Fatalf("attack entry of %d bytes", len(raw))
	}
	if b, err := json.Marshal(big); err != nil || len(b) <= audit.MaxEntrySize {
		t.Fatalf("the attack entry re-encodes to %d bytes (%v): not past the limit, the test proves nothing", len(b), err)
	}
	others := decisions(stream, 6, 2, orders.String())
	others[0].Target = "spiffe://example.org/payments" // refused: another's decision
	raws := [][]byte{raw}
	for _, e := range others {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, b)
	}
	ack, err := f.in.Take(context.Background(), Batch{Caller: orders, Body: bytes.NewReader(spool.EncodeBatch(raws)), ContentType: spool.BatchContentType,
		Refused: func(reason string, kv ...any) []*audit.Entry {
			return []*audit.Entry{{V: audit.SchemaVersion, Time: f.clk.Now(), Actor: audit.Actor{SpiffeID: orders.String()}, Action: "audit.ingest", Outcome: audit.OutcomeDenied, Reason: reason}}
		}})
	if err != nil || ack.Through != 7 {
		t.Fatalf("batch: %+v, %v; want it acknowledged through 7", ack, err)
	}
	var actions []string
	for i := range f.log.Size() {
		b, err := f.log.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if len(b) > audit.MaxClippedSize {
			t.Errorf("entry %d (%s) is %d bytes, at most %d", i, e.Action, len(b), audit.MaxClippedSize)
		}
		actions = append(actions, e.Action)
	}
	if want := "audit.ingest.gap authz.decision authz.decision audit.ingest"; strings.Join(actions, " ") != want {
		t.Fatalf("log holds %q, want %q", actions, want)
	}
}

// One entry that cannot be encoded does not cost the others their place:
// it is recorded as audit.entry_unencodable.
func TestAppendEntriesKeepsTheOthers(t *testing.T) {
	f := newFixture(t)
	es := decisions(stream, 1, 3, orders.String())
	es[1].Outcome = "maybe" // does not validate, clipped or not
	if _, err := f.log.AppendEntries(context.Background(), es...); err != nil {
		t.Fatalf("AppendEntries: %v", err)
	}
	if f.log.Size() != 3 {
		t.Fatalf("%d entries, want 3", f.log.Size())
	}
	b, _ := f.log.Entry(1)
	e, err := audit.ParseEntry(b)
	if err != nil || e.Action != "audit.entry_unencodable" || e.Details["action"] != "authz.decision" || !strings.Contains(e.Reason, `outcome "maybe"`) {
		t.Fatalf("entry 1: %+v %v", e, err)
	}
}

// A shipped decision's actor must be a SPIFFE ID: detection and playbooks
// read it as one (red team: the actor "spiffe://TD/*" in one forged
// decision became a quarantine of the whole trust domain).
func TestAdmitActorMustBeAnID(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for actor, refused := range map[string]bool{
		"spiffe://example.org/*": true, "not an id": true, "spiffe://example.org/ok": false, "": false,
	} {
		e := &audit.Entry{V: audit.SchemaVersion, Time: now, Action: "authz.decision", Target: orders.String(), Actor: audit.Actor{SpiffeID: actor}}
		if got := admit(e, orders.String(), roleEnforcer, now); (got != "") != refused {
			t.Errorf("actor %q: refused %q, want refused %v", actor, got, refused)
		}
	}
}
