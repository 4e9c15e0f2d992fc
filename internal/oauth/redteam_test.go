package oauth_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/ratelimit"
	"github.com/rampartsec/rampart/internal/store"
)

// Tests for the findings of an outside red team (one test per finding;
// each failed before its fix).

// alerts runs what h recorded through the default detection rules and
// returns the alerts' rules and summaries.
func (h *harness) alerts(t *testing.T) map[string][]string {
	t.Helper()
	h.mu.Lock()
	entries := append([]*audit.Entry(nil), h.entries...)
	h.mu.Unlock()
	e := detect.NewEngine(detect.Default())
	out := map[string][]string{}
	seen := map[string]bool{}
	for i, en := range entries {
		for _, a := range e.Process(int64(i), en) {
			if !seen[a.ID] {
				seen[a.ID] = true
				out[a.Rule] = append(out[a.Rule], a.Summary)
			}
		}
	}
	return out
}

// Finding 1: an unauthenticated caller's client_id went into the entry's
// actor ("client:ID") and, through some reasons, into the text the
// revoked-credential-use rule matched: anyone could fire that alert
// naming a client they do not hold (and so, by dedup, silence the real
// one for an hour) and write what the alert says. Now what the caller
// typed is claimed_client_id, quoted and clipped; the actor is anonymous,
// and the rule matches structured fields only.
func TestUnauthenticatedClientIDForgesNoAlert(t *testing.T) {
	h := newHarness(t)
	h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}})
	if _, err := h.p.RevokeClient(t.Context(), "web", "client disabled"); err != nil {
		t.Fatal(err)
	}
	// An assertion whose subject differs from client_id puts client_id in
	// the reason; Basic and client_secret_post name it as the caller.
	key := newKey(t)
	assertion := forge(t, jose.ES256, key, "k", nil, jwt.Claims{Issuer: "victim", Subject: "victim"})
	crafted := []string{
		"web revoked",
		"web\nrevoked-credential-use: client web used a revoked token",
		"client:web",
		strings.Repeat("revoked ", 2000),
	}
	for _, id := range crafted {
		cc := url.Values{"grant_type": {"client_credentials"}}
		f := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_assertion": {assertion},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}
		if st, out := h.post(nil, oauth.PathToken, f, "", ""); st != http.StatusUnauthorized {
			t.Fatalf("mismatched assertion: %d %v", st, out)
		}
		if st, out := h.post(nil, oauth.PathToken, cc, id, "wrong"); st != http.StatusUnauthorized {
			t.Fatalf("Basic with a crafted client_id: %d %v", st, out)
		}
		post := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"wrong"}}
		if st, out := h.post(nil, oauth.PathToken, post, "", ""); st != http.StatusUnauthorized {
			t.Fatalf("client_secret_post with a crafted client_id: %d %v", st, out)
		}
	}
	refusals := h.audited("oauth.client_auth")
	if len(refusals) == 0 {
		t.Fatal("no refused client authentication audited")
	}
	for _, e := range refusals {
		if e.Actor.User != "anonymous" || e.Actor.SpiffeID != "" {
			t.Errorf("refused authentication recorded with actor %+v, want anonymous", e.Actor)
		}
		if _, ok := e.Details["client_id"]; ok {
			t.Errorf("refused authentication has details.client_id %q: a claim must be labelled claimed_client_id", e.Details["client_id"])
		}
		c := e.Details["claimed_client_id"]
		if !strings.HasPrefix(c, `"`) || strings.ContainsAny(c, "\n\r") || len(c) > 200 {
			t.Errorf("claimed_client_id %q: want quoted, escaped and clipped", c)
		}
		if strings.ContainsAny(e.Reason, "\n\r") || len(e.Reason) > 400 {
			t.Errorf("reason %q carries the caller's line breaks or length", e.Reason)
		}
	}
	if a := h.alerts(t); len(a["revoked-credential-use"]) != 0 {
		t.Fatalf("unauthenticated requests fired revoked-credential-use: %q", a["revoked-credential-use"])
	}
}

// The rule still fires for what it is for: a revoked refresh token used
// by its (authenticated) client, named by the server.
func TestRevokedRefreshTokenUseAlerts(t *testing.T) {
	h, _ := deputyHarness(t)
	web := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Audience: []string{svc(0)}})
	code := codeFrom(t, h.login(h.browser(), authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	_, tok := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"code_verifier": {fixedVerifier}}, "web", web)
	if _, err := h.p.RevokeUser(t.Context(), "alice", "user disabled"); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(time.Second)
	if st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}}, "web", web); st != http.StatusBadRequest {
		t.Fatalf("revoked refresh token: %d %v", st, out)
	}
	a := h.alerts(t)["revoked-credential-use"]
	if len(a) != 1 || !strings.Contains(a[0], "client:web") {
		t.Fatalf("revoked-credential-use alerts %q, want one naming client:web", a)
	}
}

