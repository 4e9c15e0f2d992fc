package server

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// Refusals are what an attacker can produce at will, unauthenticated or
// not: each kind (actor, action, target, reason, and for anonymous callers
// the source address) is recorded once per interval as it happens, and its
// repeats within the interval as one entry with details.count (and first,
// last), as the agent does for attestation refusals and the guard for
// decisions. The table is bounded; past it, kinds merge per action and
// reason (actor "many-callers").
const (
	refusalInterval = 10 * time.Second
	maxRefusalKinds = 4096
)

type refusalKey struct {
	actor                        audit.Actor
	action, target, reason, addr string
	merged                       bool
}

type refusalCount struct {
	n           int
	first, last time.Time
	sample      *audit.Entry // the first counted, as the aggregate's model
}

type refusalAgg struct {
	now   func() time.Time
	mu    sync.Mutex
	start time.Time
	kinds map[refusalKey]*refusalCount
}

func newRefusalAgg(now func() time.Time) *refusalAgg {
	return &refusalAgg{now: now, kinds: map[refusalKey]*refusalCount{}}
}

// add takes a refusal entry and returns what to record now: the entry if it
// is the first of its kind in the interval, and the aggregates of an
// interval that just ended.
func (a *refusalAgg) add(e *audit.Entry, remote string) []*audit.Entry {
	audit.ClipEntry(e)
	k := refusalKey{actor: e.Actor, action: e.Action, target: e.Target, reason: e.Reason}
	if e.Actor.SpiffeID == "" && (e.Actor.User == "anonymous" || e.Actor.User == "unknown") {
		k.addr = hostOf(remote) // unauthenticated: per source address
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.rollLocked(a.now(), false)
	if c := a.kinds[k]; c != nil {
		c.add(e)
		return out
	}
	if len(a.kinds) < maxRefusalKinds {
		a.kinds[k] = &refusalCount{}
		return append(out, e)
	}
	k = refusalKey{action: e.Action, reason: e.Reason, merged: true}
	c := a.kinds[k]
	if c == nil {
		c = &refusalCount{}
		a.kinds[k] = c // one past the bound per action and reason
	}
	c.add(e)
	return out
}

func (c *refusalCount) add(e *audit.Entry) {
	if c.n == 0 {
		c.first, c.sample = e.Time, e
	}
	c.n++
	c.last = e.Time
}

// flush returns the aggregates of an interval that has ended (all, if force).
func (a *refusalAgg) flush(force bool) []*audit.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rollLocked(a.now(), force)
}

func (a *refusalAgg) rollLocked(now time.Time, force bool) []*audit.Entry {
	if !force && now.Sub(a.start) < refusalInterval {
		return nil
	}
	a.start = now
	var out []*audit.Entry
	for k, c := range a.kinds {
		if c.n == 0 {
			continue
		}
		e := *c.sample
		e.Details = make(map[string]string, len(c.sample.Details)+3)
		for dk, dv := range c.sample.Details {
			e.Details[dk] = dv
		}
		e.Time = c.first
		e.Details["count"] = strconv.Itoa(c.n)
		e.Details["first"] = c.first.UTC().Format(time.RFC3339Nano)
		e.Details["last"] = c.last.UTC().Format(time.RFC3339Nano)
		if k.merged {
			e.Actor = audit.Actor{User: "many-callers"}
			e.Target = ""
			e.Details["aggregated"] = "more kinds of refusal than " + strconv.Itoa(maxRefusalKinds) + " in the interval; details are the first one's"
		}
		out = append(out, &e)
	}
	clear(a.kinds)
	return out
}

func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// flushRefusals records ended intervals' aggregates until ctx ends. What
// is counted at the end is recorded by the last checkpoint (see
// Server.checkpoint), before the log closes.
func (s *Server) flushRefusals(ctx context.Context) {
	t := time.NewTicker(refusalInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.record(ctx, s.refusals.flush(false)...)
		}
	}
}
