package mtls

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Quarantine is the set of identities every data-plane endpoint refuses to
// talk to, in either direction: the control plane sends it with the policy
// (package respond decides it). A pattern is a SPIFFE ID, or a SPIFFE ID
// followed by "/*", which holds that ID and every ID beneath it. When the
// endpoint's own identity (Self) is held, it refuses everything: a
// quarantined service neither serves nor calls.
//
// Set runs the functions given to OnChange before it returns, so what was
// already open is ended (package authz, Conns) by the time the new set is
// in force. The zero value holds nothing; a nil *Quarantine holds nothing
// and never changes.
type Quarantine struct {
	// Self is this endpoint's own identity (zero: none known).
	Self spiffeid.ID

	set atomic.Pointer[quarantineSet]

	mu   sync.Mutex
	subs []func()
}

type quarantineSet struct {
	exact    map[string]struct{}
	prefixes []string // each ends in "/"
	self     bool     // Self is held
	patterns []string
}

// ReasonQuarantined is the OnFail reason of a handshake refused because
// the peer (or this endpoint) is quarantined.
const ReasonQuarantined = "quarantined"

// ErrQuarantined is returned (wrapped) for a handshake or a call refused
// because an identity is quarantined.
var ErrQuarantined = errors.New("mtls: identity quarantined")

// CheckQuarantinePattern says whether p is a pattern Quarantine accepts.
// "*" alone is refused: a whole trust domain is "spiffe://TD/*", written
// out.
func CheckQuarantinePattern(p string) error {
	if prefix, ok := strings.CutSuffix(p, "/*"); ok {
		if _, err := spiffeid.FromString(prefix); err != nil {
			return fmt.Errorf("%q: the part before /* is not a SPIFFE ID: %v", p, err)
		}
		return nil
	}
	if strings.Contains(p, "*") {
		return fmt.Errorf("%q: \"*\" is only allowed as a final \"/*\"", p)
	}
	if _, err := spiffeid.FromString(p); err != nil {
		return fmt.Errorf("%q: %v", p, err)
	}
	return nil
}

// Set replaces the held patterns (invalid ones are skipped: the server
// checked them) and runs every OnChange function.
func (q *Quarantine) Set(patterns []string) {
	qs := &quarantineSet{exact: map[string]struct{}{}}
	for _, p := range patterns {
		if CheckQuarantinePattern(p) != nil {
			continue
		}
		qs.patterns = append(qs.patterns, p)
		if prefix, ok := strings.CutSuffix(p, "/*"); ok {
			qs.exact[prefix] = struct{}{}
			qs.prefixes = append(qs.prefixes, prefix+"/")
			continue
		}
		qs.exact[p] = struct{}{}
	}
	if !q.Self.IsZero() {
		qs.self = qs.holds(q.Self.String())
	}
	q.set.Store(qs)
	q.mu.Lock()
	subs := append([]func(){}, q.subs...)
	q.mu.Unlock()
	for _, f := range subs {
		f()
	}
}

// OnChange registers f to run at every Set, after the new set is in force.
func (q *Quarantine) OnChange(f func()) {
	if q == nil {
		return
	}
	q.mu.Lock()
	q.subs = append(q.subs, f)
	q.mu.Unlock()
}

// Patterns returns the held patterns.
func (q *Quarantine) Patterns() []string {
	if q == nil {
		return nil
	}
	if qs := q.set.Load(); qs != nil {
		return append([]string(nil), qs.patterns...)
	}
	return nil
}

func (qs *quarantineSet) holds(id string) bool {
	if _, ok := qs.exact[id]; ok {
		return true
	}
	for _, p := range qs.prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// Holds reports whether id itself is quarantined.
func (q *Quarantine) Holds(id spiffeid.ID) bool {
	if q == nil {
		return false
	}
	qs := q.set.Load()
	if qs == nil || len(qs.exact) == 0 {
		return false
	}
	return qs.holds(id.String())
}

// SelfHeld reports whether this endpoint's own identity is quarantined.
func (q *Quarantine) SelfHeld() bool {
	if q == nil {
		return false
	}
	qs := q.set.Load()
	return qs != nil && qs.self
}

// Blocks reports whether this endpoint must not talk to peer: peer is
// quarantined, or this endpoint is.
func (q *Quarantine) Blocks(peer spiffeid.ID) bool {
	if q == nil {
		return false
	}
	qs := q.set.Load()
	if qs == nil || len(qs.exact) == 0 {
		return false
	}
	return qs.self || qs.holds(peer.String())
}
