package detect

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// Monday 2026-11-23 10:00 UTC: working hours.
var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

const (
	orders   = "spiffe://example.org/orders"
	payments = "spiffe://example.org/payments"
	rogue    = "spiffe://example.org/rogue"
)

func decision(at time.Duration, caller, target, method, outcome string) *audit.Entry {
	return &audit.Entry{V: 1, Time: t0.Add(at), Actor: audit.Actor{SpiffeID: caller}, Action: "authz.decision", Target: target,
		Outcome: outcome, Source: target, Details: map[string]string{"method": method, "path": "/x"}}
}

// ev is an entry the server wrote (source "oauth" for OAuth actions).
func ev(at time.Duration, action, outcome, reason string, actor audit.Actor, details map[string]string) *audit.Entry {
	src := "server"
	if strings.HasPrefix(action, "oauth.") {
		src = "oauth"
	}
	return &audit.Entry{V: 1, Time: t0.Add(at), Actor: actor, Action: action, Outcome: outcome, Reason: reason, Details: details, Source: src}
}

// shipped is e as a workload shipped it: the same claims, but the source
// says where it came from.
func shipped(e *audit.Entry) *audit.Entry {
	c := *e
	c.Source = "spiffe://example.org/rogue"
	return &c
}

// aggregate is e standing for n entries.
func aggregate(e *audit.Entry, n int) *audit.Entry {
	c := *e
	c.Details = map[string]string{"count": strconv.Itoa(n)}
	for k, v := range e.Details {
		c.Details[k] = v
	}
	return &c
}

func repeat(n int, step time.Duration, f func(at time.Duration) *audit.Entry) []*audit.Entry {
	var out []*audit.Entry
	for i := range n {
		out = append(out, f(time.Duration(i)*step))
	}
	return out
}

