package oauth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fuzzProvider is a provider with just what the nonce and CSRF code use.
func fuzzProvider(now time.Time) *Provider {
	return &Provider{cfg: Config{Now: func() time.Time { return now }, CSRFTTL: DefaultCSRFTTL, DPoPNonceTTL: DefaultDPoPNonceTTL},
		sessionKey: []byte("0123456789abcdef0123456789abcdef")}
}

var fuzzNow = time.Date(2030, 1, 1, 12, 0, 30, 0, time.UTC)

// FuzzDPoPNonce: no input but this period's or the last period's nonce is
// accepted, and none panics.
func FuzzDPoPNonce(f *testing.F) {
	p := fuzzProvider(fuzzNow)
	cur := p.dpopNonce()
	f.Add(cur)
	f.Add(p.dpopNonceAt(p.dpopPeriod() - 2))
	f.Add("")
	f.Add(strings.Repeat("A", 32))
	f.Fuzz(func(t *testing.T, n string) {
		if p.dpopNonceOK(n) && n != cur && n != p.dpopNonceAt(p.dpopPeriod()-1) {
			t.Fatalf("accepted %q", n)
		}
	})
}

// FuzzCSRF: a form token is accepted only if the server made it for this
// browser's cookie within the lifetime; nothing panics.
func FuzzCSRF(f *testing.F) {
	p := fuzzProvider(fuzzNow)
	cookie := strings.Repeat("c", 43)
	good := p.csrfToken(httptest.NewRecorder(), requestWithCookie(cookie, ""), fuzzNow)
	f.Add(good, cookie)
	f.Add("1893499230.", cookie)
	f.Add("-1.xyz", "")
	f.Add(good, strings.Repeat("d", 43))
	f.Fuzz(func(t *testing.T, token, c string) {
		r := requestWithCookie(c, token)
		// (net/http drops bytes a cookie may not hold: compare what the
		// server reads.)
		seen, _ := r.Cookie(csrfCookie)
		if p.checkCSRF(r, fuzzNow) && !(token == good && seen != nil && seen.Value == cookie) {
			// Only the server's own token for this cookie passes (another
			// issue time would need the MAC key).
			t.Fatalf("accepted token %q with cookie %q", token, c)
		}
	})
}

func requestWithCookie(cookie, token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/oauth2/authorize", nil)
	if cookie != "" && !strings.ContainsAny(cookie, "; \\\",\x00\r\n") {
		r.AddCookie(&http.Cookie{Name: csrfCookie, Value: cookie})
	}
	r.PostForm = url.Values{"csrf": {token}}
	return r
}
