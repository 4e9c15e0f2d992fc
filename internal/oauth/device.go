package oauth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// The OAuth 2.0 Device Authorization Grant (RFC 8628): a client without a
// browser (the CLI on a server, over SSH) asks for a device code and a
// short user code, the user opens the verification page anywhere, signs
// in (password and one-time code, the same login with the same back-off
// and audit as the authorization endpoint) and approves the code; the
// client polls the token endpoint until then.
//
// User codes are 8 letters from a 20-letter alphabet without vowels
// (RFC 8628 §6.1: about 34.5 bits, no words), shown as XXXX-XXXX; the
// verification endpoint hashes a password per attempt and is rate
// limited like the login form, so guessing codes is slow and audited.
// A device code is approved once and redeemed once (store.OperatorStore's
// PollDeviceCode). Polling faster than the interval is slow_down, and the
// interval grows by 5 seconds each time (§3.5).

// Device flow paths and values.
const (
	PathDeviceAuthorization = "/oauth2/device_authorization"
	PathDevice              = "/oauth2/device"
	// GrantDeviceCode is the RFC 8628 grant type.
	GrantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"
	// DefaultDeviceCodeTTL is how long a user has to approve.
	DefaultDeviceCodeTTL = 10 * time.Minute
	// DeviceInterval is the polling interval clients start with.
	DeviceInterval   = 5 * time.Second
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
)

// deviceStore is what the device flow keeps (store.OperatorStore has it).
type deviceStore interface {
	CreateDeviceCode(ctx context.Context, d store.DeviceCode) error
	GetDeviceCodeByUser(ctx context.Context, userHash []byte) (store.DeviceCode, error)
	DecideDeviceCode(ctx context.Context, userHash []byte, approve bool, subject string, data []byte, now time.Time) error
	PollDeviceCode(ctx context.Context, deviceHash []byte, now time.Time) (store.DeviceCode, bool, error)
}

// deviceData is the login that approved a device code.
type deviceData struct {
	AuthTime int64    `json:"auth_time"`
	AMR      []string `json:"amr"`
}

// amrOf says how u's login was proven (RFC 8176): a password, and a
// one-time code if the user has TOTP (login refuses them without one).
func amrOf(u store.OAuthUser) []string {
	if u.TOTPSecret != nil {
		return []string{"pwd", "otp", "mfa"}
	}
	return []string{"pwd"}
}

func (p *Provider) devices() (deviceStore, bool) {
	d, ok := p.cfg.Store.(deviceStore)
	return d, ok
}

// newUserCode returns a random user code, normalised (no dash).
func newUserCode() string {
	b := make([]byte, userCodeLen)
	out := make([]byte, userCodeLen)
	// Rejection sampling: 256 is not a multiple of 20; 240 is.
	for i := 0; i < userCodeLen; {
		if _, err := rand.Read(b); err != nil {
			panic("oauth: crypto/rand failed: " + err.Error())
		}
		for _, c := range b {
			if c < 240 && i < userCodeLen {
				out[i] = userCodeAlphabet[int(c)%len(userCodeAlphabet)]
				i++
			}
		}
	}
	return string(out)
}

// NormalizeUserCode upper-cases a typed user code and drops dashes and
// spaces; "" if what is left is not a user code.
func NormalizeUserCode(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToUpper(strings.TrimSpace(s)))
	if len(s) != userCodeLen || strings.Trim(s, userCodeAlphabet) != "" {
		return ""
	}
	return s
}

// FormatUserCode shows a normalised user code as XXXX-XXXX.
func FormatUserCode(s string) string { return s[:4] + "-" + s[4:] }

// deviceAuthResponse is RFC 8628 §3.2.
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

