package oauth_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/ratelimit"
	"github.com/rampartsec/rampart/internal/store"
)

// TestRateLimits: hammering the token, login, introspection and revocation
// endpoints from one address gets 429 with Retry-After once its bucket is
// empty, and service again once it refills; refused logins are refused
// before any password is checked (so they neither cost a hash nor move
// the victim's back-off); refusals are audited as one counted entry per
// source and endpoint, and counted in the metrics.
func TestRateLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	tight := ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 1, Burst: 3}, Global: ratelimit.Rule{Rate: 100, Burst: 100}}
	h := newHarness(t, func(c *oauth.Config) {
		c.RateLimits = oauth.RateLimits{Token: tight, Login: tight, Introspect: tight, Revoke: tight, Userinfo: tight}
		c.Registerer = reg
	})
	secret := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "client_credentials"}})
	h.user("alice", "alice-password")

	cc := url.Values{"grant_type": {"client_credentials"}}
	flood := func(name string, call func() (int, http.Header)) {
		t.Helper()
		var last int
		var hdr http.Header
		for i := 0; i < 20; i++ {
			last, hdr = call()
			if i < 3 && last == http.StatusTooManyRequests {
				t.Fatalf("%s: request %d of the burst refused", name, i)
			}
		}
		if last != http.StatusTooManyRequests || hdr.Get("Retry-After") != "1" {
			t.Fatalf("%s: after 20 requests: %d, Retry-After %q; want 429 and 1", name, last, hdr.Get("Retry-After"))
		}
	}
	postRaw := func(path string, form url.Values) (int, http.Header) {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("web", secret)
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	flood("token", func() (int, http.Header) { return postRaw(oauth.PathToken, cc) })
	flood("introspect", func() (int, http.Header) { return postRaw(oauth.PathIntrospect, url.Values{"token": {"x"}}) })
	flood("revoke", func() (int, http.Header) { return postRaw(oauth.PathRevoke, url.Values{"token": {"x"}}) })
	hashes := oauth.PasswordChecks(h.p)
	flood("login", func() (int, http.Header) {
		resp := h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "guess", "")
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	})
	if n := oauth.PasswordChecks(h.p) - hashes; n != 3 {
		t.Fatalf("%d passwords hashed for 20 login posts, want only the 3 let through", n)
	}
	if u, _ := h.store.GetOAuthUser(t.Context(), "alice"); u.FailedLogins != 3 || !u.LockedUntil.IsZero() {
		t.Fatalf("refused logins counted against alice: %d failures, backing off until %v", u.FailedLogins, u.LockedUntil)
	}
	// A second later the bucket has a token again.
	h.clock.Add(time.Second)
	if st, _ := postRaw(oauth.PathToken, cc); st != http.StatusOK {
		t.Fatalf("token after a second: %d", st)
	}

	// Audit: nothing per refused request; one counted entry per endpoint
	// and source when the provider's maintenance runs.
	if n := len(h.audited("oauth.rate_limit")); n != 0 {
		t.Fatalf("%d rate-limit entries before maintenance, want them counted, not logged one by one", n)
	}
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range h.audited("oauth.rate_limit") {
		got[e.Details["limiter"]] = e.Details["count"]
		if e.Details["remote"] != "127.0.0.1" || e.Details["scope"] != "source" || e.Outcome != "denied" || e.Actor.User != "anonymous" {
			t.Errorf("entry %+v", e)
		}
	}
	want := map[string]string{"oauth_token": "17", "oauth_introspect": "17", "oauth_revoke": "17", "oauth_login": "17"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audited refusals %v, want %v", got, want)
	}
	// Metrics.
	mfs, _ := reg.Gather()
	refused := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "rampart_ratelimit_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "refused_source" {
					refused += m.GetCounter().GetValue()
				}
			}
		}
	}
	if refused != 4*17 {
		t.Fatalf("metrics count %v refusals, want %d", refused, 4*17)
	}
}

// TestGlobalRateLimit: the endpoint as a whole is bounded too, whatever
// the number of addresses (here one address with a loose own limit).
func TestGlobalRateLimit(t *testing.T) {
	h := newHarness(t, func(c *oauth.Config) {
		c.RateLimits.Token = ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 1000, Burst: 1000}, Global: ratelimit.Rule{Rate: 2, Burst: 5}}
	})
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
		codes[st]++
		if st == http.StatusTooManyRequests && !strings.Contains(out["error_description"].(string), "global") {
			t.Fatalf("refusal %v does not name the global limit", out)
		}
	}
	if codes[http.StatusOK] != 5 || codes[http.StatusTooManyRequests] != 5 {
		t.Fatalf("statuses %v, want 5 allowed and 5 refused", codes)
	}
}