// dpopExchange has service i exchange subject for a token addressed to
// audience, with a DPoP proof ("" none) for the token endpoint.
func (h *harness) dpopExchange(t *testing.T, i int, subject, audience, proof string) (int, map[string]any) {
	t.Helper()
	f := url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {audience}, "client_id": {"svc-" + string(rune('0'+i))}}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+oauth.PathToken, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return h.doWith(h.mtlsClient(h.ca.svid(t, svc(i))), req)
}

// Finding 2: token exchange ignored the subject token's DPoP binding, so a
// stolen DPoP-bound token, exchanged, became a token usable without the
// key. Now the exchange needs a proof by the same key, and the new token
// keeps the binding.
func TestExchangeKeepsDPoPBinding(t *testing.T) {
	h, _ := deputyHarness(t)
	h.client(store.OAuthClient{ID: "spa", AuthMethod: "none", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code"}, Audience: []string{svc(0)}})
	key, thief := newKey(t), newKey(t)
	jkt, _ := dpop.Thumbprint(key.Public())
	q := codeQuery("spa", fixedCh)
	q.Set("dpop_jkt", jkt)
	q.Set("resource", svc(0))
	code := codeFrom(t, h.login(h.browser(), authURL(h, q), "alice", "alice-password", ""), "s")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {fixedVerifier}, "client_id": {"spa"}}
	st, tok := h.postDPoP(oauth.PathToken, form, h.proof(key, "POST", oauth.PathToken, ""), "", "")
	if st != http.StatusOK || tok["token_type"] != "DPoP" {
		t.Fatalf("token: %d %v", st, tok)
	}
	bound := tok["access_token"].(string)

	for _, tc := range []struct{ name, proof, want string }{
		{"no proof", "", "bound to a DPoP key"},
		{"a proof by another key", h.proof(thief, "POST", oauth.PathToken, ""), "another key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out := h.dpopExchange(t, 0, bound, svc(1), tc.proof)
			if st != http.StatusBadRequest || out["error"] != "invalid_grant" || !strings.Contains(out["error_description"].(string), tc.want) {
				t.Fatalf("exchange of a DPoP-bound token with %s: %d %v, want invalid_grant naming %q", tc.name, st, out, tc.want)
			}
		})
	}
	// With a proof by the key, the exchange goes through and the new
	// token is bound to the same key (and to svc-0's certificate).
	st, out := h.dpopExchange(t, 0, bound, svc(1), h.proof(key, "POST", oauth.PathToken, ""))
	if st != http.StatusOK || out["token_type"] != "DPoP" {
		t.Fatalf("exchange with a proof by the token's key: %d %v", st, out)
	}
	c, err := h.p.VerifyAccessToken(out["access_token"].(string), svc(1))
	if err != nil || c.Cnf == nil || c.Cnf.JKT != jkt {
		t.Fatalf("exchanged token cnf %+v (%v), want jkt %s", c.Cnf, err, jkt)
	}
	if err := c.CheckBinding(nil, ""); err == nil {
		t.Fatal("the exchanged token is usable as a plain bearer token")
	}
}

