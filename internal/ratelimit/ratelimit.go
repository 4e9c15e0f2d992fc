package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Rule is a token bucket: Burst requests at once, refilled at Rate a
// second.
type Rule struct {
	Rate  float64 // requests a second, sustained; > 0
	Burst int     // requests at once; >= 1
}

func (r Rule) check(name string) error {
	if !(r.Rate > 0) || math.IsInf(r.Rate, 0) || r.Burst < 1 {
		return fmt.Errorf("ratelimit: %s rule %+v: want a positive, finite rate and a burst of at least 1", name, r)
	}
	return nil
}

// Limits are the two buckets an endpoint has.
type Limits struct {
	PerSource Rule // for each source address (Source)
	Global    Rule // for all sources together
}

// Scope says which bucket refused a request.
type Scope string

const (
	ScopeSource Scope = "source"
	ScopeGlobal Scope = "global"
)

// Decision is the answer to Allow.
type Decision struct {
	Allowed bool
	Scope   Scope         // which bucket refused; "" when allowed
	Retry   time.Duration // when the refusing bucket has a token again
}

// RetryAfter is Retry in whole seconds, rounded up and at least 1, for the
// Retry-After header.
func (d Decision) RetryAfter() string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Retry.Seconds()))), 10)
}

// Refusal is how many requests from one source a bucket refused between
// First and Last.
type Refusal struct {
	Limiter     string
	Scope       Scope
	Source      string
	Count       int
	First, Last time.Time
}

// Config configures a Limiter. Every field but Metrics and OnRefusals is
// required: a limit nobody set is a mistake, not "no limit".
type Config struct {
	// Name says what is limited ("oauth_token"): the metric label and the
	// Refusal's Limiter.
	Name   string
	Limits Limits
	// MaxSources bounds the per-source buckets kept (and the refusal
	// counts, with MaxRefusalSources: beyond it they are counted under the
	// source "other").
	MaxSources int
	// Interval is how often OnRefusals gets the refusals counted.
	Interval   time.Duration
	OnRefusals func([]Refusal)
	Metrics    *Metrics
	Now        func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// refill adds what rule r has dripped into b since its last refill.
func (b *bucket) refill(r Rule, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(float64(r.Burst), b.tokens+el*r.Rate)
	}
	if now.After(b.last) {
		b.last = now
	}
}

// wait is how long until b holds a whole token again.
func (b *bucket) wait(r Rule) time.Duration {
	return time.Duration((1 - b.tokens) / r.Rate * float64(time.Second))
}

type refusalKey struct {
	scope  Scope
	source string
}

// Limiter is a per-source and a global token bucket. It is safe for
// concurrent use.
type Limiter struct {
	cfg Config

	mu       sync.Mutex
	global   bucket
	sources  map[string]*bucket
	refused  map[refusalKey]*Refusal
	windowAt time.Time
}

// New checks cfg and returns a Limiter whose buckets start full.
func New(cfg Config) (*Limiter, error) {
	if cfg.Name == "" {
		return nil, errors.New("ratelimit: a limiter needs a name")
	}
	if err := cfg.Limits.PerSource.check(cfg.Name + " per-source"); err != nil {
		return nil, err
	}
	if err := cfg.Limits.Global.check(cfg.Name + " global"); err != nil {
		return nil, err
	}
	if cfg.MaxSources < 1 || cfg.Interval <= 0 || cfg.Now == nil {
		return nil, fmt.Errorf("ratelimit: %s: MaxSources (%d), Interval (%v) and Now are required", cfg.Name, cfg.MaxSources, cfg.Interval)
	}
	now := cfg.Now()
	return &Limiter{cfg: cfg, global: bucket{tokens: float64(cfg.Limits.Global.Burst), last: now},
		sources: map[string]*bucket{}, refused: map[refusalKey]*Refusal{}, windowAt: now}, nil
}

// Allow takes a token from source's bucket and the global one, or neither.
func (l *Limiter) Allow(source string) Decision {
	var batch []Refusal
	d := l.allow(source, &batch)
	if batch != nil && l.cfg.OnRefusals != nil {
		l.cfg.OnRefusals(batch)
	}
	l.cfg.Metrics.observe(l.cfg.Name, d)
	return d
}

