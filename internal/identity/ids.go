package identity

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/identity/ids"
)

// The SPIFFE ID rules live in package ids, a leaf that the agent, the proxy
// and the SDK import without the CA; these forward to it for the server's
// code.

// AgentID returns the SPIFFE ID of the agent with the given name.
func AgentID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) { return ids.AgentID(td, name) }

// ServerID returns the SPIFFE ID the server presents.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID { return ids.ServerID(td) }

// IsAgentID reports whether id is an agent ID of trust domain td.
func IsAgentID(td spiffeid.TrustDomain, id spiffeid.ID) bool { return ids.IsAgentID(td, id) }

// AgentName returns the NAME of spiffe://TD/rampart/agent/NAME.
func AgentName(id spiffeid.ID) string { return ids.AgentName(id) }

// ParseWorkloadID parses a SPIFFE ID that a registration entry may assign
// (see ids.ParseWorkloadID).
func ParseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	return ids.ParseWorkloadID(td, s)
}

// ParseAgentID parses the ID of an agent of trust domain td.
func ParseAgentID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	return ids.ParseAgentID(td, s)
}
