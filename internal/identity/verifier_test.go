package identity

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func rawChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

// The verifier refuses what the control plane must refuse on every
// request, cached chain or not: another CA's SVID, a revoked one, an
// evicted agent's, a workload's where an agent's is needed, an expired one.
func TestVerifier(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	v := &Verifier{CA: ca, Now: f.clk.Now}
	agentID, _ := AgentID(td, "node-1")
	workload := spiffeid.RequireFromString("spiffe://example.org/orders")
	agent := mustSign(t, ca, agentID, time.Hour)
	wl := mustSign(t, ca, workload, time.Hour)
	if id, err := v.VerifyAgent(rawChain(agent)); err != nil || id != agentID {
		t.Fatalf("agent: %v %v", id, err)
	}
	if _, err := v.VerifyAgent(rawChain(wl)); !errors.Is(err, ErrNotAgent) {
		t.Fatalf("a workload as an agent: %v", err)
	}
	other := newFixture(t).ca(t, nil)
	if _, err := v.Verify(rawChain(mustSign(t, other, workload, time.Hour))); !errors.Is(err, ErrUntrusted) || Reason(err) != "untrusted" {
		t.Fatalf("another CA's SVID: %v", err)
	}
	// Both verified once (cached): revocation and eviction still apply.
	v.Update(map[string]struct{}{wl[0].SerialNumber.Text(16): {}}, map[string]struct{}{agentID.String(): {}, workload.String(): {}})
	if _, err := v.Verify(rawChain(wl)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := v.Verify(rawChain(agent)); !errors.Is(err, ErrEvicted) {
		t.Fatalf("evicted agent: %v", err)
	}
	v.Update(nil, map[string]struct{}{workload.String(): {}}) // eviction is for agents only
	if _, err := v.Verify(rawChain(wl)); err != nil {
		t.Fatalf("a workload named in the evicted set: %v", err)
	}
	f.clk.Add(time.Hour + time.Second)
	if _, err := v.Verify(rawChain(wl)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("expired, chain cached: %v", err)
	}
}
