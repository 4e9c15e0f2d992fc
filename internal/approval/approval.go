package approval

import (
	"errors"
	"fmt"

	"github.com/rampartsec/rampart/internal/audit"
)

// Errors. Callers branch with errors.Is.
var (
	// ErrSelfApproval: the approver is the requester (the same operator
	// subject or the same SPIFFE ID).
	ErrSelfApproval = errors.New("approval: the approver is the requester; a second person must approve")
	// ErrAnonymousApprover: the approver is no named party (the shared
	// admin token, an unknown or anonymous caller, an empty actor).
	ErrAnonymousApprover = errors.New("approval: the approver is not a named operator or workload")
	// ErrNoRequester: the request names nobody, so nobody can be told
	// apart from its author.
	ErrNoRequester = errors.New("approval: the request names no requester")
)

// unnamed are the users the server records for callers that are no one
// in particular: the break-glass token, and callers not yet known.
var unnamed = map[string]bool{"admin": true, "unknown": true, "anonymous": true}

// Named says whether a is a party the two-person rule can tell apart: an
// operator subject or a workload's SPIFFE ID, not the shared admin token
// and not an unknown caller.
func Named(a audit.Actor) bool {
	return a.SpiffeID != "" || (a.User != "" && !unnamed[a.User])
}

// Same says whether a and b are the same party: they share a non-empty
// operator subject or a non-empty SPIFFE ID.
func Same(a, b audit.Actor) bool {
	return (a.User != "" && a.User == b.User) || (a.SpiffeID != "" && a.SpiffeID == b.SpiffeID)
}

// Check refuses approver's approval of what requester asked for when they
// are the same party, or when approver is no named party.
func Check(requester, approver audit.Actor) error {
	switch {
	case requester.User == "" && requester.SpiffeID == "":
		return ErrNoRequester
	case !Named(approver):
		return fmt.Errorf("%w (%s)", ErrAnonymousApprover, describe(approver))
	case Same(requester, approver):
		return fmt.Errorf("%w (%s)", ErrSelfApproval, describe(approver))
	}
	return nil
}

func describe(a audit.Actor) string {
	switch {
	case a.User != "" && a.SpiffeID != "":
		return a.User + " via " + a.SpiffeID
	case a.User != "":
		return a.User
	case a.SpiffeID != "":
		return a.SpiffeID
	}
	return "nobody"
}
