package demo

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/oauth"
)

// The demo's OAuth client and users. The passwords are printed at start:
// this is a demo on loopback, not a deployment.
const (
	shopClient   = "shop"
	ordersClient = "orders"
	shopCallback = "http://127.0.0.1:9/callback"
	demoPassword = "rampart-demo-password"
)

// ensureOAuth registers the shop (a public client: PKCE, no secret to keep
// across restarts; its tokens are addressed to the gateway and to orders,
// which the gateway calls with them), orders (which exchanges a user's
// token for one addressed to payments, authenticating with its SVID) and the
// users alice and bob, unless they exist.
func ensureOAuth(ctx context.Context, admin *api.Client) error {
	td := "spiffe://" + TrustDomain.Name()
	clients := []api.OAuthClient{
		{ID: shopClient, Name: "Demo shop", AuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{shopCallback},
			Audience: []string{td + "/gateway", td + "/orders"}},
		{ID: ordersClient, Name: "Orders (acts for the user towards payments)", AuthMethod: "tls_client_auth", SPIFFEID: td + "/orders",
			GrantTypes: []string{oauth.GrantTokenExchange}, Audience: []string{td + "/payments"}},
	}
	for _, c := range clients {
		var have api.OAuthClient
		if err := admin.Do(ctx, http.MethodGet, "/v1/oauth/clients/"+c.ID, nil, &have); err == nil {
			if sameSet(have.Audience, c.Audience) && sameSet(have.GrantTypes, c.GrantTypes) {
				continue
			}
			// A data dir from an older demo: neither client holds a
			// secret, so it is registered afresh.
			if err := admin.Do(ctx, http.MethodDelete, "/v1/oauth/clients/"+c.ID, nil, nil); err != nil {
				return fmt.Errorf("demo: oauth client %s: %w", c.ID, err)
			}
		}
		if err := admin.Do(ctx, http.MethodPost, "/v1/oauth/clients", c, nil); err != nil {
			return fmt.Errorf("demo: oauth client %s: %w", c.ID, err)
		}
	}
	var p *api.Problem
	for _, u := range []string{"alice", "bob"} {
		err := admin.Do(ctx, http.MethodPost, "/v1/oauth/users", api.OAuthUser{Username: u, Password: demoPassword, Email: u + "@demo.example"}, nil)
		if err != nil && !(errors.As(err, &p) && p.Status == http.StatusConflict) {
			return fmt.Errorf("demo: oauth user %s: %w", u, err)
		}
	}
	return nil
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// login signs user in at the shop the way a browser does and returns the
// token response, or the HTTP status of the refused login.
func login(ctx context.Context, sys *System, user, password string) (map[string]any, int, error) {
	out, status, _, err := loginDPoP(ctx, sys, user, password, nil)
	return out, status, err
}

// loginDPoP is login with the shop holding a DPoP key: the tokens are
// bound to it. It also returns the server's latest DPoP nonce, which the
// shop's next proofs carry.
func loginDPoP(ctx context.Context, sys *System, user, password string, key crypto.Signer) (map[string]any, int, string, error) {
	jar, _ := cookiejar.New(nil)
	tr := sys.Admin.HTTP.Transport
	browser := &http.Client{Transport: tr, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifier := randomVerifier()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {shopClient}, "redirect_uri": {shopCallback}, "scope": {"openid"},
		"state": {"demo"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	issuer := sys.Admin.BaseURL
	resp, err := browser.Get(issuer + "/oauth2/authorize?" + q.Encode())
	if err != nil {
		return nil, 0, "", err
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{"username": {user}, "password": {password}, "action": {"allow"}}
	for _, m := range hiddenRE.FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&#43;", "+"))
	}
	resp, err = browser.PostForm(issuer+"/oauth2/authorize", form)
	if err != nil {
		return nil, 0, "", err
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		return nil, resp.StatusCode, "", nil
	}
	grant := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {shopCallback}, "client_id": {shopClient}, "code_verifier": {verifier}}
	var out map[string]any
	var status int
	nonce := ""
	// A DPoP client's first proof has no nonce; the server answers
	// use_dpop_nonce with one, and the client signs again (RFC 9449 §8).
	for try := 0; try < 2; try++ {
		hdr := http.Header{}
		if key != nil {
			proof, err := dpop.NewProof(key, jose.ES256, http.MethodPost, issuer+"/oauth2/token", "", nonce, time.Now())
			if err != nil {
				return nil, 0, "", err
			}
			hdr.Set("DPoP", proof)
		}
		var rh http.Header
		if out, status, rh, err = tokenCallWith(ctx, sys, grant, hdr); err != nil {
			return nil, 0, "", err
		}
		if n := rh.Get(dpop.NonceHeader); n != "" {
			nonce = n
		}
		if status != http.StatusBadRequest || out["error"] != "use_dpop_nonce" {
			break
		}
	}
	if status != http.StatusOK {
		err = fmt.Errorf("code exchange: %d %v", status, out)
	}
	return out, status, nonce, err
}

func tokenCall(ctx context.Context, sys *System, form url.Values) (map[string]any, int, error) {
	out, status, _, err := tokenCallWith(ctx, sys, form, nil)
	return out, status, err
}

func tokenCallWith(ctx context.Context, sys *System, form url.Values, hdr http.Header) (map[string]any, int, http.Header, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sys.Admin.BaseURL+"/oauth2/token", strings.NewReader(form.Encode()))
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := sys.Admin.HTTP.Do(req)
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out, resp.StatusCode, resp.Header, nil
}

// randomVerifier is a PKCE code verifier: 64 random bytes, base64url.
func randomVerifier() string {
	b := make([]byte, 64)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// attackRefreshReplay: an attacker who stole alice's refresh token uses it
// after the shop already did.
func attackRefreshReplay(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	tok, _, err := login(ctx, sys, "alice", demoPassword)
	if err != nil {
		return Outcome{}, err
	}
	stolen, _ := tok["refresh_token"].(string)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {stolen}, "client_id": {shopClient}}
	fresh, status, err := tokenCall(ctx, sys, refresh) // the shop's own, legitimate refresh
	if err != nil || status != http.StatusOK {
		return Outcome{}, fmt.Errorf("legitimate refresh: %d %v %v", status, fresh, err)
	}
	out, status, err := tokenCall(ctx, sys, refresh) // the thief replays the stolen one
	if err != nil {
		return Outcome{}, err
	}
	if status == http.StatusOK {
		return Outcome{}, errors.New("a replayed refresh token was accepted")
	}
	newer, _ := fresh["refresh_token"].(string)
	_, st2, err := tokenCall(ctx, sys, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {newer}, "client_id": {shopClient}})
	if err != nil || st2 == http.StatusOK {
		return Outcome{}, fmt.Errorf("the family survived the replay: %d %v", st2, err)
	}
	o := Outcome{Stopped: true, Prevent: fmt.Sprintf("refresh tokens rotate on every use; the replay got %d %s (%v), and every token of alice's login, the shop's newer ones included, is revoked", status, out["error"], out["error_description"])}
	a, err := waitAlert(ctx, sys, "refresh-token-reuse", start)
	if err != nil {
		return Outcome{}, err
	}
	o.Detect = alertLine(a)
	return o, nil
}

