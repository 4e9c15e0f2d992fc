package identity

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// The rules are tested in package ids; this checks only that identity
// forwards to them.
func TestIDsForward(t *testing.T) {
	a, err := AgentID(td, "node-1")
	if err != nil || a.String() != "spiffe://example.org/rampart/agent/node-1" || !IsAgentID(td, a) || AgentName(a) != "node-1" {
		t.Fatalf("AgentID = %v, %v", a, err)
	}
	if ServerID(td).String() != "spiffe://example.org/rampart/server" {
		t.Fatalf("ServerID = %v", ServerID(td))
	}
	if _, err := ParseAgentID(td, a.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseWorkloadID(td, "spiffe://example.org/rampart/server"); err == nil {
		t.Fatal("a reserved path was accepted")
	}
}
