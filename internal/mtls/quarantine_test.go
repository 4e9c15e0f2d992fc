package mtls

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestQuarantineMatches(t *testing.T) {
	q := &Quarantine{Self: spiffeid.RequireFromString("spiffe://example.org/payments")}
	called := 0
	q.OnChange(func() { called++ })
	q.Set([]string{"spiffe://example.org/orders", "spiffe://example.org/batch/*", "not a pattern", "*"})
	if called != 1 {
		t.Fatalf("OnChange ran %d times", called)
	}
	for _, tt := range []struct {
		id    string
		holds bool
	}{
		{"spiffe://example.org/orders", true},
		{"spiffe://example.org/orders/v2", false}, // exact: nothing beneath
		{"spiffe://example.org/ordersx", false},
		{"spiffe://example.org/batch", true},
		{"spiffe://example.org/batch/nightly", true},
		{"spiffe://example.org/batchx", false},
		{"spiffe://other.org/orders", false},
	} {
		if got := q.Holds(spiffeid.RequireFromString(tt.id)); got != tt.holds {
			t.Errorf("Holds(%s) = %v, want %v", tt.id, got, tt.holds)
		}
	}
	if q.SelfHeld() || q.Blocks(spiffeid.RequireFromString("spiffe://example.org/gateway")) {
		t.Error("payments is not quarantined; gateway must not be blocked")
	}
	if got := strings.Join(q.Patterns(), " "); got != "spiffe://example.org/orders spiffe://example.org/batch/*" {
		t.Errorf("invalid patterns kept: %q", got)
	}
	q.Set([]string{"spiffe://example.org/*"}) // the whole trust domain, written out
	if !q.SelfHeld() || !q.Blocks(spiffeid.RequireFromString("spiffe://example.org/gateway")) {
		t.Error("a quarantined endpoint must block every peer")
	}
	var nilQ *Quarantine
	if nilQ.Blocks(spiffeid.RequireFromString("spiffe://example.org/x")) || nilQ.Holds(spiffeid.RequireFromString("spiffe://example.org/x")) {
		t.Error("a nil quarantine holds nothing")
	}
}

func FuzzQuarantinePattern(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/orders", "spiffe://example.org/a/*", "*", "spiffe://example.org/*", "spiffe://EXAMPLE/x", "spiffe://example.org/a*", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CheckQuarantinePattern(p) != nil {
			return
		}
		// What is accepted holds what it names.
		q := &Quarantine{}
		q.Set([]string{p})
		id, err := spiffeid.FromString(strings.TrimSuffix(p, "/*"))
		if err != nil {
			t.Fatalf("accepted %q, whose ID does not parse: %v", p, err)
		}
		if !q.Holds(id) {
			t.Fatalf("%q does not hold %s", p, id)
		}
	})
}