// Finding 3: a client's own (client credentials) token, exchanged by
// another client, looked like a user's token (its sub was no longer its
// client_id), so userinfo, introspection and policies treated the
// machine as a user, here as the user who happens to share its name. The
// exchanged token now says it acts for a client (sub_type client).
func TestExchangedMachineTokenIsNoUser(t *testing.T) {
	h := newHarness(t)
	userinfoURL := h.srv.URL + oauth.PathUserinfo
	robot := h.client(store.OAuthClient{ID: "robot", AuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"},
		Scopes: []string{"openid", "profile"}, Audience: []string{svc(0)}})
	h.client(store.OAuthClient{ID: "svc-0", AuthMethod: "tls_client_auth", SPIFFEID: svc(0),
		GrantTypes: []string{oauth.GrantTokenExchange}, Audience: []string{svc(1), userinfoURL}})
	h.user("robot", "a-user-who-shares-the-name") // what userinfo would have described
	st, out := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "scope": {"openid profile"}}, "robot", robot)
	if st != http.StatusOK {
		t.Fatalf("client credentials: %d %v", st, out)
	}
	own := out["access_token"].(string)
	if c, _ := h.p.VerifyAccessToken(own, ""); c.SubjectType != accesstoken.SubjectClient || c.ForUser() {
		t.Fatalf("client credentials token: sub_type %q", c.SubjectType)
	}
	svc0 := h.mtlsClient(h.ca.svid(t, svc(0))) // one certificate: exchanged tokens are bound to it
	for _, aud := range []string{svc(1), userinfoURL} {
		st, out := h.exchangeWith(t, svc0, 0, own, aud)
		if st != http.StatusOK {
			t.Fatalf("exchange for %s: %d %v", aud, st, out)
		}
		ex := out["access_token"].(string)
		c, err := h.p.VerifyAccessToken(ex, aud)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "robot" || c.ClientID != "svc-0" || c.SubjectType != accesstoken.SubjectClient || c.ForUser() {
			t.Fatalf("exchanged machine token: sub %q client_id %q sub_type %q, want sub_type client", c.Subject, c.ClientID, c.SubjectType)
		}
		if aud == userinfoURL {
			if st, body := userinfoWith(h, svc0, "Bearer", ex, ""); st != http.StatusUnauthorized || !strings.Contains(body, "no user") {
				t.Fatalf("userinfo with an exchanged machine token: %d %s", st, body)
			}
			continue
		}
		// Introspection (by the audience) names no username.
		h.client(store.OAuthClient{ID: "svc-1", AuthMethod: "tls_client_auth", SPIFFEID: svc(1), GrantTypes: []string{oauth.GrantTokenExchange}})
		_, in := h.post(h.mtlsClient(h.ca.svid(t, svc(1))), oauth.PathIntrospect, url.Values{"token": {ex}, "client_id": {"svc-1"}}, "", "")
		if in["active"] != true || in["username"] != nil {
			t.Fatalf("introspection of an exchanged machine token: %v", in)
		}
	}
	// The audit log names no user for the exchange either.
	for _, e := range h.audited("oauth.token_exchange") {
		if e.Actor.User == "robot" || e.Details["user"] != "" {
			t.Fatalf("exchange of a machine token audited as user %q (details %v)", e.Actor.User, e.Details)
		}
	}
	// A user's token stays a user's through exchange.
	if c := (&accesstoken.Claims{Subject: "alice", ClientID: "svc-0", SubjectType: accesstoken.SubjectUser}); !c.ForUser() {
		t.Fatal("a user's exchanged token is no user's")
	}
}

// jwksKeys is the provider's published keys as a resource server holds
// them (accesstoken.KeySet).
type jwksKeys jose.JSONWebKeySet

func (k jwksKeys) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	for _, j := range k.Keys {
		if j.KeyID == kid {
			return j.Key, jose.SignatureAlgorithm(j.Algorithm), true
		}
	}
	return nil, "", false
}

func (k jwksKeys) Algorithms() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}
}

