package oauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/ratelimit"
	"github.com/rampartsec/rampart/internal/store"
)

const (
	sessionCookie = "__Host-rampart_session"
	csrfCookie    = "__Host-rampart_csrf"
)

// standardScopes may be asked for by any client.
var standardScopes = []string{"openid", "profile", "email", "groups", "offline_access"}

// authzRequest is a validated authorization request.
type authzRequest struct {
	client      store.OAuthClient
	redirectURI string
	state       string
	scope       []string
	nonce       string
	challenge   string
	prompt      []string
	maxAge      int // -1: none
	resource    []string
	dpopJKT     string // RFC 9449 §10: the code may only be redeemed with a proof by this key
}

// codeData is what an authorisation code grants, stored with it.
type codeData struct {
	RedirectURI string   `json:"redirect_uri"`
	Scope       []string `json:"scope"`
	Nonce       string   `json:"nonce,omitempty"`
	Challenge   string   `json:"challenge,omitempty"`
	AuthTime    int64    `json:"auth_time"`
	Audience    []string `json:"audience,omitempty"`
	DPoPJKT     string   `json:"dpop_jkt,omitempty"`
	AMR         []string `json:"amr,omitempty"`
}

var challengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// parseAuthz validates an authorization request. A bad client or redirect
// URI is reported to the user (redirectable false), never to the redirect
// URI: redirecting there would make this server an open redirector.
func (p *Provider) parseAuthz(r *http.Request, q url.Values) (req *authzRequest, redirectable bool, err error) {
	for k, vs := range q {
		if len(vs) > 1 {
			return nil, false, errf(http.StatusBadRequest, "invalid_request", "parameter %s given more than once", k)
		}
	}
	if q.Has("request") || q.Has("request_uri") {
		return nil, false, errf(http.StatusBadRequest, "request_not_supported", "request objects are not supported")
	}
	c, err := p.cfg.Store.GetOAuthClient(r.Context(), q.Get("client_id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, errf(http.StatusBadRequest, "invalid_request", "unknown client_id %q", q.Get("client_id"))
	}
	if err != nil {
		return nil, false, err
	}
	if c.Disabled {
		return nil, false, errf(http.StatusBadRequest, "unauthorized_client", "client %q is disabled", c.ID)
	}
	req = &authzRequest{client: c, state: q.Get("state"), nonce: q.Get("nonce"), maxAge: -1}
	switch ru := q.Get("redirect_uri"); {
	case ru == "" && len(c.RedirectURIs) == 1:
		req.redirectURI = c.RedirectURIs[0]
	case ru == "":
		return nil, false, errf(http.StatusBadRequest, "invalid_request", "redirect_uri is required")
	case !redirectAllowed(c.RedirectURIs, ru):
		// Exact string match only (RFC 9700 §4.1.3): no prefixes, no
		// extra path, no wildcard; the one allowance is the port of a
		// native app's loopback redirect (RFC 8252 §7.3, loopback.go).
		return nil, false, errf(http.StatusBadRequest, "invalid_request", "redirect_uri %q is not registered for client %s", ru, c.ID)
	default:
		req.redirectURI = ru
	}
	if q.Get("response_type") != "code" {
		return req, true, errf(http.StatusBadRequest, "unsupported_response_type", "response_type must be code")
	}
	if !slices.Contains(c.GrantTypes, "authorization_code") {
		return req, true, errf(http.StatusBadRequest, "unauthorized_client", "client %s may not use the authorization code grant", c.ID)
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		return req, true, errf(http.StatusBadRequest, "invalid_request", "response_mode %q is not supported (query only)", rm)
	}
	// PKCE for every client, confidential ones too (RFC 9700 §2.1.1): a
	// code stolen from, or injected into, a client's callback is useless
	// without the verifier the client kept. S256 only: plain would send
	// the verifier itself through the browser.
	switch m := q.Get("code_challenge_method"); {
	case q.Get("code_challenge") == "":
		return req, true, errf(http.StatusBadRequest, "invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
	case m != "S256":
		return req, true, errf(http.StatusBadRequest, "invalid_request", "code_challenge_method %q is not allowed: only S256", m)
	case !challengeRE.MatchString(q.Get("code_challenge")):
		return req, true, errf(http.StatusBadRequest, "invalid_request", "code_challenge must be 43 base64url characters (a SHA-256)")
	}
	req.challenge = q.Get("code_challenge")
	req.scope = strings.Fields(q.Get("scope"))
	for _, s := range req.scope {
		if !slices.Contains(c.Scopes, s) && !slices.Contains(standardScopes, s) {
			return req, true, errf(http.StatusBadRequest, "invalid_scope", "scope %q is not allowed for client %s", s, c.ID)
		}
	}
	if slices.Contains(req.scope, "offline_access") && !slices.Contains(c.GrantTypes, "refresh_token") {
		return req, true, errf(http.StatusBadRequest, "invalid_scope", "offline_access needs the refresh_token grant, which client %s may not use", c.ID)
	}
	req.prompt = strings.Fields(q.Get("prompt"))
	if slices.Contains(req.prompt, "none") && len(req.prompt) > 1 {
		return req, true, errf(http.StatusBadRequest, "invalid_request", "prompt=none cannot be combined with other values")
	}
	if ma := q.Get("max_age"); ma != "" {
		n, err := strconv.Atoi(ma)
		if err != nil || n < 0 {
			return req, true, errf(http.StatusBadRequest, "invalid_request", "max_age must be a non-negative integer")
		}
		req.maxAge = n
	}
	if res := q.Get("resource"); res != "" {
		req.resource = []string{res}
	}
	if jkt := q.Get("dpop_jkt"); jkt != "" {
		if !challengeRE.MatchString(jkt) {
			return req, true, errf(http.StatusBadRequest, "invalid_request", "dpop_jkt must be a base64url SHA-256 JWK thumbprint")
		}
		req.dpopJKT = jkt
	}
	if err := checkAudience(c, req.resource); err != nil {
		return req, true, err
	}
	return req, true, nil
}

// checkAudience refuses resources the client may not get tokens for.
func checkAudience(c store.OAuthClient, aud []string) error {
	for _, a := range aud {
		if !slices.Contains(c.Audience, a) {
			return errf(http.StatusBadRequest, "invalid_target", "client %s may not get tokens for %q", c.ID, a)
		}
	}
	return nil
}

func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	var params url.Values
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			p.errorPage(w, errf(http.StatusBadRequest, "invalid_request", "malformed form"))
			return
		}
		params = url.Values{}
		for _, k := range authzParams {
			if v, ok := r.PostForm[k]; ok {
				params[k] = v
			}
		}
	} else {
		params = r.URL.Query()
	}
	req, redirectable, err := p.parseAuthz(r, params)
	if err != nil {
		if redirectable {
			p.redirectError(w, r, req, err)
		} else {
			p.errorPage(w, err)
		}
		return
	}
	now := p.cfg.Now()
	sess, hasSession := p.readSession(r, now)
	if hasSession {
		// A session proves an earlier login; failed logins by someone
		// else (a back-off) do not end it, disabling the user does, and
		// so does every revocation of the user's sessions since.
		// (A user deleted and created again under the same name is
		// another user: a session from before the creation is void.)
		if u, err := p.cfg.Store.GetOAuthUser(r.Context(), sess.User); err != nil || u.Disabled ||
			sess.AuthTime <= u.RevokedAt.Unix() || sess.AuthTime < u.CreatedAt.Unix() {
			hasSession = false
		}
	}
	fresh := hasSession && !slices.Contains(req.prompt, "login") &&
		(req.maxAge < 0 || now.Unix()-sess.AuthTime <= int64(req.maxAge))

	// A silent sign-in (a GET with a session, prompt=none or none given)
	// writes a family and a code like a login form does, but passes no
	// login limit: it has its own (refusals counted and audited by the
	// limiter, oauth.rate_limit).
	if r.Method == http.MethodGet && fresh && !slices.Contains(req.prompt, "consent") {
		if d := p.limits.authorize.Allow(ratelimit.Source(r)); !d.Allowed {
			w.Header().Set("Retry-After", d.RetryAfter())
			p.redirectError(w, r, req, errf(http.StatusTooManyRequests, "temporarily_unavailable",
				"too many sign-in requests; retry after %s s", d.RetryAfter()))
			return
		}
	}

	if r.Method == http.MethodGet {
		switch {
		case slices.Contains(req.prompt, "none") && !fresh:
			p.redirectError(w, r, req, errf(http.StatusBadRequest, "login_required", "no login session"))
		case fresh && !slices.Contains(req.prompt, "consent"):
			p.issueCode(w, r, req, sess.User, sess.AuthTime, sess.AMR)
		default:
			p.loginPage(w, r, req, fresh, "", http.StatusOK)
		}
		return
	}

	// POST: the login (and consent) form.
	if !p.checkCSRF(r, now) {
		p.errorPage(w, errf(http.StatusForbidden, "invalid_request", "the form expired or did not come from this server; start again from the application"))
		return
	}
	if r.PostForm.Get("action") == "deny" {
		p.record(r, "oauth.consent", audit.OutcomeDenied, "user denied", "client_id", req.client.ID, "user", sess.User)
		p.redirectError(w, r, req, errf(http.StatusBadRequest, "access_denied", "the user denied the request"))
		return
	}
	if fresh && r.PostForm.Get("username") == "" {
		p.issueCode(w, r, req, sess.User, sess.AuthTime, sess.AMR)
		return
	}
	username := r.PostForm.Get("username")
	u, err := p.login(r.Context(), username, r.PostForm.Get("password"), r.PostForm.Get("otp"))
	var le *loginError
	if errors.As(err, &le) {
		// The typed name is a claim, not a proven actor (it may even be
		// "admin"): the entry's actor is anonymous, the claim a detail,
		// and the target (so that repeats are counted per account, which
		// the login-failures rule counts by).
		p.record(r, "oauth.login", audit.OutcomeFailure, le.reason, "username", username, "user", "anonymous", "client_id", req.client.ID,
			"target", "user "+claimed(username))
		p.loginPage(w, r, req, false, "Wrong username, password or one-time code, or the account is locked. Try again.", http.StatusUnauthorized)
		return
	}
	if errors.Is(err, errBusy) {
		// Load, not a failed login: not counted, retried shortly, and
		// audited counted by Maintain (a flood is not one entry each).
		w.Header().Set("Retry-After", "1")
		p.errorPage(w, errf(http.StatusServiceUnavailable, "temporarily_unavailable", "the server is busy signing other people in; try again in a moment"))
		return
	}
	if err != nil {
		p.cfg.Log.Error("login failed", "err", err)
		p.errorPage(w, errf(http.StatusInternalServerError, "server_error", "internal error"))
		return
	}
	p.record(r, "oauth.login", audit.OutcomeSuccess, "", "username", u.Username, "user", u.Username, "client_id", req.client.ID,
		"mfa", strconv.FormatBool(u.TOTPSecret != nil))
	p.setSession(w, session{User: u.Username, AuthTime: now.Unix(), Expires: now.Add(p.cfg.SessionTTL).Unix(), AMR: amrOf(u)})
	p.issueCode(w, r, req, u.Username, now.Unix(), amrOf(u))
}

