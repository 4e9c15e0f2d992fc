package detect

import (
	"fmt"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// acme-challenge-failures fires when one account fails ten challenges in
// ten minutes, not for failures spread over accounts or time, nor for
// entries another component shipped.
func TestACMEChallengeFailuresRule(t *testing.T) {
	fail := func(at time.Duration, acct string) *audit.Entry {
		return ev(at, "acme.challenge", audit.OutcomeFailure, "incorrect response", audit.Actor{User: "acme:" + acct},
			map[string]string{"type": "http-01", "problem": "incorrectResponse"})
	}
	var burst, spread, accounts, shippedBurst, successes []*audit.Entry
	for i := range 10 {
		burst = append(burst, fail(time.Duration(i)*time.Second, "a1"))
		spread = append(spread, fail(time.Duration(i)*2*time.Minute, "a1"))
		accounts = append(accounts, fail(time.Duration(i)*time.Second, fmt.Sprint("a", i)))
		shippedBurst = append(shippedBurst, shipped(fail(time.Duration(i)*time.Second, "a1")))
		ok := fail(time.Duration(i)*time.Second, "a1")
		ok.Outcome = audit.OutcomeSuccess
		successes = append(successes, ok)
	}
	if n := fired(t, burst)["acme-challenge-failures"]; n != 1 {
		t.Errorf("ten failures of one account in 10s: %d alerts, want 1", n)
	}
	for name, es := range map[string][]*audit.Entry{"spread over 18m": spread, "ten accounts": accounts, "shipped by a workload": shippedBurst, "successes": successes} {
		if n := fired(t, es)["acme-challenge-failures"]; n != 0 {
			t.Errorf("%s: %d alerts, want none", name, n)
		}
	}
}