// handleDeviceAuthorization is RFC 8628 §3.1: the client asks for codes.
func (p *Provider) handleDeviceAuthorization(w http.ResponseWriter, r *http.Request) {
	ds, ok := p.devices()
	if !ok {
		writeOAuthError(w, errf(http.StatusNotImplemented, "unsupported_grant_type", "this server's store keeps no device codes"))
		return
	}
	c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	if !slices.Contains(c.GrantTypes, GrantDeviceCode) {
		writeOAuthError(w, errf(http.StatusBadRequest, "unauthorized_client", "client %s may not use the device authorization grant", c.ID))
		return
	}
	scope := strings.Fields(r.PostForm.Get("scope"))
	for _, s := range scope {
		if !slices.Contains(c.Scopes, s) && !slices.Contains(standardScopes, s) {
			writeOAuthError(w, errf(http.StatusBadRequest, "invalid_scope", "scope %q is not allowed for client %s", s, c.ID))
			return
		}
	}
	now := p.cfg.Now()
	device, user := randomToken(), newUserCode()
	err := ds.CreateDeviceCode(r.Context(), store.DeviceCode{DeviceHash: hashToken(device), UserHash: hashToken(user), ClientID: c.ID,
		Scope: strings.Join(scope, " "), ExpiresAt: now.Add(DefaultDeviceCodeTTL), Interval: p.cfg.DeviceInterval, CreatedAt: now})
	if err != nil {
		p.cfg.Log.Error("storing a device code failed", "err", err)
		writeOAuthError(w, err)
		return
	}
	p.record(r, "oauth.device_authorization", audit.OutcomeSuccess, "", "client_id", c.ID)
	uri := p.cfg.Issuer + PathDevice
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, deviceAuthResponse{DeviceCode: device, UserCode: FormatUserCode(user), VerificationURI: uri,
		VerificationURIComplete: uri + "?user_code=" + FormatUserCode(user), ExpiresIn: int64(DefaultDeviceCodeTTL / time.Second),
		Interval: int64(p.cfg.DeviceInterval / time.Second)})
}

