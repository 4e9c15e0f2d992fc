package audit

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"
)

// Refusals are what an attacker can produce at will, unauthenticated or
// not: each kind (actor, action, target, reason, and for anonymous callers
// the source address) is recorded once per interval as it happens, and its
// repeats within the interval as one entry with details.count (and first,
// last), as the agent does for attestation refusals and the guard for
// decisions. The table is bounded; past it, kinds merge per action and
// reason (actor "many-callers").
const (
	RefusalInterval = 10 * time.Second
	maxRefusalKinds = 4096
)

// Refusals aggregates refusal entries per kind and RefusalInterval. Add
// says what to record at once; Run records the aggregates of each interval
// as it ends; Flush hands out what is still being counted (the log's
// keeper records it before a checkpoint, so the last one covers it).
type Refusals struct {
	// Record appends the aggregates Run hands out.
	Record func(ctx context.Context, es ...*Entry)
	Now    func() time.Time

	mu    sync.Mutex
	start time.Time
	kinds map[refusalKey]*refusalCount
}

type refusalKey struct {
	actor                        Actor
	action, target, reason, addr string
	merged                       bool
}

type refusalCount struct {
	n           int
	first, last time.Time
	sample      *Entry // the first counted, as the aggregate's model
}

// NewRefusals returns an aggregator reading the time from now whose Run
// hands the aggregates to record.
func NewRefusals(now func() time.Time, record func(ctx context.Context, es ...*Entry)) *Refusals {
	return &Refusals{Now: now, Record: record, kinds: map[refusalKey]*refusalCount{}}
}

// Add takes a refusal entry and returns what to record now: the entry if it
// is the first of its kind in the interval, and the aggregates of an
// interval that just ended. remote is the caller's address (host:port),
// which tells unauthenticated callers apart.
func (a *Refusals) Add(e *Entry, remote string) []*Entry {
	ClipEntry(e)
	k := refusalKey{actor: e.Actor, action: e.Action, target: e.Target, reason: e.Reason}
	if e.Actor.SpiffeID == "" && (e.Actor.User == "anonymous" || e.Actor.User == "unknown") {
		k.addr = hostOf(remote) // unauthenticated: per source address
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.rollLocked(a.Now(), false)
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

func (c *refusalCount) add(e *Entry) {
	if c.n == 0 {
		c.first, c.sample = e.Time, e
	}
	c.n++
	c.last = e.Time
}

// Flush returns the aggregates of an interval that has ended (all, if
// force).
func (a *Refusals) Flush(force bool) []*Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rollLocked(a.Now(), force)
}

// Run records ended intervals' aggregates until ctx ends. What is counted
// at the end is recorded by the keeper's last checkpoint, before the log
// closes.
func (a *Refusals) Run(ctx context.Context) error {
	t := time.NewTicker(RefusalInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if es := a.Flush(false); len(es) > 0 {
				a.Record(ctx, es...)
			}
		}
	}
}

func (a *Refusals) rollLocked(now time.Time, force bool) []*Entry {
	if !force && now.Sub(a.start) < RefusalInterval {
		return nil
	}
	a.start = now
	var out []*Entry
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
			e.Actor = Actor{User: "many-callers"}
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
