package signin

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/dpop"
)

// Transport adds a DPoP proof by Key to every request it sends (token,
// device authorization and revocation endpoints), and when the server
// answers with a nonce challenge, sends the request again once with the
// nonce. The nonce is kept for the next requests.
type Transport struct {
	Key  crypto.Signer
	Base http.RoundTripper // nil: http.DefaultTransport
	Now  func() time.Time  // nil: time.Now

	mu    sync.Mutex
	nonce string
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	for attempt := 0; ; attempt++ {
		r := req.Clone(req.Context())
		if req.Body != nil && req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = b
		}
		t.mu.Lock()
		nonce := t.nonce
		t.mu.Unlock()
		proof, err := dpop.NewProof(t.Key, jose.ES256, r.Method, htu(r.URL), "", nonce, t.now())
		if err != nil {
			return nil, err
		}
		r.Header.Set("DPoP", proof)
		resp, err := base.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		if n := resp.Header.Get(dpop.NonceHeader); n != "" {
			t.mu.Lock()
			t.nonce = n
			t.mu.Unlock()
		}
		if attempt > 0 || (resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUnauthorized) || req.Body != nil && req.GetBody == nil {
			return resp, nil
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if _, ok := dpop.IsNonceChallenge(resp, body); !ok {
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
			return resp, nil
		}
	}
}

func (t *Transport) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// htu is the URL a proof names: no query, no fragment (RFC 9449 §4.2).
func htu(u *url.URL) string {
	c := *u
	c.RawQuery, c.Fragment = "", ""
	return c.String()
}

// Metadata is what the CLI needs of the authorization server's (RFC 8414).
type Metadata struct {
	Issuer                      string `json:"issuer"`
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	RevocationEndpoint          string `json:"revocation_endpoint"`
}

// Tokens are what a token endpoint answered.
type Tokens struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type"`
	ExpiresAt    time.Time `json:"expires_at"`
	Scope        string    `json:"scope,omitempty"`
}

// Error is an OAuth error answer (RFC 6749 §5.2).
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	Status      int    `json:"-"`
}

func (e *Error) Error() string {
	if e.Description == "" {
		return "signin: " + e.Code
	}
	return "signin: " + e.Code + ": " + e.Description
}