func concat(parts ...[]*audit.Entry) []*audit.Entry {
	var out []*audit.Entry
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fired runs entries through the default rules and counts alerts by rule
// (new alerts, not merged firings).
func fired(t *testing.T, entries []*audit.Entry) map[string]int {
	t.Helper()
	e := NewEngine(Default())
	seen := map[string]bool{}
	out := map[string]int{}
	for i, en := range entries {
		if err := en.Validate(); err != nil {
			t.Fatalf("test entry %d: %v", i, err)
		}
		for _, a := range e.Process(int64(i), en) {
			if !seen[a.ID] {
				seen[a.ID] = true
				out[a.Rule]++
			}
		}
	}
	if e.Errors != 0 {
		t.Fatalf("%d condition evaluation errors", e.Errors)
	}
	return out
}

// Issue 27: decisions come aggregated (details.count); a threshold counts
// what an entry stands for, so aggregation hides no burst.
func TestThresholdCountsAggregates(t *testing.T) {
	burst := []*audit.Entry{decision(0, rogue, payments, "GET", "denied"), aggregate(decision(time.Second, rogue, payments, "GET", "denied"), 19)}
	if n := fired(t, burst)["denied-burst"]; n != 1 {
		t.Fatalf("a decision and an aggregate of 19 fired denied-burst %d times, want 1", n)
	}
	if n := fired(t, burst[1:])["denied-burst"]; n != 0 {
		t.Fatalf("an aggregate of 19 fired denied-burst %d times, want 0", n)
	}
}

func TestDefaultRules(t *testing.T) {
	admin := audit.Actor{User: "admin"}
	login := func(user, outcome string) func(time.Duration) *audit.Entry {
		return func(at time.Duration) *audit.Entry {
			return ev(at, "oauth.login", outcome, "", audit.Actor{User: user}, map[string]string{"username": user})
		}
	}
	for _, tc := range []struct {
		rule  string
		fires []*audit.Entry
		quiet []*audit.Entry
	}{
		{"denied-burst",
			repeat(20, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") }),
			concat(
				// 19 in a minute, or 20 spread over more than a minute, or 20 from different callers.
				repeat(19, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") }),
				repeat(20, 5*time.Second, func(at time.Duration) *audit.Entry { return decision(time.Hour+at, rogue, payments, "GET", "denied") }),
				repeat(20, time.Second, func(at time.Duration) *audit.Entry {
					return decision(2*time.Hour+at, "spiffe://example.org/c"+at.String(), payments, "GET", "denied")
				}),
			)},
		{"login-failures",
			repeat(5, 10*time.Second, login("alice", "failure")),
			concat(repeat(4, 10*time.Second, login("alice", "failure")), repeat(4, 10*time.Second, login("bob", "failure")),
				[]*audit.Entry{shipped(login("dave", "failure")(0)), shipped(login("dave", "failure")(time.Second)), shipped(login("dave", "failure")(2 * time.Second)),
					shipped(login("dave", "failure")(3 * time.Second)), shipped(login("dave", "failure")(4 * time.Second))},
				repeat(10, time.Second, login("carol", "success")))},
		{"revoked-credential-use",
			[]*audit.Entry{ev(0, "tls.client_auth", "denied", "client certificate is revoked", audit.Actor{SpiffeID: "spiffe://example.org/rampart/agent/node-1"},
				map[string]string{"reason": "revoked"})},
			[]*audit.Entry{ev(0, "tls.client_auth", "denied", "client certificate does not chain to this trust domain's bundle", audit.Actor{SpiffeID: "spiffe://evil.org/x"},
				map[string]string{"reason": "untrusted"}),
				ev(time.Second, "svid.revoke", "success", "revoked by admin", admin, nil)}},
		{"revoked-credential-use-reported",
			[]*audit.Entry{withReason(decision(0, rogue, payments, "GET", "denied"), "client SVID revoked")},
			[]*audit.Entry{withReason(decision(0, rogue, payments, "GET", "denied"), "no rule allows"),
				withReason(decision(0, rogue, payments, "GET", "denied"), "access token refused: access token malformed: typ \"revoked\"")}},
		{"refresh-token-reuse",
			[]*audit.Entry{ev(0, "oauth.refresh_reuse", "denied", "refresh token reused; family revoked", audit.Actor{User: "alice"}, nil)},
			[]*audit.Entry{ev(0, "oauth.refresh", "success", "", audit.Actor{User: "alice"}, nil),
				shipped(ev(0, "oauth.refresh_reuse", "denied", "refresh token reused; family revoked", audit.Actor{User: "alice"}, nil))}},
		{"key-use-denied",
			[]*audit.Entry{ev(0, "kms.decrypt", "denied", "no rule of the key-use policy allows decrypt on this key", audit.Actor{SpiffeID: rogue}, map[string]string{"key": "orders-pii"}),
				ev(time.Minute, "kms.decrypt", "denied", "no rule of the key-use policy allows decrypt on this key", audit.Actor{SpiffeID: rogue}, map[string]string{"key": "orders-pii"})},
			[]*audit.Entry{ev(0, "kms.decrypt", "success", "", audit.Actor{SpiffeID: orders}, map[string]string{"key": "orders-pii"}),
				ev(0, "kms.decrypt", "failure", "ciphertext does not decrypt", audit.Actor{SpiffeID: orders}, map[string]string{"key": "orders-pii"}),
				ev(0, "kms.key_create", "denied", "exists", admin, nil),
				shipped(ev(0, "kms.decrypt", "denied", "no rule", audit.Actor{SpiffeID: rogue}, map[string]string{"key": "orders-pii"}))}},
		{"new-service-edge",
			[]*audit.Entry{decision(0, orders, payments, "GET", "success"), decision(25*time.Hour, "spiffe://example.org/gateway", payments, "GET", "success")},
			[]*audit.Entry{decision(0, orders, payments, "GET", "success"), decision(time.Hour, "spiffe://example.org/gateway", payments, "GET", "success"),
				decision(25*time.Hour, orders, payments, "POST", "success"), decision(26*time.Hour, rogue, payments, "GET", "denied")}},
		{"admin-after-hours",
			[]*audit.Entry{ev(12*time.Hour, "entry.create", "success", "", admin, nil), // 22:00
				ev(12*time.Hour+time.Minute, "entry.create", "success", "", audit.Actor{User: "alice"}, map[string]string{"auth": "operator"})}, // the same group
			[]*audit.Entry{ev(0, "entry.create", "success", "", admin, nil), ev(12*time.Hour, "entry.create", "success", "", audit.Actor{SpiffeID: orders}, nil),
				ev(12*time.Hour, "admin.auth", "denied", "missing or wrong admin token", admin, nil),
				ev(12*time.Hour, "admin.break_glass", "success", "", admin, nil),                                                                       // admin-token-used's
				ev(12*time.Hour, "policy.put", "success", "", audit.Actor{SpiffeID: "spiffe://example.org/ci"}, map[string]string{"auth": "workload"}), // a pipeline
				shipped(ev(12*time.Hour, "entry.delete", "success", "", admin, nil))}},
		{"admin-token-used",
			[]*audit.Entry{ev(0, "admin.break_glass", "success", "", admin, map[string]string{"remote": "192.0.2.7:5000", "path": "/v1/entries"}),
				ev(time.Minute, "admin.break_glass", "success", "", admin, map[string]string{"remote": "192.0.2.7:5000", "path": "/v1/policies"})},
			[]*audit.Entry{shipped(ev(0, "admin.break_glass", "success", "", admin, map[string]string{"remote": "192.0.2.7:5000"})),
				ev(0, "admin.auth", "denied", "missing or wrong admin token", audit.Actor{User: "anonymous"}, map[string]string{"remote": "192.0.2.7:5000"}),
				ev(0, "entry.create", "success", "", audit.Actor{User: "alice"}, map[string]string{"auth": "operator"})}},
		{"read-volume",
			repeat(3000, 10*time.Millisecond, func(at time.Duration) *audit.Entry { return decision(at, orders, payments, "GET", "success") }),
			concat(repeat(2999, 10*time.Millisecond, func(at time.Duration) *audit.Entry { return decision(at, orders, payments, "GET", "success") }),
				repeat(3000, 10*time.Millisecond, func(at time.Duration) *audit.Entry {
					return decision(time.Hour+at, orders, payments, "POST", "success")
				}))},
		{"audit-ingestion-gap",
			[]*audit.Entry{ev(0, "audit.ingest.gap", "failure", "entries 4 to 5 of the stream never arrived", audit.Actor{SpiffeID: orders}, nil)},
			[]*audit.Entry{ev(0, "audit.ingest", "denied", "stream belongs to another", audit.Actor{SpiffeID: orders}, nil)}},
		{"oauth-rate-limited",
			[]*audit.Entry{ev(0, "oauth.rate_limit", "denied", "40 requests refused", audit.Actor{User: "anonymous"}, map[string]string{"remote": "203.0.113.9", "limiter": "oauth_login", "count": "40"}),
				ev(time.Minute, "oauth.rate_limit", "denied", "35 requests refused", audit.Actor{User: "anonymous"}, map[string]string{"remote": "203.0.113.9", "limiter": "oauth_login", "count": "35"})},
			[]*audit.Entry{shipped(ev(0, "oauth.rate_limit", "denied", "forged", audit.Actor{User: "anonymous"}, map[string]string{"remote": "203.0.113.9", "limiter": "oauth_login"})),
				ev(0, "oauth.login", "failure", "wrong password", audit.Actor{User: "anonymous"}, map[string]string{"username": "alice"})}},
		{"audit-entries-dropped",
			[]*audit.Entry{shipped(ev(0, "audit.entries_dropped", "failure", "120 audit entries dropped", audit.Actor{SpiffeID: orders}, map[string]string{"count": "120"}))},
			[]*audit.Entry{ev(0, "audit.seal", "success", "", audit.Actor{SpiffeID: orders}, nil)}},
		{"netpol-port-scan",
			[]*audit.Entry{netpolDropped(0, "scan", agentSource), netpolDropped(time.Minute, "scan", agentSource)},           // one alert per host in 10m
			[]*audit.Entry{netpolDropped(0, "drops", agentSource), netpolDropped(0, "scan", "spiffe://example.org/orders")}}, // a workload cannot forge it
		{"vulnerable-workload-running",
			[]*audit.Entry{vulnerable(0, "called", "HIGH"), vulnerable(time.Minute, "called", "HIGH")}, // one alert per finding a day
			[]*audit.Entry{vulnerable(0, "not-called", "CRITICAL"), vulnerable(0, "called", "MEDIUM"),
				shipped(vulnerable(0, "called", "CRITICAL"))}}, // forged by an agent or workload
	} {
		t.Run(tc.rule, func(t *testing.T) {
			if n := fired(t, tc.fires)[tc.rule]; n != 1 {
				t.Errorf("fired %d alerts, want 1", n)
			}
			if n := fired(t, tc.quiet)[tc.rule]; n != 0 {
				t.Errorf("fired %d alerts on entries that must not fire it", n)
			}
		})
	}
	// Every default rule has a case above.
	for _, r := range Default().Rules {
		found := false
		for _, name := range []string{"denied-burst", "login-failures", "revoked-credential-use", "revoked-credential-use-reported", "refresh-token-reuse", "key-use-denied", "new-service-edge", "admin-after-hours", "admin-token-used", "read-volume", "audit-ingestion-gap", "audit-entries-dropped", "oauth-rate-limited",
			"backup-failed", "backup-overdue", "backup-drill-failed", "backup-drill-overdue", "vulnerable-workload-running",
			"acme-challenge-failures", "netpol-port-scan"} { // the backup rules: backup_rules_test.go
			found = found || name == r.Name
		}
		if !found {
			t.Errorf("default rule %s has no test", r.Name)
		}
	}
}

const agentSource = "spiffe://example.org/rampart/agent/h2"

// netpolDropped is an agent's entry for the drops of one interval.
func netpolDropped(at time.Duration, pattern, source string) *audit.Entry {
	e := ev(at, "netpol.dropped", "denied", "dropped", audit.Actor{SpiffeID: source},
		map[string]string{"ports": "22:1,8080:1,8443:2", "count": "4", "distinct_ports": "3", "pattern": pattern})
	e.Source = source
	return e
}

// vulnerable is the server's entry for a finding on a running workload.
func vulnerable(at time.Duration, reachability, severity string) *audit.Entry {
	e := ev(at, "scan.vulnerable", "failure", "calls vulnerable code", audit.Actor{SpiffeID: "spiffe://example.org/rampart/server"},
		map[string]string{"vuln": "GO-2022-1059", "sha256": "ab", "reachability": reachability, "severity": severity})
	e.Target, e.Source = orders, "server"
	return e
}

func TestDedupAndReplay(t *testing.T) {
	entries := repeat(100, time.Second, func(at time.Duration) *audit.Entry { return decision(at, rogue, payments, "GET", "denied") })
	run := func() []string {
		e := NewEngine(Default())
		var ids []string
		var last int64
		for i, en := range entries {
			for _, a := range e.Process(int64(i), en) {
				ids = append(ids, a.ID)
				last = a.Count
			}
		}
		if last != 5 {
			t.Fatalf("100 denials: the burst alert merged %d firings, want 5", last)
		}
		return ids
	}
	a, b := run(), run()
	if len(a) != 5 || strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("alert IDs differ between runs or were not merged: %v / %v", a, b)
	}
	for _, id := range a[1:] {
		if id != a[0] {
			t.Fatalf("firings within the dedup span made new alerts: %v", a)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"", "empty"},
		{"rules: []", "non-empty list"},
		{"rules:\n  - name: x\n    colour: red\n", `line 3: rules[0]: unknown field "colour"`},
		{"rules:\n  - name: Bad_Name\n", "lower-case words"},
		{"rules:\n  - name: a\n    severity: urgent\n", `"urgent": want one of`},
		{"rules:\n  - name: a\n    condition: entry.outcome ==\n", "line 3: rules[0] (a).condition"},
		{"rules:\n  - name: a\n    condition: entry.action\n", ""}, // dyn: allowed, evaluates to no match if not bool
		{"rules:\n  - name: a\n    condition: '1 + 1'\n", "must be true or false"},
		{"rules:\n  - name: a\n    threshold: 5\n", "needs a window"},
		{"rules:\n  - name: a\n    window: 1m\n", "needs a threshold"},
		{"rules:\n  - name: a\n    window: soon\n    threshold: 2\n", "positive duration"},
		{"rules:\n  - name: a\n    threshold: -1\n    window: 1m\n", "whole number"},
		{"rules:\n  - name: a\n    group_by: [password]\n", "not an entry field"},
		{"rules:\n  - name: a\n    new_terms: {fields: [target]}\n", "baseline"},
		{"rules:\n  - name: a\n    new_terms: {fields: [target], baseline: 1h}\n    threshold: 2\n    window: 1m\n", "cannot be combined"},
		{"rules:\n  - name: a\n  - name: a\n", "defined twice"},
		{"rules:\n  - name: a\nsinks:\n  - type: pager\n", `"pager": want webhook`},
		{"rules:\n  - name: a\nsinks:\n  - type: webhook\n    url: ftp://x\n", "http(s) URL"},
		{"rules:\n  - name: a\nsinks:\n  - type: smtp\n    addr: localhost:25\n", "needs addr"},
	} {
		_, err := Parse([]byte(tc.src))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.src, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want it to contain %q", tc.src, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultRules())
	f.Add([]byte("rules:\n  - name: a\n    condition: entry.outcome == \"denied\"\n    window: 1m\n    threshold: 3\n"))
	f.Add([]byte("rules:\n  - name: a\n    new_terms: {fields: [target], baseline: 1h}\nsinks:\n  - type: slack\n    url: https://hooks.example/x\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		rs, err := Parse(src)
		if err != nil {
			return
		}
		// Whatever parses must run without panicking.
		e := NewEngine(rs)
		e.Process(0, decision(0, orders, payments, "GET", "denied"))
		e.Process(1, decision(time.Hour, orders, payments, "GET", "success"))
	})
}

// Issue 26 item 9: detection CEL had no cost limit. A condition whose worst
// case is too costly is refused when the rules load; one that runs long
// over an entry larger than a clipped one is stopped at run time.
func TestConditionCostIsBounded(t *testing.T) {
	_, err := Parse([]byte(`rules:
  - name: quadratic-cubed
    condition: entry.details.all(a, entry.details.all(b, entry.details.all(c, a != b || b != c)))
`))
	if err == nil || !strings.Contains(err.Error(), "too costly") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("got %v, want a refusal naming the line and the cost", err)
	}
	rs, err := Parse([]byte(`rules:
  - name: pairs
    condition: entry.details.all(a, entry.details.all(b, a != b || a == b)) && entry.outcome == "denied"
`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(rs)
	big := map[string]string{} // an entry from before clipping: 2,000 details
	for i := range 2000 {
		big[strconv.Itoa(i)] = "v"
	}
	if alerts := e.Process(0, ev(0, "x.y", "denied", "", audit.Actor{User: "u"}, big)); len(alerts) != 0 || e.Errors != 1 {
		t.Fatalf("alerts %v, errors %d: want the evaluation stopped and counted", alerts, e.Errors)
	}
	if alerts := e.Process(1, ev(0, "x.y", "denied", "", audit.Actor{User: "u"}, map[string]string{"a": "1"})); len(alerts) != 1 {
		t.Fatalf("a small entry: %d alerts, want 1", len(alerts))
	}
}

// Red team finding: revoked-credential-use matched "revoked" anywhere in a
// reason, and reasons quote what callers send (a client_id, a token's
// header), so anyone could fire it, or, firing it under a victim's name,
// silence the real alert for an hour (dedup). It now matches only fields
// the server's (or the guard's) own checks set.
func TestRevokedCredentialUseIgnoresFreeText(t *testing.T) {
	const rule = "revoked-credential-use"
	anon := audit.Actor{User: "anonymous"}
	for _, tc := range []struct {
		name  string
		entry *audit.Entry
		fires bool
	}{
		// What an attacker can write.
		{"client_id in a reason", ev(0, "oauth.client_auth", "denied", `client_id "svc revoked\nevicted" does not match the assertion's subject`, anon,
			map[string]string{"claimed_client_id": `"svc revoked\nevicted"`}), false},
		{"forged token header at a service", decision(0, rogue, payments, "GET", "denied"), false},
		{"revoked_credential shipped by a workload", shipped(ev(0, "oauth.token", "denied", "refresh token revoked", audit.Actor{User: "client:web"},
			map[string]string{"revoked_credential": "refresh_token"})), false},
		{"reason word in another server entry", ev(0, "admin.auth", "denied", "token revoked? evicted?", anon, nil), false},
		{"tls refusal of another kind", ev(0, "tls.client_auth", "denied", "revoked", audit.Actor{User: "unknown"}, map[string]string{"reason": "untrusted"}), false},
		{"near miss of the guard's reason", withReason(decision(0, rogue, payments, "GET", "denied"), "access token refused: access token malformed: typ \"revoked\""), false},
		// What the server and the guard record.
		{"refresh token revoked", ev(0, "oauth.token", "denied", "refresh token revoked", audit.Actor{User: "client:web"},
			map[string]string{"revoked_credential": "refresh_token"}), true},
		{"revoked token at userinfo", ev(0, "oauth.userinfo", "denied", "access token revoked", audit.Actor{User: "alice"},
			map[string]string{"revoked_credential": "access_token"}), true},
		{"evicted agent", ev(0, "tls.client_auth", "denied", "agent is evicted", audit.Actor{SpiffeID: "spiffe://example.org/rampart/agent/n"},
			map[string]string{"reason": "evicted"}), true},
		// What a proxy or SDK service reports: shipped, so forgeable by a
		// compromised one about any caller (red team: one forged entry
		// got the playbook to quarantine the trust domain); a rule of its
		// own, revoked-credential-use-reported.
		{"revoked SVID at a service", withReason(decision(0, rogue, payments, "GET", "denied"), "client SVID revoked"), false},
		{"revoked token at a service", withReason(decision(0, rogue, payments, "GET", "denied"), "access token refused: access token revoked"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := 0
			if tc.fires {
				want = 1
			}
			if n := fired(t, []*audit.Entry{tc.entry})[rule]; n != want {
				t.Fatalf("fired %d alerts, want %d", n, want)
			}
		})
	}
}

func withReason(e *audit.Entry, reason string) *audit.Entry {
	e.Reason = reason
	return e
}

// An alert's summary quotes the reason of the entry that fired it: a
// reason carrying a caller's line breaks or words cannot pass for the
// alert's own text.
func TestAlertSummaryQuotesReason(t *testing.T) {
	e := NewEngine(Default())
	var summary string
	en := ev(0, "kms.decrypt", "denied", "no rule for key \"x\nALERT resolved: false positive\"", audit.Actor{SpiffeID: rogue}, map[string]string{"key": "x"})
	for _, a := range e.Process(0, en) {
		summary = a.Summary
	}
	if summary == "" || strings.ContainsAny(summary, "\r\n") || !strings.Contains(summary, `reason "no rule for key \"x\nALERT`) {
		t.Fatalf("summary %q: want the reason quoted, without line breaks", summary)
	}
}