// atProxy verifies raw as a proxy does at the fake clock's now: the
// issuer's keys, the revocation list the server hands out now (the
// store's), and the default leeway on exp.
func (h *harness) atProxy(t *testing.T, raw, audience string) error {
	t.Helper()
	now := h.clock.Now()
	revs, err := h.store.ListOAuthRevocations(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, r := range revs {
		listed[r.ID] = true
	}
	_, err = accesstoken.Verify(raw, jwksKeys(h.p.JWKS()), accesstoken.Options{Issuer: h.srv.URL, Audience: audience, Now: now,
		Leeway: accesstoken.DefaultLeeway, Revoked: func(id string) bool { return listed[id] }})
	return err
}

// Finding 5: a revocation was dropped from the list at its tokens' exp,
// while proxies take a token until exp plus 30 s of leeway: a revoked
// token was good again for those 30 s. Revocations now outlive exp by the
// most leeway a verifier may allow (accesstoken.MaxLeeway).
func TestRevocationOutlivesVerifierLeeway(t *testing.T) {
	h, alice := deputyHarness(t)
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc-2"}, "audience": {svc(3)}}
	st, out := h.post(h.mtlsClient(h.ca.svid(t, svc(2))), oauth.PathToken, cc, "", "")
	if st != http.StatusOK {
		t.Fatalf("client credentials: %d %v", st, out)
	}
	own := out["access_token"].(string)
	_, out = h.exchange(t, 0, alice, svc(1))
	exchanged := out["access_token"].(string)
	h.clock.Add(time.Minute)
	// svc-2 and svc-0 disabled: their tokens are revoked by family.
	for _, id := range []string{"svc-2", "svc-0"} {
		if _, err := h.p.RevokeClient(t.Context(), id, "client disabled"); err != nil {
			t.Fatal(err)
		}
	}
	revokedAt := h.clock.Now()
	for name, tc := range map[string]struct{ tok, aud string }{"client credentials": {own, svc(3)}, "exchanged": {exchanged, svc(1)}} {
		h.clock.Set(revokedAt)
		if _, err := h.p.VerifyAccessToken(tc.tok, ""); err == nil {
			t.Fatalf("%s: verifies at the issuer after revocation", name)
		}
		// Its claims, read without the revocation list.
		c, err := (&accesstoken.Verifier{Keys: jwksKeys(h.p.JWKS()), Issuer: h.srv.URL, Now: h.clock.Now}).Verify(tc.tok)
		if err != nil {
			t.Fatal(err)
		}
		exp := c.Expiry.Time()
		for _, at := range []time.Duration{-time.Second, 0, time.Second, accesstoken.MaxLeeway - time.Second} {
			h.clock.Set(exp.Add(at))
			if err := h.atProxy(t, tc.tok, tc.aud); !errors.Is(err, accesstoken.ErrRevoked) {
				t.Errorf("%s token %v after its exp, at a proxy (leeway %v): %v, want revoked", name, at, accesstoken.DefaultLeeway, err)
			}
		}
		h.clock.Set(exp.Add(accesstoken.MaxLeeway))
		if err := h.atProxy(t, tc.tok, tc.aud); err == nil {
			t.Errorf("%s token past exp + leeway: verifies", name)
		}
	}
}

// Finding 6: revoking an access token (RFC 7009) revoked its jti only;
// the tokens exchanged from it (families of their own, children of the
// subject's family, not of the token) lived on. Now an exchanged token's
// family descends from the subject token's jti: revoking the token
// revokes every token exchanged from it, however many hops down, and
// leaves its siblings alone.
func TestRevokingATokenRevokesItsExchanges(t *testing.T) {
	h, alice := deputyHarness(t)
	gw := h.secrets["gateway"]
	_, out := h.exchange(t, 0, alice, svc(1))
	hop1 := out["access_token"].(string)
	_, out = h.exchange(t, 1, hop1, svc(2))
	hop2 := out["access_token"].(string)
	// A sibling: svc-0's own token, exchanged from nothing of alice's.
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc-0"}, "audience": {svc(1)}}
	_, out = h.post(h.mtlsClient(h.ca.svid(t, svc(0))), oauth.PathToken, cc, "", "")
	sibling := out["access_token"].(string)

	if st, _ := h.post(nil, oauth.PathRevoke, url.Values{"token": {alice}}, "gateway", gw); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	for name, tc := range map[string]struct{ tok, aud string }{"alice's token": {alice, svc(0)}, "hop 1": {hop1, svc(1)}, "hop 2": {hop2, svc(2)}} {
		if _, err := h.p.VerifyAccessToken(tc.tok, ""); !errors.Is(err, accesstoken.ErrRevoked) {
			t.Errorf("%s at the issuer after alice's token was revoked: %v", name, err)
		}
		if err := h.atProxy(t, tc.tok, tc.aud); !errors.Is(err, accesstoken.ErrRevoked) {
			t.Errorf("%s at a proxy after alice's token was revoked: %v", name, err)
		}
	}
	if _, err := h.p.VerifyAccessToken(sibling, ""); err != nil {
		t.Errorf("svc-0's own token was revoked with alice's: %v", err)
	}
	if st, out := h.exchange(t, 1, hop1, svc(2)); st != http.StatusBadRequest {
		t.Errorf("exchange of a descendant of a revoked token: %d %v", st, out)
	}
	// The token's jti, hop 1's family, hop 1's jti, hop 2's family.
	if e := h.audited("oauth.token_revoke"); len(e) != 1 || e[0].Details["revoked_families"] != "4" {
		t.Errorf("revocation audited as %+v, want one entry naming 4 revoked families", e)
	}
}

// flushRefusals ends the refusal-counting interval and has the provider
// record what it counted.
func (h *harness) flushRefusals(t *testing.T) {
	t.Helper()
	h.clock.Add(audit.RefusalInterval)
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// counted is how many events entries stand for: an aggregate its
// details.count, any other one.
func counted(es []*audit.Entry) int {
	n := 0
	for _, e := range es {
		if c, err := strconv.Atoi(e.Details["count"]); err == nil {
			n += c
		} else {
			n++
		}
	}
	return n
}

// Finding 7: every refused OAuth request was an audit entry of its own, so
// a flood of bad requests flooded the log. Refusals are now counted per
// kind (caller or its address, action, reason) and interval: the first
// recorded at once, its repeats as one entry with a count; nothing is
// lost (the counts add up to the requests).
func TestOAuthRefusalsAggregated(t *testing.T) {
	h := newHarness(t)
	secret := h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", GrantTypes: []string{"authorization_code", "client_credentials"}})
	const n = 300
	for i := range n {
		// Unauthenticated: wrong secrets, claimed client IDs varying.
		if st, _ := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "web", "wrong-"+strconv.Itoa(i)); st != http.StatusUnauthorized {
			t.Fatalf("wrong secret: %d", st)
		}
		if st, _ := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody-" + strconv.Itoa(i)}, "client_secret": {"x"}}, "", ""); st != http.StatusUnauthorized {
			t.Fatalf("unknown client: %d", st)
		}
		// Authenticated: codes that do not exist.
		if st, _ := h.post(nil, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {"guess-" + strconv.Itoa(i)}, "redirect_uri": {redirect}}, "web", secret); st != http.StatusBadRequest {
			t.Fatalf("guessed code: %d", st)
		}
	}
	if got := len(h.audited("oauth.client_auth")) + len(h.audited("oauth.token")); got > 3 {
		t.Fatalf("%d entries recorded during the flood, want one per kind (3)", got)
	}
	h.flushRefusals(t)
	auth, tok := h.audited("oauth.client_auth"), h.audited("oauth.token")
	if len(auth)+len(tok) > 6 {
		t.Fatalf("%d entries for %d refusals, want at most two per kind", len(auth)+len(tok), 3*n)
	}
	if got := counted(auth); got != 2*n {
		t.Fatalf("client authentication refusals counted %d, want %d", got, 2*n)
	}
	if got := counted(tok); got != n {
		t.Fatalf("token refusals counted %d, want %d", got, n)
	}
	for _, e := range append(auth, tok...) {
		if e.Details["count"] != "" && (e.Details["first"] == "" || e.Details["last"] == "") {
			t.Fatalf("aggregate without its span: %v", e.Details)
		}
	}
	// The next interval starts afresh: a new refusal is recorded at once.
	h.post(nil, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, "web", "wrong")
	if got := len(h.audited("oauth.client_auth")); got != len(auth)+1 {
		t.Fatalf("first refusal of a new interval: %d entries, want %d", got, len(auth)+1)
	}
}