// attackLoginBruteForce: guess bob's password on the login page.
func attackLoginBruteForce(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	limited := 0
	for i := range 6 {
		_, status, err := login(ctx, sys, "bob", fmt.Sprintf("guess-%d", i))
		if err != nil {
			return Outcome{}, err
		}
		switch status {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests: // the login rate limit of this address (the demo run more than once)
			limited++
		default:
			return Outcome{}, fmt.Errorf("guess %d: status %d", i, status)
		}
	}
	_, status, err := login(ctx, sys, "bob", demoPassword)
	if err != nil {
		return Outcome{}, err
	}
	if status != http.StatusUnauthorized && status != http.StatusTooManyRequests {
		return Outcome{}, errors.New("the right password worked right after a burst of wrong ones: no back-off")
	}
	prevent := "after 5 consecutive failures bob's account backs off (30 s, doubling with each further failure up to 15 min); even the right password is refused meanwhile (argon2id hashes, ~100 ms a guess, no more than the CPUs at once)"
	if status == http.StatusTooManyRequests {
		limited++
	}
	if limited > 0 {
		prevent += fmt.Sprintf("; %d of the attempts were refused earlier still by the login rate limit of this address (429)", limited)
	}
	o := Outcome{Stopped: true, Prevent: prevent}
	a, err := waitAlert(ctx, sys, "login-failures", start)
	if err != nil {
		return Outcome{}, err
	}
	o.Detect = alertLine(a)
	return o, nil
}

// userinfo calls the userinfo endpoint with a token (and a DPoP proof if
// proof is not "").
func userinfo(ctx context.Context, sys *System, scheme, token, proof string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sys.Admin.BaseURL+"/oauth2/userinfo", nil)
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := sys.Admin.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), nil
}

// attackStolenAccessToken: alice's access token leaks from the shop (a log
// line, a compromised proxy); the thief presents it.
func attackStolenAccessToken(ctx context.Context, sys *System) (Outcome, error) {
	shopKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	thiefKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok, status, nonce, err := loginDPoP(ctx, sys, "alice", demoPassword, shopKey)
	if err != nil || status != http.StatusOK {
		return Outcome{}, fmt.Errorf("login: %d %v", status, err)
	}
	stolen, _ := tok["access_token"].(string)
	if tok["token_type"] != "DPoP" {
		return Outcome{}, fmt.Errorf("the shop got a %v token, want DPoP", tok["token_type"])
	}
	uiURL := sys.Admin.BaseURL + "/oauth2/userinfo"
	// Every proof carries the server's nonce, the thief's too: what
	// stops the thief is the key, not a missing nonce.
	proof := func(k crypto.Signer) string {
		p, _ := dpop.NewProof(k, jose.ES256, http.MethodGet, uiURL, stolen, nonce, time.Now())
		return p
	}
	// The shop, holding the key, can use it.
	if st, body, err := userinfo(ctx, sys, "DPoP", stolen, proof(shopKey)); err != nil || st != http.StatusOK {
		return Outcome{}, fmt.Errorf("the shop's own call: %d %s %v", st, body, err)
	}
	st1, body1, err := userinfo(ctx, sys, "Bearer", stolen, "")
	if err != nil {
		return Outcome{}, err
	}
	st2, body2, err := userinfo(ctx, sys, "DPoP", stolen, proof(thiefKey))
	if err != nil {
		return Outcome{}, err
	}
	if st1 != http.StatusUnauthorized || st2 != http.StatusUnauthorized {
		return Outcome{}, fmt.Errorf("the stolen token worked: as bearer %d %s; with the thief's proof %d %s", st1, body1, st2, body2)
	}
	var e1, e2 struct {
		Description string `json:"error_description"`
	}
	json.Unmarshal([]byte(body1), &e1)
	json.Unmarshal([]byte(body2), &e2)
	return Outcome{Stopped: true, Audited: "oauth.userinfo",
		Prevent: fmt.Sprintf("the shop's tokens are bound to its DPoP key (RFC 9449, cnf.jkt): replayed as a bearer token -> 401 %q; with a proof by the thief's own key -> 401 %q",
			e1.Description, e2.Description)}, nil
}
