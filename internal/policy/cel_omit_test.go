//go:build rampart_omit_cel

package policy

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Built without CEL, conditions fail closed: an allow rule with one never
// matches, a deny rule with one always does; rules without one decide as
// usual. (CI runs this with -tags rampart_omit_cel.)
func TestWithoutCELConditionsFailClosed(t *testing.T) {
	p, err := Parse([]byte(`service: spiffe://example.org/payments
rules:
  - name: no-deletes-for-batch
    action: deny
    callers: ["spiffe://example.org/batch/*"]
    when: 'request.method == "GET"'
  - name: orders-own-card
    callers: [spiffe://example.org/orders]
    paths: ["/users/{u}/card"]
    when: 'request.params.u == user.sub'
  - name: orders-payments
    callers: [spiffe://example.org/orders, "spiffe://example.org/batch/*"]
    paths: ["/payments/{id}"]
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if CEL || e.Conditions() != 2 {
		t.Fatalf("CEL = %v, Conditions = %d", CEL, e.Conditions())
	}
	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
	batch := spiffeid.RequireFromString("spiffe://example.org/batch/nightly")
	for _, tt := range []struct {
		caller spiffeid.ID
		method string
		path   string
		user   map[string]any
		want   bool
	}{
		{orders, "GET", "/payments/1", nil, true},                                   // no condition: as usual
		{orders, "GET", "/users/alice/card", map[string]any{"sub": "alice"}, false}, // the allow rule's condition would hold
		{batch, "POST", "/payments/1", nil, false},                                  // the deny rule's condition would not
	} {
		if d := e.Decide(&Request{Caller: tt.caller, Method: tt.method, Path: tt.path, User: tt.user}); d.Allowed != tt.want {
			t.Errorf("%s %s %s: allowed = %v (rule %q)", tt.caller, tt.method, tt.path, d.Allowed, d.Rule)
		}
	}
	if x := e.Explain(&Request{Caller: orders, Method: "GET", Path: "/users/alice/card"}); x.Decision.Allowed {
		t.Errorf("Explain allowed: %+v", x)
	}
}
