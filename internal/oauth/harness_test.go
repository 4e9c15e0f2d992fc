package oauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/ratelimit"
	"github.com/rampartsec/rampart/internal/store"
)

// harness is a provider on a real TLS listener with a SQLite store.
type harness struct {
	t      testing.TB
	p      *oauth.Provider
	srv    *httptest.Server
	store  store.Store
	dbPath string // the SQLite file, for replicas opening their own handle
	wrap   *keywrap.Wrapper
	clock  *fakeclock.Clock
	ca     *testCA

	mu      sync.Mutex
	entries []*audit.Entry
	secrets map[string]string // client ID -> secret, of clients made by client()
}

func newHarness(t *testing.T, mutate ...func(*oauth.Config)) *harness {
	return newHarnessTB(t, mutate...)
}

func newBenchHarness(b *testing.B) *harness { return newHarnessTB(b) }

func newHarnessTB(t testing.TB, mutate ...func(*oauth.Config)) *harness {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "rampart.db")
	st, err := store.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek := make([]byte, 32)
	rand.Read(kek)
	wrap, err := keywrap.New(kek)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: st, dbPath: dbPath, wrap: wrap, clock: fakeclock.New(time.Now().Truncate(time.Second)), ca: newTestCA(t)}
	mux := http.NewServeMux()
	h.srv = httptest.NewUnstartedServer(mux)
	h.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: h.ca.pool}
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	// Tests other than the rate limits' own make many requests at one
	// instant of the fake clock from one address: generous limits.
	lots := ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 1e6, Burst: 1e6}, Global: ratelimit.Rule{Rate: 1e6, Burst: 1e6}}
	cfg := oauth.Config{
		Issuer: h.srv.URL, Store: st, Wrapper: wrap, Now: h.clock.Now,
		RateLimits: oauth.RateLimits{Token: lots, Login: lots, Introspect: lots, Revoke: lots, Userinfo: lots, Authorize: lots},
		Record: func(_ context.Context, es ...*audit.Entry) {
			for _, e := range es {
				if err := e.Validate(); err != nil {
					t.Errorf("audit entry %s invalid: %v", e.Action, err)
				}
			}
			h.mu.Lock()
			h.entries = append(h.entries, es...)
			h.mu.Unlock()
		},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	h.p, err = oauth.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.p.Register(mux, func(_ string, f http.HandlerFunc) http.Handler { return f })
	return h
}

// auditedOutcome returns the entries recorded with this action and outcome.
func (h *harness) auditedOutcome(action, outcome string) []*audit.Entry {
	var out []*audit.Entry
	for _, e := range h.audited(action) {
		if e.Outcome == outcome {
			out = append(out, e)
		}
	}
	return out
}

// audited returns the entries recorded with this action.
func (h *harness) audited(action string) []*audit.Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*audit.Entry
	for _, e := range h.entries {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// client registers an OAuth client and returns its secret ("" unless the
// method uses one).
func (h *harness) client(c store.OAuthClient) string {
	h.t.Helper()
	secret := ""
	if strings.HasPrefix(c.AuthMethod, "client_secret") {
		secret = oauth.NewSecret()
		c.SecretHash = oauth.HashSecret(secret)
	}
	c.CreatedAt = h.clock.Now()
	if err := h.store.CreateOAuthClient(h.t.Context(), c); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	if h.secrets == nil {
		h.secrets = map[string]string{}
	}
	h.secrets[c.ID] = secret
	h.mu.Unlock()
	return secret
}

func (h *harness) user(name, password string, groups ...string) {
	h.t.Helper()
	hash, err := oauth.HashPassword(password)
	if err != nil {
		h.t.Fatal(err)
	}
	err = h.store.CreateOAuthUser(h.t.Context(), store.OAuthUser{Username: name, PasswordHash: hash, Name: strings.ToUpper(name[:1]) + name[1:],
		Email: name + "@example.org", Groups: groups, CreatedAt: h.clock.Now()})
	if err != nil {
		h.t.Fatal(err)
	}
}

// browser is a user agent with cookies that does not follow redirects.
func (h *harness) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	// A copy: srv.Client() is one shared client, and setting its jar
	// would make every "browser" (and every plain request) share cookies.
	c := *h.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

var (
	csrfRE   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// login drives the login page: GET the authorization URL, fill in the
// form, submit. It returns the final response (a redirect on success).
func (h *harness) login(b *http.Client, authURL, user, password, otp string) *http.Response {
	h.t.Helper()
	resp, err := b.Get(authURL)
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(strings.NewReader(string(body)))}
	}
	form := url.Values{"username": {user}, "password": {password}, "otp": {otp}, "action": {"allow"}}
	for _, m := range hiddenRE.FindAllStringSubmatch(string(body), -1) {
		form.Set(m[1], htmlUnescape(m[2]))
	}
	if m := csrfRE.FindStringSubmatch(string(body)); m == nil {
		h.t.Fatalf("login page has no csrf field:\n%s", body)
	}
	resp, err = b.PostForm(h.srv.URL+oauth.PathAuthorize, form)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

func htmlUnescape(s string) string {
	r := strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&#43;", "+")
	return r.Replace(s)
}

// codeFrom reads the code from a redirect, failing the test otherwise.
func codeFrom(t testing.TB, resp *http.Response, wantState string) string {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("want a redirect with a code, got %d:\n%s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("error") != "" {
		t.Fatalf("redirect carries error %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != wantState {
		t.Fatalf("state %q, want %q", q.Get("state"), wantState)
	}
	return q.Get("code")
}

// post calls an endpoint with a form and returns the status and decoded
// JSON.
func (h *harness) post(c *http.Client, path string, form url.Values, basicID, basicSecret string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	return h.doWith(c, req)
}

func (h *harness) do(req *http.Request) (int, map[string]any) { return h.doWith(nil, req) }

func (h *harness) doWith(c *http.Client, req *http.Request) (int, map[string]any) {
	h.t.Helper()
	path := req.URL.Path
	if c == nil {
		c = h.srv.Client()
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	body, _ := io.ReadAll(resp.Body)
	if len(body) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			h.t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	return resp.StatusCode, out
}

// testCA issues client certificates carrying SPIFFE IDs.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{key: key, cert: cert, pool: pool}
}

// svid returns a TLS client certificate for a SPIFFE ID.
func (ca *testCA) svid(t testing.TB, id string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// mtlsClient is an HTTP client presenting cert.
func (h *harness) mtlsClient(cert tls.Certificate) *http.Client {
	c := *h.srv.Client() // a copy, as in browser
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	c.Transport = tr
	return &c
}

// replica is a second provider sharing h's database (through a handle of
// its own), key wrapper, clock and issuer URL: another server replica
// behind the same name. Its own listener serves it.
func (h *harness) replica(t *testing.T) (*oauth.Provider, *httptest.Server) {
	t.Helper()
	st, err := store.OpenSQLite(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: h.ca.pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	lots := ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 1e6, Burst: 1e6}, Global: ratelimit.Rule{Rate: 1e6, Burst: 1e6}}
	p, err := oauth.New(t.Context(), oauth.Config{Issuer: h.srv.URL, Store: st, Wrapper: h.wrap, Now: h.clock.Now,
		RateLimits: oauth.RateLimits{Token: lots, Login: lots, Introspect: lots, Revoke: lots, Userinfo: lots}})
	if err != nil {
		t.Fatal(err)
	}
	p.Register(mux, func(_ string, f http.HandlerFunc) http.Handler { return f })
	return p, srv
}