// authzParams are the request parameters carried through the login form.
var authzParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method", "prompt", "max_age", "resource", "response_mode", "dpop_jkt"}

func (p *Provider) issueCode(w http.ResponseWriter, r *http.Request, req *authzRequest, user string, authTime int64, amr []string) {
	now := p.cfg.Now()
	code := randomToken()
	data, _ := json.Marshal(codeData{RedirectURI: req.redirectURI, Scope: req.scope, Nonce: req.nonce,
		Challenge: req.challenge, AuthTime: authTime, Audience: req.resource, DPoPJKT: req.dpopJKT, AMR: amr})
	// The login's family is recorded before the code leaves, with the end
	// of the last token it can lead to, so disabling the user or the
	// client finds it.
	family := randomToken()[:22]
	end := now.Add(p.cfg.CodeTTL + p.cfg.AccessTokenTTL + revocationGrace)
	if slices.Contains(req.client.GrantTypes, "refresh_token") {
		end = end.Add(p.cfg.RefreshTokenTTL)
	}
	err := p.cfg.Store.PutOAuthFamily(r.Context(), store.OAuthFamily{ID: family, ClientID: req.client.ID, Subject: user,
		ExpiresAt: end, CreatedAt: now})
	if err == nil {
		err = p.cfg.Store.PutOAuthGrant(r.Context(), store.OAuthGrant{Hash: hashToken(code), Kind: store.GrantCode,
			Family: family, ClientID: req.client.ID, Subject: user, Data: data,
			ExpiresAt: now.Add(p.cfg.CodeTTL), CreatedAt: now})
	}
	if err != nil {
		p.cfg.Log.Error("storing authorization code failed", "err", err)
		p.redirectError(w, r, req, errf(http.StatusInternalServerError, "server_error", "internal error"))
		return
	}
	p.redirect(w, r, req, url.Values{"code": {code}})
}

