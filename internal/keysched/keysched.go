// Package keysched is the rotation schedule shared by every signing key
// that verifiers learn from a published set (JWT-SVID keys, OAuth token
// keys): a successor is published long before it signs, and a retired key
// stays published until its NotAfter, so no verifier ever meets a token
// signed by a key it could not yet have fetched or has already dropped.
//
// The schedule: when the active key is half way through its life a
// prepared successor is published; at two thirds the successor becomes
// active and the old key retires. A verifier that refreshes the set at
// least once per sixth of a key's life never misses a key.
package keysched

import "time"

// Key is the part of a key the schedule looks at.
type Key struct {
	NotBefore, NotAfter time.Time
}

// Action is what the key's owner must do next.
type Action int

const (
	// None: nothing to do.
	None Action = iota
	// CreateActive: there is no key at all (first start): create one that
	// signs at once.
	CreateActive
	// PromotePrepared: there is a prepared key but none active: activate it.
	PromotePrepared
	// CreatePrepared: publish a successor that does not sign yet.
	CreatePrepared
	// Switch: the prepared key becomes active, the active key retires.
	Switch
)

// Next returns the action due at now for the active and prepared keys
// (nil when there is none).
func Next(now time.Time, active, prepared *Key) Action {
	switch {
	case active == nil && prepared == nil:
		return CreateActive
	case active == nil:
		return PromotePrepared
	}
	frac := float64(now.Sub(active.NotBefore)) / float64(active.NotAfter.Sub(active.NotBefore))
	switch {
	case prepared == nil && frac >= 0.5:
		return CreatePrepared
	case prepared != nil && frac >= 2.0/3:
		return Switch
	}
	return None
}
