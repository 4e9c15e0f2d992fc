package e2e

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestDisablingUserReachesProxies: alice calls payments through orders'
// exchanging proxy; an operator disables her with the CLI; payments' proxy
// refuses the token orders' proxy had exchanged for her within about a
// second (the same long poll that carries SVID revocations), and enabling
// her again does not bring it back. Disabling the client she signed in
// with does the same for a fresh login. Failed logins back her off until
// "rampart oauth user unlock".
func TestDisablingUserReachesProxies(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(deputyPolicy)
	env := m.s.adminEnv()
	mustCLI(t, env, "oauth", "client", "create", "--id", "orders", "--auth-method", "tls_client_auth", "--spiffe-id", "spiffe://example.org/orders",
		"--grant", "token-exchange", "--audience", "spiffe://example.org/payments")
	gw := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(mustCLI(t, env, "oauth", "client", "create", "--id", "gateway",
		"--grant", "authorization_code", "--redirect-uri", "http://127.0.0.1:9/cb", "--audience", "spiffe://example.org/orders"))
	pw := filepath.Join(m.binDir, "pw")
	os.WriteFile(pw, []byte("a-long-password"), 0o600)
	mustCLI(t, env, "oauth", "user", "create", "--username", "alice", "--password-file", pw)
	issuer := "https://" + m.s.addr
	tr, _ := trustServer(m.s.dir)
	conf := oauth2.Config{ClientID: "gateway", ClientSecret: gw[1], RedirectURL: "http://127.0.0.1:9/cb", Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
	alice := browserLogin(t, tr, issuer, conf, "alice", "a-long-password", "n").AccessToken
	inPay := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]
	outOrders := m.proxy("orders", "--exchange-client-id", "orders",
		"--outbound", "127.0.0.1:0="+inPay+",spiffe://example.org/payments,exchange")[1]
	call := func(token string) (int, string) {
		return get(t, "http://"+outOrders+"/payments/alice", map[string]string{"Authorization": "Bearer " + token})
	}
	eventually(t, 10*time.Second, "alice's payments through the exchanging proxy", func() error {
		if c, body := call(alice); c != 200 {
			return errorf("%d %s", c, body)
		}
		return nil
	})

	start := time.Now()
	mustCLI(t, env, "oauth", "user", "update", "alice", "--disable")
	eventually(t, 10*time.Second, "alice's exchanged token refused by payments' proxy", func() error {
		if c, body := call(alice); c != 401 || !strings.Contains(body, "revoked") {
			return errorf("%d %s", c, body)
		}
		return nil
	})
	_, why := call(alice)
	t.Logf("disabling alice reached payments' proxy in %v: %s", time.Since(start).Round(10*time.Millisecond), why)

	mustCLI(t, env, "oauth", "user", "update", "alice", "--enable")
	time.Sleep(2 * time.Second) // a revision the proxies pick up; the token must stay dead
	if c, body := call(alice); c != 401 {
		t.Fatalf("alice's old token after she was enabled again: %d %s", c, body)
	}
	if show := mustCLI(t, env, "oauth", "user", "show", "alice"); !regexp.MustCompile(`Disabled:\s+false`).MatchString(show) {
		t.Fatalf("alice not enabled again:\n%s", show)
	}

	// A fresh login works; disabling the gateway, the client she signed
	// in with, revokes that one too.
	fresh := browserLogin(t, tr, issuer, conf, "alice", "a-long-password", "n2").AccessToken
	eventually(t, 10*time.Second, "alice's fresh token accepted", func() error {
		if c, body := call(fresh); c != 200 {
			return errorf("%d %s", c, body)
		}
		return nil
	})
	out := mustCLI(t, env, "oauth", "client", "update", "gateway", "--disable")
	if !strings.Contains(out, "disabled") {
		t.Fatalf("client update: %s", out)
	}
	eventually(t, 10*time.Second, "the disabled gateway's token refused by payments' proxy", func() error {
		if c, body := call(fresh); c != 401 {
			return errorf("%d %s", c, body)
		}
		return nil
	})
	// Enabled again, the gateway signs users in; its old token stays dead.
	if out := mustCLI(t, env, "oauth", "client", "update", "gateway", "--enable"); !strings.Contains(out, "enabled") {
		t.Fatalf("client update --enable: %s", out)
	}
	if c, body := call(fresh); c != 401 {
		t.Fatalf("the gateway's old token after it was enabled again: %d %s", c, body)
	}
	// Five wrong passwords make alice back off (her right one is refused
	// too); "rampart oauth user unlock" ends it at once.
	for i := 0; i < 5; i++ {
		if st := formLogin(t, tr, issuer, conf, "alice", "wrong-password"); st != 401 {
			t.Fatalf("wrong password %d: %d", i, st)
		}
	}
	if st := formLogin(t, tr, issuer, conf, "alice", "a-long-password"); st != 401 {
		t.Fatalf("right password while backing off: %d", st)
	}
	if out := mustCLI(t, env, "oauth", "user", "unlock", "alice"); !regexp.MustCompile(`Backing off until:\s*\n`).MatchString(out) {
		t.Fatalf("unlock:\n%s", out)
	}
	if st := formLogin(t, tr, issuer, conf, "alice", "a-long-password"); st != 303 {
		t.Fatalf("right password after unlock: %d", st)
	}

	eventually(t, 15*time.Second, "the disabling in the audit log", func() error {
		log, err := cli(t, nil, "audit", "query", "--data", m.s.dir, "--json")
		if err != nil {
			return err
		}
		for _, want := range []*regexp.Regexp{regexp.MustCompile(`"action":"oauth.user_update".*"revoked_families":"[1-9]`),
			regexp.MustCompile(`"action":"oauth.client_update".*"disabled":"true"`)} {
			if !want.MatchString(log) {
				return errorf("audit log lacks %s", want)
			}
		}
		return nil
	})
}

// formLogin posts the login form once and returns the status: 303 is a
// successful sign-in, 401 a refused one.
func formLogin(t *testing.T, tr *http.Transport, issuer string, conf oauth2.Config, user, password string) int {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Transport: tr, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(conf.AuthCodeURL("xyz", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{"username": {user}, "password": {password}, "action": {"allow"}}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&#43;", "+"))
	}
	resp, err = browser.PostForm(issuer+"/oauth2/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
