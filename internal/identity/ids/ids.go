package ids

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const reservedPrefix = "/rampart"

var agentNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// AgentID returns the SPIFFE ID of the agent with the given name.
func AgentID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if !agentNameRE.MatchString(name) {
		return spiffeid.ID{}, fmt.Errorf("ids: agent name %q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return spiffeid.FromSegments(td, "rampart", "agent", name)
}

// ServerID returns the SPIFFE ID the server presents.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "rampart", "server")
}

// IsAgentID reports whether id is an agent ID of trust domain td.
func IsAgentID(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	if id.TrustDomain() != td {
		return false
	}
	name, ok := strings.CutPrefix(id.Path(), reservedPrefix+"/agent/")
	return ok && agentNameRE.MatchString(name)
}

// AgentName returns the NAME of spiffe://TD/rampart/agent/NAME.
func AgentName(id spiffeid.ID) string {
	name, _ := strings.CutPrefix(id.Path(), reservedPrefix+"/agent/")
	return name
}

// ParseWorkloadID parses a SPIFFE ID that a registration entry may assign: it
// must be a valid SPIFFE ID in trust domain td, have a path, and stay out of
// the reserved /rampart namespace.
func ParseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("ids: spiffe id %q: %w", s, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("ids: spiffe id %q: trust domain %q is not this server's %q", s, id.TrustDomain().Name(), td.Name())
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("ids: spiffe id %q: a workload ID needs a path (the bare trust domain names the CA)", s)
	}
	if id.Path() == reservedPrefix || strings.HasPrefix(id.Path(), reservedPrefix+"/") {
		return spiffeid.ID{}, fmt.Errorf("ids: spiffe id %q: paths under %s/ are reserved for Rampart's own agents and server", s, reservedPrefix)
	}
	return id, nil
}

// ParseAgentID parses the ID of an agent of trust domain td.
func ParseAgentID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("ids: agent id %q: %w", s, err)
	}
	if !IsAgentID(td, id) {
		return spiffeid.ID{}, fmt.Errorf("ids: %q is not an agent ID of %q (want spiffe://%s/rampart/agent/NAME)", s, td.Name(), td.Name())
	}
	return id, nil
}