// Finding 4: a signed-in browser's silent sign-ins (prompt=none, GET)
// wrote a family and a code to the store each, unlimited, while the login
// form has a rate limit. They now have one (RateLimits.Authorize): past
// it, the client is told temporarily_unavailable, nothing is written, and
// the refusals are audited counted, one entry per source and interval.
func TestSilentSignInRateLimited(t *testing.T) {
	tight := ratelimit.Limits{PerSource: ratelimit.Rule{Rate: 1, Burst: 5}, Global: ratelimit.Rule{Rate: 1000, Burst: 1000}}
	h := newHarness(t, func(c *oauth.Config) { c.RateLimits.Authorize = tight })
	h.client(store.OAuthClient{ID: "web", AuthMethod: "client_secret_basic", RedirectURIs: []string{redirect}, GrantTypes: []string{"authorization_code"}})
	h.user("alice", "alice-password")
	b := h.browser()
	codeFrom(t, h.login(b, authURL(h, codeQuery("web", fixedCh)), "alice", "alice-password", ""), "s")
	q := codeQuery("web", fixedCh)
	q.Set("prompt", "none")
	const n = 50
	codes, limited := 0, 0
	for range n {
		resp, err := b.Get(authURL(h, q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		switch {
		case loc != nil && loc.Query().Get("code") != "":
			codes++
		case loc != nil && loc.Query().Get("error") == "temporarily_unavailable" && resp.Header.Get("Retry-After") != "":
			limited++
		default:
			t.Fatalf("silent sign-in: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if codes != tight.PerSource.Burst || limited != n-codes {
		t.Fatalf("%d silent sign-ins at once: %d codes, %d refused; want the burst (%d) and the rest refused", n, codes, limited, tight.PerSource.Burst)
	}
	if err := h.p.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	var refusals []*audit.Entry
	for _, e := range h.audited("oauth.rate_limit") {
		if e.Details["limiter"] == "oauth_authorize" {
			refusals = append(refusals, e)
		}
	}
	if len(refusals) != 1 || refusals[0].Details["count"] != strconv.Itoa(limited) {
		t.Fatalf("refusals audited as %d entries (%v), want one counting %d", len(refusals), refusals, limited)
	}
	// It refills: a sign-in a second later is served.
	h.clock.Add(time.Second)
	resp, err := b.Get(authURL(h, q))
	if err != nil {
		t.Fatal(err)
	}
	codeFrom(t, resp, "s")
}