func (p *Provider) redirect(w http.ResponseWriter, r *http.Request, req *authzRequest, v url.Values) {
	u, _ := url.Parse(req.redirectURI)
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	if req.state != "" {
		q.Set("state", req.state)
	}
	q.Set("iss", p.cfg.Issuer) // RFC 9207: defeats mix-up attacks
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (p *Provider) redirectError(w http.ResponseWriter, r *http.Request, req *authzRequest, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		oe = errf(http.StatusInternalServerError, "server_error", "internal error")
	}
	p.redirect(w, r, req, url.Values{"error": {oe.Code}, "error_description": {oe.Description}})
}

// session is the single sign-on cookie's content, MACed with the
// provider's session key.
type session struct {
	User     string   `json:"u"`
	AuthTime int64    `json:"at"`
	Expires  int64    `json:"exp"`
	AMR      []string `json:"amr,omitempty"`
}

func (p *Provider) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, p.sessionKey)
	for _, s := range parts {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func (p *Provider) setSession(w http.ResponseWriter, s session) {
	payload, _ := json.Marshal(s)
	v := base64.RawURLEncoding.EncodeToString(payload)
	v += "." + base64.RawURLEncoding.EncodeToString(p.mac("session", v))
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: v, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(p.cfg.SessionTTL / time.Second)})
}