// deviceGrant redeems an approved device code (RFC 8628 §3.4, §3.5).
func (p *Provider) deviceGrant(r *http.Request, c *authedClient) (*tokenResponse, error) {
	ds, ok := p.devices()
	if !ok {
		return nil, errf(http.StatusBadRequest, "unsupported_grant_type", "this server's store keeps no device codes")
	}
	code := r.PostForm.Get("device_code")
	if code == "" {
		return nil, errf(http.StatusBadRequest, "invalid_request", "device_code is required")
	}
	now := p.cfg.Now()
	d, slow, err := ds.PollDeviceCode(r.Context(), hashToken(code), now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errf(http.StatusBadRequest, "invalid_grant", "device_code unknown or long expired")
	case err != nil:
		return nil, err
	case d.ClientID != c.ID:
		return nil, errf(http.StatusBadRequest, "invalid_grant", "device_code was issued to another client")
	case !now.Before(d.ExpiresAt):
		return nil, errf(http.StatusBadRequest, "expired_token", "the device code expired; start again")
	case slow:
		return nil, errf(http.StatusBadRequest, "slow_down", "polling faster than every %d s; wait %d s more between polls",
			int64(d.Interval/time.Second), int64(d.Interval/time.Second)+5)
	case d.Status == store.DevicePending:
		return nil, errf(http.StatusBadRequest, "authorization_pending", "the user has not approved yet")
	case d.Status == store.DeviceDenied:
		return nil, errf(http.StatusBadRequest, "access_denied", "the user denied the request")
	case d.Status != store.DeviceApproved:
		return nil, errf(http.StatusBadRequest, "invalid_grant", "device_code already used")
	}
	var dd deviceData
	if err := json.Unmarshal(d.Data, &dd); err != nil {
		return nil, fmt.Errorf("oauth: device code data: %w", err)
	}
	u, err := p.cfg.Store.GetOAuthUser(r.Context(), d.Subject)
	// Disabled (or deleted and made again) since the approval: the login
	// is void, as a login session would be.
	if err != nil || u.Disabled || (!u.RevokedAt.IsZero() && dd.AuthTime <= u.RevokedAt.Unix()) || dd.AuthTime < u.CreatedAt.Unix() {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the user is no longer active")
	}
	scope := strings.Fields(d.Scope)
	family := randomToken()[:22]
	end := now.Add(p.cfg.AccessTokenTTL)
	if slices.Contains(c.GrantTypes, "refresh_token") {
		end = now.Add(p.cfg.RefreshTokenTTL)
	}
	if err := p.cfg.Store.PutOAuthFamily(r.Context(), store.OAuthFamily{ID: family, ClientID: c.ID, Subject: u.Username,
		ExpiresAt: end, CreatedAt: now}); err != nil {
		return nil, err
	}
	resp, err := p.issue(r, c, issueParams{subject: u.Username, groups: u.Groups, scope: scope, audience: defaultAudience(c),
		sid: family, authTime: dd.AuthTime, amr: dd.AMR, grant: GrantDeviceCode, ttl: p.cfg.AccessTokenTTL})
	if err != nil {
		return nil, err
	}
	if slices.Contains(c.GrantTypes, "refresh_token") {
		fam := refreshData{Scope: scope, AuthTime: dd.AuthTime, AMR: dd.AMR, FamilyExpires: end.Unix()}
		if c.AuthMethod == "none" {
			fam.JKT = c.dpopJKT // RFC 9449 §5, as for codes
		}
		if resp.RefreshToken, err = p.newRefresh(r, c.ID, u.Username, family, fam); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// handleDevice is the verification page (GET, with ?user_code= from the
// verification_uri_complete) and its form (POST): user code, username,
// password, one-time code, and allow or deny. A client that sends
// Accept: application/json gets JSON and needs no form token: that is how
// "rampart login approve" approves without a browser (with the same
// login, back-off and audit).
func (p *Provider) handleDevice(w http.ResponseWriter, r *http.Request) {
	jsonMode := strings.Contains(r.Header.Get("Accept"), "application/json")
	if r.Method == http.MethodGet {
		p.devicePage(w, r, NormalizeUserCode(r.URL.Query().Get("user_code")), "", http.StatusOK)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		p.deviceAnswer(w, r, jsonMode, "", errf(http.StatusBadRequest, "invalid_request", "malformed form body"))
		return
	}
	now := p.cfg.Now()
	if !jsonMode && !p.checkCSRF(r, now) {
		p.errorPage(w, errf(http.StatusForbidden, "invalid_request", "the form expired or did not come from this server; start again"))
		return
	}
	ds, ok := p.devices()
	if !ok {
		p.deviceAnswer(w, r, jsonMode, "", errf(http.StatusNotImplemented, "server_error", "this server's store keeps no device codes"))
		return
	}
	code := NormalizeUserCode(r.PostForm.Get("user_code"))
	if code == "" {
		p.deviceAnswer(w, r, jsonMode, "", errf(http.StatusBadRequest, "invalid_request", "user_code: want the 8 letters the terminal shows (XXXX-XXXX)"))
		return
	}
	// The login first, whatever the code: an attempt costs a password
	// hash either way, and a wrong code tells nothing about accounts.
	username := r.PostForm.Get("username")
	u, err := p.login(r.Context(), username, r.PostForm.Get("password"), r.PostForm.Get("otp"))
	var le *loginError
	switch {
	case errors.As(err, &le):
		p.record(r, "oauth.login", audit.OutcomeFailure, le.reason, "username", username, "user", "anonymous", "flow", "device")
		p.deviceAnswer(w, r, jsonMode, code, errf(http.StatusUnauthorized, "access_denied", "wrong username, password or one-time code, or the account is locked"))
		return
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		p.deviceAnswer(w, r, jsonMode, code, errf(http.StatusServiceUnavailable, "temporarily_unavailable", "the server is busy signing other people in; try again in a moment"))
		return
	case err != nil:
		p.cfg.Log.Error("device login failed", "err", err)
		p.deviceAnswer(w, r, jsonMode, code, errf(http.StatusInternalServerError, "server_error", "internal error"))
		return
	}
	amr := amrOf(u)
	p.record(r, "oauth.login", audit.OutcomeSuccess, "", "username", u.Username, "user", u.Username, "flow", "device",
		"mfa", strconv.FormatBool(u.TOTPSecret != nil))
	d, err := ds.GetDeviceCodeByUser(r.Context(), hashToken(code))
	if errors.Is(err, store.ErrNotFound) || err == nil && !now.Before(d.ExpiresAt) {
		p.record(r, "oauth.device_approve", audit.OutcomeDenied, "unknown or expired user code", "user", u.Username)
		p.deviceAnswer(w, r, jsonMode, "", errf(http.StatusBadRequest, "invalid_grant", "no pending sign-in has this code, or it expired; start again in the terminal"))
		return
	}
	if err != nil {
		p.deviceAnswer(w, r, jsonMode, code, err)
		return
	}
	approve := r.PostForm.Get("action") != "deny"
	data, _ := json.Marshal(deviceData{AuthTime: now.Unix(), AMR: amr})
	err = ds.DecideDeviceCode(r.Context(), hashToken(code), approve, u.Username, data, now)
	if errors.Is(err, store.ErrStateConflict) {
		p.record(r, "oauth.device_approve", audit.OutcomeDenied, "user code already decided", "user", u.Username, "client_id", d.ClientID)
		p.deviceAnswer(w, r, jsonMode, "", errf(http.StatusConflict, "invalid_grant", "this code was already approved or denied"))
		return
	}
	if err != nil {
		p.deviceAnswer(w, r, jsonMode, code, err)
		return
	}
	outcome, reason := audit.OutcomeSuccess, ""
	if !approve {
		outcome, reason = audit.OutcomeDenied, "user denied"
	}
	p.record(r, "oauth.device_approve", outcome, reason, "user", u.Username, "client_id", d.ClientID, "amr", strings.Join(amr, " "))
	if jsonMode {
		writeJSON(w, http.StatusOK, map[string]any{"approved": approve, "user": u.Username, "client_id": d.ClientID})
		return
	}
	msg := "Signed in. You can close this page and go back to the terminal."
	if !approve {
		msg = "Denied. The terminal that asked is told so."
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	deviceTmpl.Execute(w, devicePageData{Title: "Done", Done: msg})
}

func (p *Provider) deviceAnswer(w http.ResponseWriter, r *http.Request, jsonMode bool, code string, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		p.cfg.Log.Error("device verification failed", "err", err)
		oe = errf(http.StatusInternalServerError, "server_error", "internal error")
	}
	if jsonMode {
		writeOAuthError(w, oe)
		return
	}
	p.devicePage(w, r, code, oe.Description, oe.Status)
}

type devicePageData struct {
	Title, Error, Code, CSRF, Action, Done string
}

var deviceTmpl = template.Must(template.New("device").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} - Rampart</title>
<style>body{font:1.1rem/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#111}
label{display:block;margin-top:1rem;font-weight:600}input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}
button{font-size:1rem;padding:.6rem 1.2rem;margin:1.5rem .5rem 0 0}.err{color:#a00;font-weight:600}</style></head>
<body><main>
<h1>{{.Title}}</h1>
{{if .Done}}<p>{{.Done}}</p>{{else}}
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
<p>A terminal asks to act as you. Only go on if you started <code>rampart login</code> yourself just now and it shows this code.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="user_code">Code shown in the terminal</label><input id="user_code" name="user_code" value="{{.Code}}" autocomplete="off" required autofocus>
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="otp">One-time code</label><input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*">
<button type="submit" name="action" value="allow">Sign in and allow</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>{{end}}
</main></body></html>
`))

func (p *Provider) devicePage(w http.ResponseWriter, r *http.Request, code, msg string, status int) {
	d := devicePageData{Title: "Sign in a terminal", Error: msg, Action: PathDevice, CSRF: p.csrfToken(w, r, p.cfg.Now())}
	if code != "" {
		d.Code = FormatUserCode(code)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	deviceTmpl.Execute(w, d)
}
