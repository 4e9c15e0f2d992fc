package oauth_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/oauth"
)

// loginPage posts a login and returns the status and the page's text.
func loginPage(t *testing.T, h *harness, user, password, otp string) (int, string) {
	t.Helper()
	resp := h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), user, password, otp)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestFailedLoginsLookAlike: an unknown user, a disabled one, one backing
// off after failures, a wrong password and a wrong one-time code all get
// the same answer and cost the same work (one argon2id run each); only
// the audit log says which it was.
func TestFailedLoginsLookAlike(t *testing.T) {
	h, _ := codeHarness(t)
	h.user("dora", "dora-password")
	h.user("bert", "bert-password")
	u, _ := h.store.GetOAuthUser(t.Context(), "dora")
	u.Disabled = true
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < oauth.DefaultMaxFailures; i++ { // bert backs off
		loginPage(t, h, "bert", "wrong-password", "")
	}
	cases := []struct{ name, user, password, reason string }{
		{"unknown user", "mallory", "whatever-password", "unknown user"},
		{"disabled user, right password", "dora", "dora-password", "disabled"},
		{"backing off, right password", "bert", "bert-password", "backing off"},
		{"wrong password", "alice", "wrong-password", "wrong password"},
	}
	var first string
	for _, c := range cases {
		before := oauth.PasswordChecks(h.p)
		st, page := loginPage(t, h, c.user, c.password, "")
		if st != http.StatusUnauthorized {
			t.Fatalf("%s: status %d", c.name, st)
		}
		if n := oauth.PasswordChecks(h.p) - before; n != 1 {
			t.Errorf("%s: %d argon2id runs, want 1 like every failed login", c.name, n)
		}
		msg := between(page, `role="alert">`, "</p>")
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("%s: message %q differs from %q", c.name, msg, first)
		}
		if strings.Contains(page, c.reason) {
			t.Errorf("%s: the page tells the reason %q", c.name, c.reason)
		}
		fails := h.auditedOutcome("oauth.login", "failure")
		last := fails[len(fails)-1]
		if !strings.Contains(last.Reason, c.reason) {
			t.Errorf("%s: audited reason %q, want it to name %q", c.name, last.Reason, c.reason)
		}
		// The typed name is a claim: a detail, never the actor.
		if last.Actor.User != "anonymous" || last.Details["username"] == "" {
			t.Errorf("%s: failed login's actor %+v, details %v; want anonymous with the claimed username in details", c.name, last.Actor, last.Details)
		}
	}
}

func between(s, a, b string) string {
	_, rest, ok := strings.Cut(s, a)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, b)
	return v
}

