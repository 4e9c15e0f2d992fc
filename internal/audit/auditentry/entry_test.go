package auditentry

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// canonical is the encoding of sample(): the format the log stores and the
// spool ships. A change here changes every log already written.
const canonical = `{"v":1,"time":"2026-01-01T00:00:00.000000007Z","actor":{"spiffe_id":"spiffe://example.org/orders"},"action":"authz.decision","target":"spiffe://example.org/payments","outcome":"success","details":{"n":"7"}}`

func sample() *Entry {
	return &Entry{V: SchemaVersion, Time: time.Date(2026, 1, 1, 1, 0, 0, 7, time.FixedZone("CET", 3600)),
		Actor: Actor{SpiffeID: "spiffe://example.org/orders"}, Action: "authz.decision", Target: "spiffe://example.org/payments",
		Outcome: OutcomeSuccess, Details: map[string]string{"n": "7"}}
}

func TestCanonicalEncoding(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != canonical {
		t.Fatalf("canonical encoding changed:\n got %s\nwant %s", b, canonical)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := back.Marshal(); !bytes.Equal(b, b2) {
		t.Fatal("round trip is not byte-identical")
	}
	spaced := strings.Replace(canonical, `{"v":1,`, `{ "v":1,`, 1)
	if _, err := Decode([]byte(spaced)); err != nil {
		t.Fatalf("Decode refused a non-canonical spelling: %v", err)
	}
	for _, tt := range []struct{ name, in, wantErr string }{
		{"unknown field", strings.Replace(canonical, `"v":1`, `"v":1,"x":2`, 1), `unknown field "x"`},
		{"not canonical", spaced, "not in canonical form"},
		{"bad action", strings.Replace(canonical, "authz.decision", "AUTHZ", 1), `action "AUTHZ"`},
		{"bad outcome", strings.Replace(canonical, `"success"`, `"ok"`, 1), `outcome "ok"`},
		{"wrong version", strings.Replace(canonical, `"v":1`, `"v":2`, 1), "v = 2, want 1"},
		{"trailing data", canonical + "{}", "data after the object"},
		{"no actor", strings.Replace(canonical, `{"spiffe_id":"spiffe://example.org/orders"}`, `{}`, 1), "actor needs"},
		{"time not in UTC", strings.Replace(canonical, "00:00:00.000000007Z", "01:00:00.000000007+01:00", 1), "not in canonical form"},
		{"too big", `{"v":1,"reason":"` + strings.Repeat("a", MaxSize) + `"}`, "at most 65535"},
		{"not json", "garbage", "audit: entry: invalid character"},
	} {
		if _, err := Parse([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestServerWritten(t *testing.T) {
	for src, want := range map[string]bool{"server": true, "oauth": true, "spiffe://example.org/orders": false, "": false} {
		if got := (&Entry{Source: src}).ServerWritten(); got != want {
			t.Errorf("source %q: ServerWritten = %v", src, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(canonical))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted %q but it re-encodes as %q (%v)", data, again, err)
		}
	})
}
