package oauth

import (
	"strings"
	"testing"
)

// The dummy hash checked for unknown users must cost what a real user's
// check costs: same algorithm and parameters as HashPassword writes, and
// valid enough that checkPassword runs argon2id on it rather than
// returning early with an error.
func TestDummyHashCostsWhatARealHashCosts(t *testing.T) {
	real, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	params := func(h string) string { return strings.Join(strings.Split(h, "$")[:4], "$") }
	if params(dummyHash) != params(real) {
		t.Fatalf("dummy hash parameters %q, HashPassword writes %q", params(dummyHash), params(real))
	}
	ok, err := checkPassword(dummyHash, "rampart-dummy-password")
	if err != nil || ok {
		t.Fatalf("checkPassword(dummyHash) = %v, %v; want false, nil (a full check that never matches)", ok, err)
	}
	for _, part := range strings.Split(dummyHash, "$")[4:] {
		if len(part) < 16 {
			t.Fatalf("salt or key %q too short for checkPassword's bounds", part)
		}
	}
}
