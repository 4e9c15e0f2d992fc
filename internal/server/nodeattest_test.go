package server

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/nodeattest"
	"github.com/rampartsec/rampart/internal/nodeattest/nodeattesttest"
)

// x509popHarness serves a server that trusts root for x509pop.
func x509popHarness(t *testing.T, root *nodeattesttest.CA) *harness {
	dir := t.TempDir()
	ca := nodeattesttest.WritePEM(t, t.TempDir(), "node-ca.pem", root.Cert)
	return newHarnessWith(t, Config{DataDir: dir, TrustDomain: td, Listen: "127.0.0.1:0", NodeAttestX509PoPCAs: []string{ca}})
}

func (h *harness) x509popChallenge(chain [][]byte) ([]byte, error) {
	var ch api.X509PoPChallengeResponse
	err := h.client("", nil).Do(context.Background(), http.MethodPost, "/v1/agent/attest/x509pop/challenge", api.X509PoPChallengeRequest{Chain: chain}, &ch)
	return ch.Nonce, err
}

func (h *harness) x509popAttest(chain [][]byte, nonce, sig []byte) (api.AttestResponse, error) {
	_, csr := newCSR(h.t, spiffeid.ID{}, nil)
	var resp api.AttestResponse
	err := h.client("", nil).Do(context.Background(), http.MethodPost, "/v1/agent/attest/x509pop",
		api.X509PoPAttestRequest{Chain: chain, Nonce: nonce, Signature: sig, CSR: csr}, &resp)
	return resp, err
}

func TestX509PoPAttestation(t *testing.T) {
	root := nodeattesttest.NewCA(t, "node root")
	inter := root.Intermediate(t, "node issuing CA")
	h := x509popHarness(t, root)
	node := inter.Issue(t, "node-1.example.org")
	chain := [][]byte{node.Cert.Raw, inter.Cert.Raw}

	nonce, err := h.x509popChallenge(chain)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := nodeattest.Sign(node.Key, nonce, node.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.x509popAttest(chain, nonce, sig)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := h.srv.x509pop.Verify(td, chain, time.Now())
	if resp.SVID.SpiffeID != want.AgentID.String() || !strings.Contains(resp.SVID.SpiffeID, "/rampart/agent/x509pop-") {
		t.Fatalf("agent SVID for %q, want %s", resp.SVID.SpiffeID, want.AgentID)
	}
	leaf, _ := x509.ParseCertificate(resp.SVID.Chain[0])
	if leaf.URIs[0].String() != want.AgentID.String() {
		t.Fatalf("the SVID names %s", leaf.URIs[0])
	}

	// Attack: the same answer replayed (captured, or sent to another
	// replica): the nonce was spent.
	_, err = h.x509popAttest(chain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "x509pop node attestation refused")

	// Attack: a nonce asked for with the victim's (public) certificate,
	// answered with the attacker's own key.
	nonce, _ = h.x509popChallenge(chain)
	thief := inter.Issue(t, "node-1.example.org")
	sig, _ = nodeattest.Sign(thief.Key, nonce, node.Cert.Raw)
	_, err = h.x509popAttest(chain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "refused")
	// ... and the nonce, spent by the wrong answer, is not answerable by
	// the right one either.
	sig, _ = nodeattest.Sign(node.Key, nonce, node.Cert.Raw)
	_, err = h.x509popAttest(chain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "refused")

	// Attack: a nonce issued to the victim's certificate, answered with
	// the attacker's own certificate and key (a valid pair from the same
	// CA): the nonce was issued to another certificate.
	nonce, _ = h.x509popChallenge(chain)
	thiefChain := [][]byte{thief.Cert.Raw, inter.Cert.Raw}
	sig, _ = nodeattest.Sign(thief.Key, nonce, thief.Cert.Raw)
	_, err = h.x509popAttest(thiefChain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "refused")

	// Attack: a certificate from a CA the server was not given.
	other := nodeattesttest.NewCA(t, "other").Issue(t, "node-1.example.org")
	_, err = h.x509popChallenge([][]byte{other.Cert.Raw})
	wantStatus(t, err, http.StatusUnauthorized, "refused")

	// Attack: an evicted node comes back with the same certificate.
	if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/agents/"+strings.TrimPrefix(want.AgentID.Path(), "/rampart/agent/")+"/evict", nil, nil); err != nil {
		t.Fatal(err)
	}
	nonce, _ = h.x509popChallenge(chain)
	sig, _ = nodeattest.Sign(node.Key, nonce, node.Cert.Raw)
	_, err = h.x509popAttest(chain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "refused")

	// The reasons are in the audit log, not in the answers.
	logs := h.auditText(t)
	for _, why := range []string{"already answered", "not by the certificate's key", "issued to another certificate", "does not verify against the x509pop CAs", "evicted"} {
		if !strings.Contains(logs, why) {
			t.Errorf("the audit log does not say %q", why)
		}
	}
}

// An unanswered challenge expires; a certificate's open challenges are
// bounded.
func TestX509PoPChallengeLimits(t *testing.T) {
	root := nodeattesttest.NewCA(t, "node root")
	h := x509popHarness(t, root)
	node := root.Issue(t, "node-2")
	chain := [][]byte{node.Cert.Raw}
	nonce, err := h.x509popChallenge(chain)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Add(nodeattest.ChallengeTTL + time.Second)
	sig, _ := nodeattest.Sign(node.Key, nonce, node.Cert.Raw)
	_, err = h.x509popAttest(chain, nonce, sig)
	wantStatus(t, err, http.StatusUnauthorized, "refused")
	// Attack: anyone with the node's public certificate asks for
	// challenges in its name, to fill the store.
	for i := range challengeQuota {
		if _, err := h.x509popChallenge(chain); err != nil {
			t.Fatalf("challenge %d: %v", i, err)
		}
	}
	_, err = h.x509popChallenge(chain)
	wantStatus(t, err, http.StatusTooManyRequests, "too many open challenges")
}

func TestX509PoPOff(t *testing.T) {
	h := newHarness(t)
	_, err := h.x509popChallenge(nil)
	wantStatus(t, err, http.StatusNotFound, "not enabled")
}

// auditText is the reasons of the agent.attest entries in the audit log.
func (h *harness) auditText(t *testing.T) string {
	var b strings.Builder
	for _, e := range logEntries(t, h.srv.audit, "agent.attest") {
		b.WriteString(e.Outcome + " " + e.Reason + "\n")
	}
	return b.String()
}
