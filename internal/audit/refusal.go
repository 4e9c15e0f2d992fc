package audit

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Refusals are what an attacker can produce at will, unauthenticated or
// not: each kind (actor, action, target, reason, and for anonymous callers
// the source: its IPv4 address, or its IPv6 /64, as the rate limiters
// count them, since one host holds a whole /64) is recorded once per
// interval as it happens, and its repeats within the interval as one entry
// with details.count (and first, last), as the agent does for attestation
// refusals and the guard for decisions. Both tables are bounded: past
// maxRefusalSources unauthenticated sources in an interval, the others are
// counted per action and reason in one "many-sources" aggregate; past
// maxRefusalKinds kinds, kinds merge per action and reason (actor
// "many-callers"). Either way an interval costs the log a bounded number of
// entries, whatever the number of callers.
const (
	RefusalInterval   = 10 * time.Second
	maxRefusalKinds   = 4096
	maxRefusalSources = 256
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
	// sources are the unauthenticated sources counted one by one in the
	// interval; overflow those counted in the many-sources aggregates
	// (up to maxRefusalKinds of them, to say how many there were).
	sources, overflow map[string]struct{}
}

type refusalKey struct {
	actor                        Actor
	action, target, reason, addr string
	merged                       bool // past maxRefusalKinds
	manySources                  bool // past maxRefusalSources
}

type refusalCount struct {
	n           int
	first, last time.Time
	sample      *Entry // the first counted, as the aggregate's model
}

// NewRefusals returns an aggregator reading the time from now whose Run
// hands the aggregates to record.
func NewRefusals(now func() time.Time, record func(ctx context.Context, es ...*Entry)) *Refusals {
	return &Refusals{Now: now, Record: record, kinds: map[refusalKey]*refusalCount{}, sources: map[string]struct{}{}, overflow: map[string]struct{}{}}
}

// Add takes a refusal entry and returns what to record now: the entry if it
// is the first of its kind in the interval, and the aggregates of an
// interval that just ended. remote is the caller's address (host:port),
// which tells unauthenticated callers apart.
func (a *Refusals) Add(e *Entry, remote string) []*Entry {
	ClipEntry(e)
	k := refusalKey{actor: e.Actor, action: e.Action, target: e.Target, reason: e.Reason}
	anonymous := e.Actor.SpiffeID == "" && (e.Actor.User == "anonymous" || e.Actor.User == "unknown")
	if anonymous {
		k.addr = SourceOf(remote) // unauthenticated: per source
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.rollLocked(a.Now(), false)
	if anonymous {
		if _, ok := a.sources[k.addr]; !ok {
			if len(a.sources) < maxRefusalSources {
				a.sources[k.addr] = struct{}{}
			} else {
				if len(a.overflow) < maxRefusalKinds {
					a.overflow[k.addr] = struct{}{}
				}
				k = refusalKey{action: e.Action, reason: e.Reason, manySources: true}
			}
		}
	}
	if c := a.kinds[k]; c != nil {
		c.add(e)
		return out
	}
	if len(a.kinds) < maxRefusalKinds && !k.manySources {
		a.kinds[k] = &refusalCount{}
		return append(out, e)
	}
	if !k.manySources {
		k = refusalKey{action: e.Action, reason: e.Reason, merged: true}
	}
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
		switch {
		case k.merged:
			e.Actor = Actor{User: "many-callers"}
			e.Target = ""
			e.Details["aggregated"] = "more kinds of refusal than " + strconv.Itoa(maxRefusalKinds) + " in the interval; details are the first one's"
		case k.manySources:
			e.Actor = Actor{User: "many-sources"}
			e.Target = ""
			n := strconv.Itoa(len(a.overflow))
			if len(a.overflow) >= maxRefusalKinds {
				n = "at least " + n
			}
			e.Details["sources"] = n
			e.Details["aggregated"] = "refusals of unauthenticated callers from more than " + strconv.Itoa(maxRefusalSources) +
				" sources in the interval: " + n + " more sources (IPv4 addresses, IPv6 /64s); details are the first one's"
		}
		out = append(out, &e)
	}
	clear(a.kinds)
	clear(a.sources)
	clear(a.overflow)
	return out
}

// SourceOf is what unauthenticated refusals are counted by: the IP
// address of remote (host:port), or its /64 for IPv6 (one host commonly
// holds a whole /64, so counting its addresses one by one would let it
// write one entry per address), as ratelimit.Source counts requests. An
// IPv4-mapped IPv6 address is its IPv4 address; what does not parse is
// kept as it is (clipped).
func SourceOf(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return Clip(remote)
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}
