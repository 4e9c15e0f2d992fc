package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

// testAttestChallenges: a challenge is answered once, only as its kind,
// only before it expires; a subject holds at most its quota of live ones.
func testAttestChallenges(t *testing.T, h harness) {
	s, ctx := h.open(t), t.Context()
	c := store.AttestChallenge{Hash: []byte("nonce-1"), Kind: "x509pop", Subject: "spiffe://example.org/rampart/agent/x509pop-a",
		State: []byte("state"), ExpiresAt: at(time.Minute), CreatedAt: at(0)}
	must(t, s.CreateAttestChallenge(ctx, c, at(0), 2))
	// Attack: the nonce of an x509pop challenge answered as a TPM one.
	if _, err := s.ConsumeAttestChallenge(ctx, c.Hash, "tpm", at(time.Second)); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("other kind: err = %v", err)
	}
	got, err := s.ConsumeAttestChallenge(ctx, c.Hash, "x509pop", at(time.Second))
	must(t, err)
	if got.Subject != c.Subject || !bytes.Equal(got.State, c.State) || !got.ExpiresAt.Equal(c.ExpiresAt) {
		t.Fatalf("consumed %+v, want %+v", got, c)
	}
	// Attack: a replayed answer.
	if _, err := s.ConsumeAttestChallenge(ctx, c.Hash, "x509pop", at(2*time.Second)); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("replay: err = %v", err)
	}
	// Expired: refused.
	c.Hash = []byte("nonce-2")
	must(t, s.CreateAttestChallenge(ctx, c, at(0), 2))
	if _, err := s.ConsumeAttestChallenge(ctx, c.Hash, "x509pop", at(time.Minute)); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("expired: err = %v", err)
	}
	// Quota per subject; expired ones stop counting.
	c.Hash = []byte("nonce-3")
	must(t, s.CreateAttestChallenge(ctx, c, at(0), 2))
	c.Hash = []byte("nonce-4")
	wantErrIs(t, "over quota", s.CreateAttestChallenge(ctx, c, at(0), 2), store.ErrQuota)
	other := c
	other.Subject, other.Hash = "spiffe://example.org/rampart/agent/x509pop-b", []byte("nonce-5")
	must(t, s.CreateAttestChallenge(ctx, other, at(0), 2))
	c.ExpiresAt = at(3 * time.Minute)
	must(t, s.CreateAttestChallenge(ctx, c, at(2*time.Minute), 2))

	// Race: many replicas answer one nonce; one wins.
	race := store.AttestChallenge{Hash: []byte("race"), Kind: "x509pop", Subject: "race", ExpiresAt: at(time.Hour), CreatedAt: at(0)}
	must(t, s.CreateAttestChallenge(ctx, race, at(0), 1))
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.ConsumeAttestChallenge(ctx, race.Hash, "x509pop", at(0))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrTokenInvalid):
			t.Errorf("consumer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent consumers won, want exactly 1", wins, n)
	}
}