// TestLoginBackoff: failures slow an account down progressively instead
// of locking it for a quarter of an hour: after the free ones each further
// failure doubles the wait, up to a cap; meanwhile even the right password
// is refused; once the wait is over it works; an attacker failing alice's
// password does not end her signed-in session; an operator can unlock.
func TestLoginBackoff(t *testing.T) {
	h, _ := codeHarness(t)
	for i := 0; i < oauth.DefaultMaxFailures-1; i++ {
		loginPage(t, h, "alice", "guess", "")
	}
	// alice signs in (a correct login resets the count) in her browser.
	mine := h.browser()
	codeFrom(t, h.login(mine, authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	for i := 0; i < oauth.DefaultMaxFailures; i++ {
		loginPage(t, h, "alice", "guess", "")
	}
	if st, _ := loginPage(t, h, "alice", "alice-password", ""); st != http.StatusUnauthorized {
		t.Fatalf("right password while backing off: %d", st)
	}
	// Her session still signs her in to the client (single sign-on).
	resp, err := mine.Get(authURL(h, codeQuery("web", fixedCh)))
	if err != nil {
		t.Fatal(err)
	}
	codeFrom(t, resp, "s")

	wait := oauth.DefaultBackoffBase
	for i := 0; i < 3; i++ {
		h.clock.Add(wait - time.Second)
		if st, _ := loginPage(t, h, "alice", "alice-password", ""); st != http.StatusUnauthorized {
			t.Fatalf("right password a second before the back-off of %v ends: %d", wait, st)
		}
		h.clock.Add(time.Second)
		loginPage(t, h, "alice", "another-guess", "") // counted: the wait doubles
		wait *= 2
	}
	u, _ := h.store.GetOAuthUser(t.Context(), "alice")
	if got := u.LockedUntil.Sub(h.clock.Now()); got != wait {
		t.Fatalf("back-off after %d failures: %v, want %v", u.FailedLogins, got, wait)
	}
	h.clock.Add(wait)
	codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")

	// The cap: however many failures, no wait is longer than BackoffMax.
	var longest time.Duration
	for i := 0; i < 20; i++ {
		loginPage(t, h, "alice", "guess", "")
		u, _ = h.store.GetOAuthUser(t.Context(), "alice")
		w := u.LockedUntil.Sub(h.clock.Now())
		if w > oauth.DefaultBackoffMax {
			t.Fatalf("back-off %v beyond the cap %v", w, oauth.DefaultBackoffMax)
		}
		longest = max(longest, w)
		h.clock.Add(max(w, 0))
	}
	if longest != oauth.DefaultBackoffMax {
		t.Fatalf("longest back-off %v, want the cap %v", longest, oauth.DefaultBackoffMax)
	}
	// An operator unlocks at once (rampart oauth user unlock).
	loginPage(t, h, "alice", "guess", "")
	if err := h.store.LoginSucceeded(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
}

// TestLoginCSRFTokenExpires: a login form kept (or stolen) for longer than
// its lifetime is refused, so a CSRF token is not a credential forever.
func TestLoginCSRFTokenExpires(t *testing.T) {
	h, _ := codeHarness(t)
	b := h.browser()
	resp, err := b.Get(authURL(h, codeQuery("web", fixedCh)))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{"username": {"alice"}, "password": {"alice-password"}, "action": {"allow"}}
	for _, m := range hiddenRE.FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], htmlUnescape(m[2]))
	}
	h.clock.Add(oauth.DefaultCSRFTTL + time.Second)
	resp, err = b.PostForm(h.srv.URL+oauth.PathAuthorize, form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "expired") {
		t.Fatalf("a form older than its lifetime: %d\n%s", resp.StatusCode, body)
	}
	// A fresh form works.
	codeFrom(t, h.login(b, authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	// A token from a form made "in the future" (a clock set ahead) is not
	// accepted either.
	h.clock.Add(-time.Hour)
	resp, err = b.PostForm(h.srv.URL+oauth.PathAuthorize, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a form from the future: %d", resp.StatusCode)
	}
}

// TestHashingIsBounded: password hashing (64 MiB each) runs at most
// HashConcurrency at once with a short queue behind; a login beyond that
// gets 503 with Retry-After at once, so a flood of logins cannot exhaust
// the server's memory.
func TestHashingIsBounded(t *testing.T) {
	h, _ := codeHarness(t)
	release := oauth.HoldHashing(h.p)
	st, page := loginPage(t, h, "alice", "alice-password", "")
	release()
	if st != http.StatusServiceUnavailable || !strings.Contains(page, "busy") {
		t.Fatalf("login while hashing is saturated: %d\n%s", st, page)
	}
	// The answer carries Retry-After (checked on a raw request).
	release = oauth.HoldHashing(h.p)
	b := h.browser()
	resp, _ := b.Get(authURL(h, codeQuery("web", fixedCh)))
	p, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{"username": {"alice"}, "password": {"x"}, "action": {"allow"}}
	for _, m := range hiddenRE.FindAllStringSubmatch(string(p), -1) {
		form.Set(m[1], htmlUnescape(m[2]))
	}
	resp, err := b.PostForm(h.srv.URL+oauth.PathAuthorize, form)
	release()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("busy answer: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Refused for load, not as a failed login: alice is not backing off.
	if u, _ := h.store.GetOAuthUser(t.Context(), "alice"); u.FailedLogins != 0 {
		t.Fatalf("a busy answer counted as a failed login: %d", u.FailedLogins)
	}
	// Audited counted, at maintenance.
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if busy := h.audited("oauth.login_busy"); len(busy) != 1 || busy[0].Details["count"] != "2" {
		t.Fatalf("busy refusals audited: %+v", busy)
	}
	codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
}

// TestTOTPCodeOnceUnderConcurrency: several logins racing with the same
// one-time code: exactly one is accepted (the step is recorded by a
// conditional update, not read-then-write).
func TestTOTPCodeOnceUnderConcurrency(t *testing.T) {
	h, _ := codeHarness(t)
	secret, _ := oauth.NewTOTPSecret()
	u, _ := h.store.GetOAuthUser(t.Context(), "alice")
	var err error
	if u.TOTPSecret, err = oauth.SealTOTP(h.wrap, "alice", secret); err != nil {
		t.Fatal(err)
	}
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	code := oauth.TOTPCode(secret, h.clock.Now())
	const n = 6
	// Every browser has its form before any posts, then all post at once.
	forms := make([]url.Values, n)
	browsers := make([]*http.Client, n)
	for i := range forms {
		browsers[i] = h.browser()
		resp, err := browsers[i].Get(authURL(h, codeQuery("web", fixedCh)))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		forms[i] = url.Values{"username": {"alice"}, "password": {"alice-password"}, "otp": {code}, "action": {"allow"}}
		for _, m := range hiddenRE.FindAllStringSubmatch(string(p), -1) {
			forms[i].Set(m[1], htmlUnescape(m[2]))
		}
	}
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range forms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := browsers[i].PostForm(h.srv.URL+oauth.PathAuthorize, forms[i])
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	ok := 0
	for _, st := range statuses {
		if st == http.StatusSeeOther {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d logins accepted one one-time code (statuses %v), want exactly 1", ok, statuses)
	}
}
