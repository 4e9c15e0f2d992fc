// Package scopetest writes a synthetic audit log (calls, refusals, token
// exchanges, key uses, SVID issuance by many identities over days) and
// keeps the ground truth for one identity, so that a breach-scope answer
// can be checked against what was really written, and measured on a log
// of any size (bench/scope.sh).
package scopetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// Victim is the identity whose truth is kept.
const Victim = "spiffe://example.org/orders"

// Options shape the log.
type Options struct {
	Entries int64
	Start   time.Time     // the first entry's time
	Span    time.Duration // the log covers [Start, Start+Span)
	Seed    uint64
	// Since and Until are the window the truth is kept for.
	Since, Until time.Time
	// Progress, if set, is called every million entries.
	Progress func(n int64)
}

// Access, Token, Key and SVID mirror the report's aggregates.
type (
	AccessKey struct{ Service, Method, Path, User string }
	TokenKey  struct{ Action, Client, Audience, User string }
	KeyKey    struct{ Key, Op string }
	KeyCount  struct{ Count, Bytes, Refused int64 }
)

// Truth is what Victim did in [Since, Until).
type Truth struct {
	Entries int64
	Reached map[AccessKey]int64
	Refused map[AccessKey]int64
	Tokens  map[TokenKey]int64
	Keys    map[KeyKey]KeyCount
	Users   []string
	SVIDs   []string // serials, sorted
}

var (
	services = func() []string {
		var s []string
		for i := 0; i < 40; i++ {
			s = append(s, "spiffe://example.org/svc-"+strconv.Itoa(i))
		}
		// Neighbours that share the victim's prefix must not count.
		return append(s, Victim, "spiffe://example.org/orders-v2", "spiffe://example.org/ordersx")
	}()
	paths   = []string{"/payments/1", "/payments/2", "/customers/7", "/refunds", "/health"}
	methods = []string{"GET", "POST", "DELETE"}
	keys    = []string{"cards", "pii", "tokens"}
	agents  = []string{"spiffe://example.org/rampart/agent/node-1", "spiffe://example.org/rampart/agent/node-2"}
)

// Generate appends opts.Entries entries to the log in dir (created if
// needed) and returns the truth for Victim.
func Generate(ctx context.Context, dir string, o Options) (*Truth, error) {
	l, err := audit.OpenWith(dir, "example.org/audit", audit.Options{})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	tr := &Truth{Reached: map[AccessKey]int64{}, Refused: map[AccessKey]int64{}, Tokens: map[TokenKey]int64{}, Keys: map[KeyKey]KeyCount{}}
	users := map[string]bool{}
	step := o.Span / time.Duration(max(o.Entries, 1))
	batch := make([]*audit.Entry, 0, 1000)
	in := func(t time.Time) bool { return !t.Before(o.Since) && t.Before(o.Until) }
	for i := int64(0); i < o.Entries; i++ {
		// Entries arrive roughly in time order, some late (spooled).
		t := o.Start.Add(time.Duration(i) * step)
		if r.IntN(20) == 0 {
			t = t.Add(-time.Duration(r.IntN(120)) * time.Second)
		}
		actor := services[r.IntN(len(services))]
		if r.IntN(10) == 0 {
			actor = Victim // the victim is busier than most
		}
		e := &audit.Entry{V: audit.SchemaVersion, Time: t.UTC(), Outcome: audit.OutcomeSuccess, Source: "server", Details: map[string]string{}}
		victim := actor == Victim
		switch k := r.IntN(100); {
		case k < 70:
			e.Action, e.Target = "authz.decision", services[r.IntN(40)]
			e.Actor.SpiffeID = actor
			e.Details["method"], e.Details["path"] = methods[r.IntN(len(methods))], paths[r.IntN(len(paths))]
			if r.IntN(4) == 0 {
				e.Actor.User = "user-" + strconv.Itoa(r.IntN(30))
			}
			n := int64(1)
			if r.IntN(5) == 0 {
				n = int64(2 + r.IntN(50))
				e.Details["count"] = strconv.FormatInt(n, 10)
			}
			e.Source = e.Target
			refused := r.IntN(6) == 0
			if refused {
				e.Outcome, e.Reason = audit.OutcomeDenied, "no rule allows it"
			}
			if victim && in(e.Time) {
				tr.Entries++
				key := AccessKey{e.Target, e.Details["method"], e.Details["path"], e.Actor.User}
				if refused {
					tr.Refused[key] += n
				} else {
					tr.Reached[key] += n
				}
				if e.Actor.User != "" {
					users[e.Actor.User] = true
				}
			}
		case k < 80:
			e.Action, e.Source = "oauth.token_exchange", "oauth"
			e.Actor.SpiffeID = actor
			e.Details["client_id"] = "client-" + actor[len("spiffe://example.org/"):]
			e.Details["spiffe_id"] = actor
			e.Details["user"] = "user-" + strconv.Itoa(r.IntN(30))
			e.Details["aud"] = services[r.IntN(40)]
			if victim && in(e.Time) {
				tr.Entries++
				tr.Tokens[TokenKey{e.Action, e.Details["client_id"], e.Details["aud"], e.Details["user"]}]++
				users[e.Details["user"]] = true
			}
		case k < 92:
			op := []string{"decrypt", "encrypt"}[r.IntN(2)]
			key := keys[r.IntN(len(keys))]
			e.Action, e.Target = "kms."+op, "kms:"+key
			e.Actor.SpiffeID = actor
			size := int64(16 + r.IntN(4096))
			e.Details["key"], e.Details["size"] = key, strconv.FormatInt(size, 10)
			refused := r.IntN(8) == 0
			if refused {
				e.Outcome = audit.OutcomeDenied
			}
			if victim && in(e.Time) {
				tr.Entries++
				kc := tr.Keys[KeyKey{key, op}]
				if refused {
					kc.Refused++
				} else {
					kc.Count++
					kc.Bytes += size
				}
				tr.Keys[KeyKey{key, op}] = kc
			}
		case k < 97:
			e.Action = "svid.issue"
			e.Actor.SpiffeID = agents[r.IntN(len(agents))]
			e.Target = actor
			e.Details["spiffe_id"] = actor
			e.Details["serial"] = fmt.Sprintf("%x", r.Uint64())
			e.Details["remote"] = "10.0.0." + strconv.Itoa(1+r.IntN(200)) + ":4431"
			if victim && in(e.Time) {
				tr.Entries++
				tr.SVIDs = append(tr.SVIDs, e.Details["serial"])
			}
		default:
			e.Action, e.Actor.User, e.Target = "policy.put", "admin", actor
			e.Details["service"] = actor
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			if _, err := l.AppendEntries(ctx, batch...); err != nil {
				return nil, err
			}
			batch = batch[:0]
		}
		if o.Progress != nil && (i+1)%1_000_000 == 0 {
			o.Progress(i + 1)
		}
	}
	if len(batch) > 0 {
		if _, err := l.AppendEntries(ctx, batch...); err != nil {
			return nil, err
		}
	}
	for u := range users {
		tr.Users = append(tr.Users, u)
	}
	sort.Strings(tr.Users)
	sort.Strings(tr.SVIDs)
	return tr, nil
}