func (l *Limiter) allow(source string, batch *[]Refusal) Decision {
	now := l.cfg.Now()
	ps, gl := l.cfg.Limits.PerSource, l.cfg.Limits.Global
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.windowAt) >= l.cfg.Interval {
		*batch = l.drain(now)
	}
	b := l.sources[source]
	if b == nil {
		l.makeRoom(now)
		b = &bucket{tokens: float64(ps.Burst), last: now}
		l.sources[source] = b
	}
	b.refill(ps, now)
	if b.tokens < 1 {
		return l.refuse(source, ScopeSource, b.wait(ps), now)
	}
	l.global.refill(gl, now)
	if l.global.tokens < 1 {
		// The source's token is not spent: the refusal was not its doing.
		return l.refuse(source, ScopeGlobal, l.global.wait(gl), now)
	}
	b.tokens--
	l.global.tokens--
	return Decision{Allowed: true}
}

// makeRoom keeps the table of source buckets within MaxSources.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.sources) < l.cfg.MaxSources {
		return
	}
	ps := l.cfg.Limits.PerSource
	for k, b := range l.sources {
		if b.refill(ps, now); b.tokens >= float64(ps.Burst) {
			delete(l.sources, k) // full again: the same as never seen
		}
	}
	for k := range l.sources {
		if len(l.sources) < l.cfg.MaxSources*7/8 {
			break
		}
		delete(l.sources, k)
	}
}

// MaxRefusalSources bounds the sources whose refusals are counted apart
// in an interval (each becomes an audit entry); the others are counted
// under the source "other". A caller with a /48 holds 65,536 /64s, and
// refusals must not cost the audit log an entry for each.
const MaxRefusalSources = 256

func (l *Limiter) refuse(source string, scope Scope, wait time.Duration, now time.Time) Decision {
	k := refusalKey{scope, source}
	r := l.refused[k]
	if r == nil {
		if len(l.refused) >= min(l.cfg.MaxSources, MaxRefusalSources) {
			k.source = "other"
			r = l.refused[k]
		}
		if r == nil {
			r = &Refusal{Limiter: l.cfg.Name, Scope: scope, Source: k.source, First: now}
			l.refused[k] = r
		}
	}
	r.Count++
	r.Last = now
	return Decision{Scope: scope, Retry: wait}
}

// drain returns the refusals counted and starts a new window.
func (l *Limiter) drain(now time.Time) []Refusal {
	l.windowAt = now
	if len(l.refused) == 0 {
		return nil
	}
	out := make([]Refusal, 0, len(l.refused))
	for _, r := range l.refused {
		out = append(out, *r)
	}
	clear(l.refused)
	return out
}

// Flush hands the refusals counted so far to OnRefusals now (call it on a
// timer, so the last refusals of a quiet period are not held back).
func (l *Limiter) Flush() {
	l.mu.Lock()
	batch := l.drain(l.cfg.Now())
	l.mu.Unlock()
	if batch != nil && l.cfg.OnRefusals != nil {
		l.cfg.OnRefusals(batch)
	}
}

// Source returns the key r is limited by: the peer's IP address, or its
// /64 for IPv6. Never a header: X-Forwarded-For and the like are the
// caller's to set.
func Source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "unknown"
	case ip.To4() != nil:
		return ip.To4().String()
	default:
		return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
	}
}

// Wrap limits h by Source; a refused request is answered by refuse, which
// must write the response (429, with the Decision's RetryAfter), in the
// endpoint's own format. A nil refuse writes a plain 429.
func (l *Limiter) Wrap(h http.Handler, refuse func(http.ResponseWriter, *http.Request, Decision)) http.Handler {
	if refuse == nil {
		refuse = func(w http.ResponseWriter, _ *http.Request, d Decision) {
			w.Header().Set("Retry-After", d.RetryAfter())
			http.Error(w, "too many requests; try again after "+d.RetryAfter()+" s", http.StatusTooManyRequests)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := l.Allow(Source(r)); !d.Allowed {
			refuse(w, r, d)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Metrics counts decisions for Prometheus:
// rampart_ratelimit_requests_total{limiter, result="allowed|refused_source|refused_global"}.
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the counters with reg (or finds them there, when
// another limiter registered them first).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_ratelimit_requests_total",
		Help: "Requests a rate limiter decided on, by limiter and result (allowed, refused_source, refused_global)."},
		[]string{"limiter", "result"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("ratelimit: metrics: %w", err)
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return &Metrics{requests: c}, nil
}

func (m *Metrics) observe(name string, d Decision) {
	if m == nil {
		return
	}
	result := "allowed"
	if !d.Allowed {
		result = "refused_" + string(d.Scope)
	}
	m.requests.WithLabelValues(name, result).Inc()
}
