//go:build rampart_omit_cel

package authz

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
)

// Built without CEL, installing a policy with conditions says, as an
// error, that it decides more strictly than it reads.
func TestWithoutCELPolicyWithConditionsIsLogged(t *testing.T) {
	var logs bytes.Buffer
	g := NewGuard(GuardConfig{Service: spiffeid.RequireFromString("spiffe://example.org/payments"), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	install := func(src string) {
		t.Helper()
		p, err := policy.Parse([]byte("service: spiffe://example.org/payments\nrules:\n" + src))
		if err != nil {
			t.Fatal(err)
		}
		e, err := policy.Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		g.SetPolicy(e)
	}
	install("  - name: all\n    callers: ['*']\n")
	if logs.Len() != 0 {
		t.Fatalf("a policy without conditions logged: %s", logs.String())
	}
	install("  - name: own\n    callers: ['*']\n    when: 'user.sub == \"a\"'\n")
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "rampart_omit_cel") || !strings.Contains(logs.String(), "conditions=1") {
		t.Fatalf("log: %s", logs.String())
	}
}