func (p *Provider) readSession(r *http.Request, now time.Time) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	payload, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return session{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, p.mac("session", payload)) {
		return session{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	var s session
	if err != nil || json.Unmarshal(raw, &s) != nil || now.Unix() >= s.Expires || s.User == "" {
		return session{}, false
	}
	return s, true
}

// csrfToken returns the form token for this browser, setting the cookie it
// is checked against (double submit: a cross-site form cannot read it).
// The token is "ISSUED.MAC" with ISSUED the Unix time it was made: it is
// accepted for CSRFTTL, so a form kept or stolen is not good forever.
func (p *Provider) csrfToken(w http.ResponseWriter, r *http.Request, now time.Time) string {
	v := ""
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		v = c.Value
	} else {
		v = randomToken()
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	issued := strconv.FormatInt(now.Unix(), 10)
	return issued + "." + base64.RawURLEncoding.EncodeToString(p.mac("csrf", v, issued))
}

func (p *Provider) checkCSRF(r *http.Request, now time.Time) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil {
		return false
	}
	issued, sig, ok := strings.Cut(r.PostForm.Get("csrf"), ".")
	t, err := strconv.ParseInt(issued, 10, 64)
	if !ok || err != nil {
		return false
	}
	// Made within CSRFTTL, and not in the future (a minute of slack for
	// replicas whose clocks differ).
	if age := now.Sub(time.Unix(t, 0)); age > p.cfg.CSRFTTL || age < -time.Minute {
		return false
	}
	want := base64.RawURLEncoding.EncodeToString(p.mac("csrf", c.Value, issued))
	return subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} - Rampart</title>
<style>body{font:1.1rem/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#111}
label{display:block;margin-top:1rem;font-weight:600}input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}
button{font-size:1rem;padding:.6rem 1.2rem;margin:1.5rem .5rem 0 0}.err{color:#a00;font-weight:600}</style></head>
<body><main>
<h1>{{.Title}}</h1>
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
{{if .Client}}<p><strong>{{.Client}}</strong> asks to use your identity{{if .Scopes}} with: {{range $i, $s := .Scopes}}{{if $i}}, {{end}}{{$s}}{{end}}{{end}}.</p>
<form method="post" action="{{.Action}}">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<input type="hidden" name="csrf" value="{{.CSRF}}">
{{if .Signed}}<p>Signed in as <strong>{{.User}}</strong>.</p>{{else}}
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="otp">One-time code (if you set up two-factor sign-in)</label><input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*">
{{end}}
<button type="submit" name="action" value="allow">{{if .Signed}}Allow{{else}}Sign in and allow{{end}}</button>
<button type="submit" name="action" value="deny" formnovalidate>Deny</button>
</form>{{end}}
</main></body></html>
`))

type pageData struct {
	Title, Error, Client, Action, CSRF, User string
	Scopes                                   []string
	Params                                   map[string]string
	Signed                                   bool
}

func (p *Provider) loginPage(w http.ResponseWriter, r *http.Request, req *authzRequest, signed bool, msg string, status int) {
	params := map[string]string{}
	src := r.URL.Query()
	if r.Method == http.MethodPost {
		src = r.PostForm
	}
	for _, k := range authzParams {
		if v := src.Get(k); v != "" {
			params[k] = v
		}
	}
	name := req.client.Name
	if name == "" {
		name = req.client.ID
	}
	d := pageData{Title: "Sign in", Error: msg, Client: name, Action: PathAuthorize, CSRF: p.csrfToken(w, r, p.cfg.Now()),
		Scopes: req.scope, Params: params, Signed: signed}
	if signed {
		d.Title = "Allow access"
		s, _ := p.readSession(r, p.cfg.Now())
		d.User = s.User
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	pageTmpl.Execute(w, d)
}

func (p *Provider) errorPage(w http.ResponseWriter, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		oe = errf(http.StatusInternalServerError, "server_error", "internal error")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(oe.Status)
	pageTmpl.Execute(w, pageData{Title: "Sign-in request refused", Error: fmt.Sprintf("%s: %s", oe.Code, oe.Description)})
}