// Client talks to one authorization server as ClientID.
type Client struct {
	Issuer   string       // https://host:port: where the metadata is fetched
	ClientID string       // operator.ClientID
	HTTP     *http.Client // verifying the server; its Transport is wrapped for DPoP
	Key      crypto.Signer
	Now      func() time.Time

	once sync.Once
	dpop *http.Client
	meta Metadata
	err  error
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// dpopClient is c.HTTP with proofs added.
func (c *Client) dpopClient() *http.Client {
	hc := *c.HTTP
	hc.Transport = &Transport{Key: c.Key, Base: c.HTTP.Transport, Now: c.Now}
	return &hc
}

// Metadata fetches (once) the server's metadata, checking that it is the
// issuer the client was given.
func (c *Client) Metadata(ctx context.Context) (Metadata, error) {
	c.once.Do(func() {
		c.dpop = c.dpopClient()
		var m Metadata
		if err := c.getJSON(ctx, strings.TrimSuffix(c.Issuer, "/")+"/.well-known/oauth-authorization-server", &m); err != nil {
			c.err = err
			return
		}
		// The issuer may be another name of the server (--issuer): its
		// endpoints are where proofs must point (htu), so they are used
		// as published. The server itself was verified by TLS.
		if !strings.HasPrefix(m.Issuer, "https://") || !strings.HasPrefix(m.TokenEndpoint, m.Issuer+"/") {
			c.err = fmt.Errorf("signin: the server's metadata names issuer %q and token endpoint %q: want https, the endpoint under the issuer", m.Issuer, m.TokenEndpoint)
			return
		}
		c.meta = m
	})
	return c.meta, c.err
}

func (c *Client) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("signin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("signin: GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// post sends form to endpoint (with a DPoP proof) and decodes a 200
// answer into out; an OAuth error answer is *Error.
func (c *Client) post(ctx context.Context, endpoint string, form url.Values, out any) error {
	form.Set("client_id", c.ClientID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.dpop.Do(req)
	if err != nil {
		return fmt.Errorf("signin: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("signin: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			return fmt.Errorf("signin: POST %s: %s", endpoint, resp.Status)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
}

func (c *Client) token(ctx context.Context, form url.Values) (*Tokens, error) {
	m, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	var a tokenAnswer
	if err := c.post(ctx, m.TokenEndpoint, form, &a); err != nil {
		return nil, err
	}
	if !strings.EqualFold(a.TokenType, "DPoP") || a.AccessToken == "" {
		return nil, fmt.Errorf("signin: the server issued a %q token, not one bound to the CLI's key (DPoP)", a.TokenType)
	}
	return &Tokens{AccessToken: a.AccessToken, RefreshToken: a.RefreshToken, TokenType: a.TokenType,
		ExpiresAt: c.now().Add(time.Duration(a.ExpiresIn) * time.Second), Scope: a.Scope}, nil
}

// Refresh trades a refresh token for new tokens (the refresh token
// rotates: the old one is spent).
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	return c.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

// Revoke revokes a token (RFC 7009); revoking the refresh token revokes
// its whole login.
func (c *Client) Revoke(ctx context.Context, token, hint string) error {
	m, err := c.Metadata(ctx)
	if err != nil {
		return err
	}
	return c.post(ctx, m.RevocationEndpoint, url.Values{"token": {token}, "token_type_hint": {hint}}, nil)
}

// DeviceAuth is RFC 8628 §3.2.
type DeviceAuth struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

// StartDevice asks for a device code and a user code.
func (c *Client) StartDevice(ctx context.Context) (*DeviceAuth, error) {
	m, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	if m.DeviceAuthorizationEndpoint == "" {
		return nil, errors.New("signin: the server offers no device authorization endpoint")
	}
	var da DeviceAuth
	if err := c.post(ctx, m.DeviceAuthorizationEndpoint, url.Values{"scope": {"openid profile"}}, &da); err != nil {
		return nil, err
	}
	if da.Interval <= 0 {
		da.Interval = 5 // RFC 8628 §3.2 default
	}
	return &da, nil
}

// PollDevice polls the token endpoint until the user approves, denies or
// the code expires (RFC 8628 §3.5): at once, then every interval (grown by
// 5 s on slow_down). wait waits for d or the context's end.
func (c *Client) PollDevice(ctx context.Context, da *DeviceAuth, wait func(context.Context, time.Duration) error) (*Tokens, error) {
	interval := time.Duration(da.Interval) * time.Second
	for {
		t, err := c.token(ctx, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da.DeviceCode}})
		var oe *Error
		switch {
		case err == nil:
			return t, nil
		case errors.As(err, &oe) && oe.Code == "authorization_pending":
		case errors.As(err, &oe) && oe.Code == "slow_down":
			interval += 5 * time.Second
		default:
			return nil, err
		}
		if err := wait(ctx, interval); err != nil {
			return nil, err
		}
	}
}

// Approve approves a device sign-in as username, without a browser: the
// verification endpoint's JSON form, with the same login (password, and
// the one-time code if the user has TOTP) as the page.
func Approve(ctx context.Context, hc *http.Client, issuer, userCode, username, password, otp string) error {
	form := url.Values{"user_code": {userCode}, "username": {username}, "password": {password}, "otp": {otp}, "action": {"allow"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(issuer, "/")+"/oauth2/device", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("signin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := &Error{Status: resp.StatusCode}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(e) != nil || e.Code == "" {
		return fmt.Errorf("signin: approve: %s", resp.Status)
	}
	return e
}

// Loopback signs in through the browser (RFC 8252): it listens on
// 127.0.0.1, port chosen by the kernel, calls open with the authorization
// URL, and waits for the redirect carrying the code (or ctx's end).
func (c *Client) Loopback(ctx context.Context, open func(authURL string) error) (*Tokens, error) {
	m, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("signin: listen on loopback: %w", err)
	}
	defer ln.Close()
	redirect := "http://" + ln.Addr().String() + "/callback"
	verifier, state := random(), random()
	sum := sha256.Sum256([]byte(verifier))
	jkt, err := dpop.Thumbprint(c.Key.Public())
	if err != nil {
		return nil, err
	}
	q := url.Values{"response_type": {"code"}, "client_id": {c.ClientID}, "redirect_uri": {redirect}, "scope": {"openid profile"},
		"state": {state}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"dpop_jkt": {jkt}}
	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		v := r.URL.Query()
		var res result
		switch {
		case v.Get("state") != state:
			// Not our request (another page's, or forged): ignore it,
			// keep waiting for ours.
			http.Error(w, "state does not match this sign-in", http.StatusBadRequest)
			return
		case v.Get("iss") != m.Issuer:
			res.err = fmt.Errorf("signin: the answer names issuer %q, not %q (RFC 9207)", v.Get("iss"), m.Issuer)
		case v.Get("error") != "":
			res.err = &Error{Code: v.Get("error"), Description: v.Get("error_description")}
		default:
			res.code = v.Get("code")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if res.err != nil {
			fmt.Fprintln(w, "Sign-in failed; see the terminal.")
		} else {
			fmt.Fprintln(w, "Signed in. You can close this page and go back to the terminal.")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if err := open(m.AuthorizationEndpoint + "?" + q.Encode()); err != nil {
		return nil, err
	}
	var res result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res = <-done:
	}
	if res.err != nil {
		return nil, res.err
	}
	return c.token(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {res.code}, "redirect_uri": {redirect}, "code_verifier": {verifier}})
}

func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("signin: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
