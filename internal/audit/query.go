package audit

import (
	"fmt"
	"path"
	"time"
)

// Filter selects entries. Zero fields match everything; Actor matches the
// SPIFFE ID or the user; Action, Actor, Target and Source accept path.Match
// patterns ("svid.*", "spiffe://example.org/*"). Source also takes two
// names: SourceServer (what the server wrote itself) and SourceShipped
// (what an agent, proxy or SDK service shipped).
type Filter struct {
	Since, Until time.Time // Since inclusive, Until exclusive
	Actor        string
	Target       string
	Action       string
	Outcome      string
	Source       string
}

// Source filter names.
const (
	SourceServer  = "server"
	SourceShipped = "shipped"
)

// Validate checks the patterns.
func (f *Filter) Validate() error {
	for name, p := range map[string]string{"actor": f.Actor, "target": f.Target, "action": f.Action, "source": f.Source} {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("audit: filter %s %q: %w", name, p, err)
		}
	}
	switch f.Outcome {
	case "", OutcomeSuccess, OutcomeFailure, OutcomeDenied:
	default:
		return fmt.Errorf("audit: filter outcome %q: want success, failure or denied", f.Outcome)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return fmt.Errorf("audit: filter: until (%s) must be after since (%s)", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	return nil
}

// Match reports whether e passes the filter.
func (f *Filter) Match(e *Entry) bool {
	if !f.Since.IsZero() && e.Time.Before(f.Since) || !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	if f.Outcome != "" && e.Outcome != f.Outcome {
		return false
	}
	switch f.Source {
	case SourceServer:
		if !e.ServerWritten() {
			return false
		}
	case SourceShipped:
		if e.ServerWritten() {
			return false
		}
	default:
		if !glob(f.Source, e.Source) {
			return false
		}
	}
	return glob(f.Action, e.Action) && glob(f.Target, e.Target) &&
		(f.Actor == "" || glob(f.Actor, e.Actor.SpiffeID) || glob(f.Actor, e.Actor.User))
}

func glob(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, _ := path.Match(pattern, s)
	return ok
}
