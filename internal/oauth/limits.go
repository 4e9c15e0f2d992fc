package oauth

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/ratelimit"
)

// RateLimits bound how fast each endpoint is called, per source address
// and in all (package ratelimit). A zero Limits takes the endpoint's
// default from DefaultRateLimits.
type RateLimits struct {
	Token      ratelimit.Limits // the token endpoint, every grant
	Login      ratelimit.Limits // login form posts (each one hashes a password)
	Introspect ratelimit.Limits
	Revoke     ratelimit.Limits
	Userinfo   ratelimit.Limits
	// Authorize bounds codes issued without a login form (a session's
	// silent sign-in, prompt=none): each writes a grant family and a
	// code to the store. (Codes issued by a login form post are bounded
	// by Login.)
	Authorize ratelimit.Limits
}

// DefaultRateLimits are sized for a small server (two cores hash about 20
// passwords a second) and generous for honest callers: a service behind
// one address exchanges a token per user per audience every few minutes.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		Token:      ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 20, Burst: 50}, Global: ratelimit.Rule{Rate: 500, Burst: 1000}},
		Login:      ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 0.5, Burst: 10}, Global: ratelimit.Rule{Rate: 20, Burst: 40}},
		Introspect: ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 50, Burst: 100}, Global: ratelimit.Rule{Rate: 1000, Burst: 2000}},
		Revoke:     ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 10, Burst: 50}, Global: ratelimit.Rule{Rate: 200, Burst: 400}},
		Userinfo:   ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 20, Burst: 50}, Global: ratelimit.Rule{Rate: 500, Burst: 1000}},
		// A browser signs in silently to each app every few minutes; an
		// office behind one address has many browsers.
		Authorize: ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 2, Burst: 20}, Global: ratelimit.Rule{Rate: 200, Burst: 400}},
	}
}

// Limiter settings shared by the endpoints.
const (
	rateLimitSources  = 100_000     // per-source buckets kept per endpoint
	rateLimitInterval = time.Minute // refusals are audited once a minute, counted
)

// limiters are the provider's rate limiters, one per endpoint.
type limiters struct {
	token, login, introspect, revoke, userinfo *ratelimit.Limiter
	authorize                                  *ratelimit.Limiter // codes issued on GET (silent sign-in)
}

func (p *Provider) newLimiters(rl RateLimits, m *ratelimit.Metrics) (*limiters, error) {
	def := DefaultRateLimits()
	pick := func(l, d ratelimit.Limits) ratelimit.Limits {
		if l == (ratelimit.Limits{}) {
			return d
		}
		return l
	}
	var ls limiters
	for _, e := range []struct {
		name string
		l    ratelimit.Limits
		dst  **ratelimit.Limiter
	}{
		{"oauth_token", pick(rl.Token, def.Token), &ls.token},
		{"oauth_login", pick(rl.Login, def.Login), &ls.login},
		{"oauth_introspect", pick(rl.Introspect, def.Introspect), &ls.introspect},
		{"oauth_revoke", pick(rl.Revoke, def.Revoke), &ls.revoke},
		{"oauth_userinfo", pick(rl.Userinfo, def.Userinfo), &ls.userinfo},
		{"oauth_authorize", pick(rl.Authorize, def.Authorize), &ls.authorize},
	} {
		l, err := ratelimit.New(ratelimit.Config{Name: e.name, Limits: e.l, MaxSources: rateLimitSources,
			Interval: rateLimitInterval, OnRefusals: p.recordRefusals, Metrics: m, Now: p.cfg.Now})
		if err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
		*e.dst = l
	}
	return &ls, nil
}

func (ls *limiters) flush() {
	for _, l := range []*ratelimit.Limiter{ls.token, ls.login, ls.introspect, ls.revoke, ls.userinfo, ls.authorize} {
		l.Flush()
	}
}

// recordRefusals audits refused requests: one entry per source, limit and
// interval with the count, so a flood does not flood the log.
func (p *Provider) recordRefusals(rs []ratelimit.Refusal) {
	es := make([]*audit.Entry, 0, len(rs))
	for _, r := range rs {
		es = append(es, &audit.Entry{V: audit.SchemaVersion, Time: r.Last, Action: "oauth.rate_limit", Outcome: audit.OutcomeDenied,
			Reason: fmt.Sprintf("%d requests refused by the %s rate limit of %s", r.Count, r.Scope, r.Limiter),
			Source: "oauth", Actor: audit.Actor{User: "anonymous"},
			Details: map[string]string{"limiter": r.Limiter, "scope": string(r.Scope), "remote": r.Source,
				"count": fmt.Sprint(r.Count), "first": r.First.UTC().Format(time.RFC3339), "last": r.Last.UTC().Format(time.RFC3339)}})
		p.cfg.Log.Warn("oauth: requests refused by a rate limit", "limiter", r.Limiter, "scope", r.Scope, "source", r.Source, "count", r.Count)
	}
	p.cfg.Record(context.Background(), es...)
}

// limitJSON answers a refused request at a JSON endpoint: 429, Retry-After.
func limitJSON(w http.ResponseWriter, _ *http.Request, d ratelimit.Decision) {
	w.Header().Set("Retry-After", d.RetryAfter())
	writeOAuthError(w, errf(http.StatusTooManyRequests, "temporarily_unavailable",
		"too many requests (%s limit); retry after %s s", d.Scope, d.RetryAfter()))
}

// limitPage answers a refused login form post.
func (p *Provider) limitPage(w http.ResponseWriter, _ *http.Request, d ratelimit.Decision) {
	w.Header().Set("Retry-After", d.RetryAfter())
	w.Header().Set("Cache-Control", "no-store")
	p.errorPage(w, errf(http.StatusTooManyRequests, "temporarily_unavailable",
		"too many sign-in attempts; wait %s seconds and try again", d.RetryAfter()))
}
