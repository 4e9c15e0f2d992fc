package oauth_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// BenchmarkClientCredentials: tokens/s through the token endpoint over
// TLS 1.3 with keep-alive, SQLite store, every token audited (to a
// collector here; the server's log adds a group-committed append).
func BenchmarkClientCredentials(b *testing.B) {
	h := newBenchHarness(b)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	c := h.srv.Client()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+oauth.PathToken, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("svc", secret)
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkVerifyAccessToken: what a service spends per request on a
// bearer token it has seen before (claims and revocation re-checked).
func BenchmarkVerifyAccessToken(b *testing.B) {
	h := newBenchHarness(b)
	secret := h.client(store.OAuthClient{ID: "svc", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"},
		Audience: []string{"spiffe://example.org/orders"}})
	_, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "svc", secret)
	tok := out["access_token"].(string)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.p.VerifyAccessToken(tok, "spiffe://example.org/orders"); err != nil {
			b.Fatal(err)
		}
	}
}
