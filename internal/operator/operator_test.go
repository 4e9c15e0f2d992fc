package operator

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/permission"
	"github.com/rampartsec/rampart/internal/store"
)

func TestMatchID(t *testing.T) {
	for _, c := range []struct {
		pattern, id string
		want        bool
	}{
		{"spiffe://example.org/ci", "spiffe://example.org/ci", true},
		{"spiffe://example.org/ci", "spiffe://example.org/ci/x", false},
		{"spiffe://example.org/ci/*", "spiffe://example.org/ci/deploy", true},
		{"spiffe://example.org/ci/*", "spiffe://example.org/ci/deploy/prod", true},
		// The attacks: a sibling whose name starts the same, the
		// pattern's own prefix, another trust domain.
		{"spiffe://example.org/ci/*", "spiffe://example.org/ci-evil/deploy", false},
		{"spiffe://example.org/ci/*", "spiffe://example.org/ci/", false},
		{"spiffe://example.org/ci/*", "spiffe://example.org/ci", false},
		{"spiffe://example.org/ci/*", "spiffe://example.org.evil/ci/deploy", false},
		{"spiffe://example.org/ci*", "spiffe://example.org/ci-evil", false},
	} {
		if got := MatchID(c.pattern, c.id); got != c.want {
			t.Errorf("MatchID(%q, %q) = %v, want %v", c.pattern, c.id, got, c.want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for pattern, want := range map[string]string{
		"spiffe://example.org/ci":        "",
		"spiffe://example.org/ci/*":      "",
		"spiffe://example.org/*":         "every workload",
		"spiffe://example.org":           "no workload",
		"spiffe://other.org/ci":          "trust domain",
		"spiffe://example.org/ci/*/prod": "want a SPIFFE ID",
		"spiffe://example.org/ci*":       "want a SPIFFE ID",
		"*":                              "want a SPIFFE ID",
		"":                               "want a SPIFFE ID",
	} {
		err := ValidatePattern(pattern, td)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("ValidatePattern(%q) = %v, want %q", pattern, err, want)
		}
	}
}

// A scoped policy-author writes only where its patterns say; an unscoped
// role anywhere; roles are unioned.
func TestCallerAllowsService(t *testing.T) {
	c := Caller{Roles: []store.OperatorRole{{Role: "policy-author", Services: []string{"spiffe://example.org/payments/*"}}, {Role: "auditor"}}}
	if !c.AllowsService(permission.PolicyWrite, "spiffe://example.org/payments/api") {
		t.Error("its own service refused")
	}
	if c.AllowsService(permission.PolicyWrite, "spiffe://example.org/orders") || c.AllowsService(permission.PolicyWrite, "spiffe://example.org/payments") {
		t.Error("a service outside the pattern allowed")
	}
	if !c.AllowsService(permission.PolicyRead, "spiffe://example.org/orders") {
		t.Error("the auditor's unscoped read refused")
	}
	if !c.Allows(permission.PolicyWrite) || c.Allows(permission.EntryWrite) {
		t.Error("Allows")
	}
	if got := len(BreakGlass().Permissions()); got != len(permission.All) {
		t.Errorf("break glass holds %d of %d permissions", got, len(permission.All))
	}
	if (Caller{Roles: []store.OperatorRole{{Role: "root"}}}).Allows(permission.EntryRead) {
		t.Error("an unknown role holds something")
	}
}
