package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/rampartsec/rampart/sdk"
)

// payments only serves a user's own payments, and only when orders calls
// on that user's behalf (its token exchanged, act = orders).
const deputyPolicy = `service: spiffe://example.org/payments
rules:
  - name: own-payments-via-orders
    callers: [spiffe://example.org/orders]
    methods: [GET]
    paths: ["/payments/{user}"]
    when: 'has(user.sub) && user.sub == request.params.user && user.act == "spiffe://example.org/orders"'
`

// TestConfusedDeputy: Alice logs in at the gateway and calls orders;
// orders exchanges her token for one addressed to payments (act = orders).
// With it, orders reads Alice's payments but not Bob's; with its own
// client-credentials token it reads nothing (the policy requires a user);
// Alice's original token, addressed to orders, is refused by payments; the
// audit log shows who acted for whom.
func TestConfusedDeputy(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(deputyPolicy)
	env := m.s.adminEnv()
	orders := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(mustCLI(t, env, "oauth", "client", "create", "--id", "orders", "--spiffe-id", "spiffe://example.org/orders",
		"--grant", "token-exchange", "--grant", "client_credentials", "--audience", "spiffe://example.org/payments"))
	alice := aliceAtGateway(t, m)

	inPay := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]
	outOrders := m.proxy("orders", "--outbound", "127.0.0.1:0="+inPay+",spiffe://example.org/payments")[1]

	issuer := "https://" + m.s.addr
	_, hc := trustServer(m.s.dir)

	// orders exchanges Alice's token (RFC 8693) for one addressed to payments.
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {alice},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {"spiffe://example.org/payments"}}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("orders", orders[1])
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ex struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&ex)
	resp.Body.Close()
	if resp.StatusCode != 200 || ex.AccessToken == "" {
		t.Fatalf("token exchange: %d", resp.StatusCode)
	}
	cc := clientcredentials.Config{ClientID: "orders", ClientSecret: orders[1], TokenURL: issuer + "/oauth2/token",
		EndpointParams: url.Values{"audience": {"spiffe://example.org/payments"}}}
	own, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, hc))
	if err != nil {
		t.Fatalf("orders' own token: %v", err)
	}

	call := func(path, token string) int {
		h := map[string]string{}
		if token != "" {
			h["Authorization"] = "Bearer " + token
		}
		code, _ := get(t, "http://"+outOrders+path, h)
		return code
	}
	// The proxies learn the issuer's keys with the policy, by long poll.
	eventually(t, 10*time.Second, "exchanged token accepted", func() error {
		if c := call("/payments/alice", ex.AccessToken); c != 200 {
			return errorf("alice's own payments with the exchanged token: %d", c)
		}
		return nil
	})
	// A forged X-Rampart-User from the caller is replaced by the verified
	// user; without a user token the app sees none.
	code, body := get(t, "http://"+outOrders+"/payments/alice", map[string]string{"Authorization": "Bearer " + ex.AccessToken, "X-Rampart-User": "bob"})
	var saw appSaw
	json.Unmarshal([]byte(body), &saw)
	if code != 200 || len(saw.User) != 1 || saw.User[0] != "alice" {
		t.Fatalf("app saw user %v (status %d), want only the verified alice", saw.User, code)
	}
	for _, tt := range []struct {
		what, path, token string
		want              int
	}{
		{"Bob's payments with Alice's token (confused deputy)", "/payments/bob", ex.AccessToken, 403},
		{"orders' own credentials, no user", "/payments/alice", own.AccessToken, 403},
		{"no token at all", "/payments/alice", "", 403},
		{"Alice's token addressed to orders, not payments", "/payments/alice", alice, 401},
		{"a tampered token", "/payments/alice", tamper(ex.AccessToken), 401},
	} {
		if got := call(tt.path, tt.token); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.what, got, tt.want)
		}
	}
	// orders revokes the exchanged token (RFC 7009); payments' proxy learns
	// of it by long poll and refuses it from then on.
	rv, _ := http.NewRequest(http.MethodPost, issuer+"/oauth2/revoke", strings.NewReader(url.Values{"token": {ex.AccessToken}}.Encode()))
	rv.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rv.SetBasicAuth("orders", orders[1])
	if resp, err := hc.Do(rv); err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v", err)
	}
	eventually(t, 10*time.Second, "revoked token refused by payments", func() error {
		if c := call("/payments/alice", ex.AccessToken); c != 401 {
			return errorf("revoked token: %d", c)
		}
		return nil
	})

	eventually(t, 15*time.Second, "decisions with act in the audit log", func() error {
		for _, e := range auditDecisions(t, m.s.dir) {
			actor, _ := e["actor"].(map[string]any)
			details, _ := e["details"].(map[string]any)
			if actor["user"] == "alice" && details["act"] == "spiffe://example.org/orders" && e["outcome"] == "success" {
				return nil
			}
		}
		return errorf("no allowed decision for alice with act=orders yet")
	})
}

// aliceAtGateway registers the gateway (a code-flow client whose tokens
// are addressed to orders) and alice, logs her in through the real login
// page and returns her access token.
func aliceAtGateway(t *testing.T, m *mesh) string {
	t.Helper()
	env := m.s.adminEnv()
	gw := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(mustCLI(t, env, "oauth", "client", "create", "--id", "gateway",
		"--grant", "authorization_code", "--redirect-uri", "http://127.0.0.1:9/cb", "--audience", "spiffe://example.org/orders", "--scope", "payments:read"))
	pw := filepath.Join(m.binDir, "pw")
	os.WriteFile(pw, []byte("a-long-password"), 0o600)
	mustCLI(t, env, "oauth", "user", "create", "--username", "alice", "--password-file", pw)
	issuer := "https://" + m.s.addr
	tr, _ := trustServer(m.s.dir)
	conf := oauth2.Config{ClientID: "gateway", ClientSecret: gw[1], RedirectURL: "http://127.0.0.1:9/cb", Scopes: []string{"openid", "payments:read"},
		Endpoint: oauth2.Endpoint{AuthURL: issuer + "/oauth2/authorize", TokenURL: issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
	return browserLogin(t, tr, issuer, conf, "alice", "a-long-password", "n").AccessToken
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// tamper changes one character inside a token's signature (not the last
// ones, whose padding bits a base64 decoder may ignore).
func tamper(tok string) string {
	i := len(tok) - 10
	c := byte('A')
	if tok[i] == c {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// TestProxyExchangesUserToken: the app behind orders' proxy just forwards
// the user's token; the proxy exchanges it (RFC 8693, authenticating with
// its SVID) for one addressed to payments, with act = orders and bound to
// its certificate. payments' policy then decides on the user's rights.
func TestProxyExchangesUserToken(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(deputyPolicy)
	env := m.s.adminEnv()
	mustCLI(t, env, "oauth", "client", "create", "--id", "orders", "--auth-method", "tls_client_auth", "--spiffe-id", "spiffe://example.org/orders",
		"--grant", "token-exchange", "--audience", "spiffe://example.org/payments")
	other := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(mustCLI(t, env, "oauth", "client", "create", "--id", "batch", "--grant", "client_credentials"))
	alice := aliceAtGateway(t, m)

	inPay := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]
	outOrders := m.proxy("orders", "--exchange-client-id", "orders",
		"--outbound", "127.0.0.1:0="+inPay+",spiffe://example.org/payments,exchange")[1]

	issuer := "https://" + m.s.addr
	_, hc := trustServer(m.s.dir)
	cc := clientcredentials.Config{ClientID: "batch", ClientSecret: other[1], TokenURL: issuer + "/oauth2/token"}
	batch, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, hc))
	if err != nil {
		t.Fatal(err)
	}

	call := func(path, token string) (int, string) {
		h := map[string]string{}
		if token != "" {
			h["Authorization"] = "Bearer " + token
		}
		return get(t, "http://"+outOrders+path, h)
	}
	eventually(t, 10*time.Second, "alice's payments through the exchanging proxy", func() error {
		if c, body := call("/payments/alice", alice); c != 200 {
			return errorf("%d %s", c, body)
		}
		return nil
	})
	code, body := call("/payments/alice", alice) // served from the exchange cache
	var saw appSaw
	json.Unmarshal([]byte(body), &saw)
	if code != 200 || len(saw.User) != 1 || saw.User[0] != "alice" {
		t.Fatalf("payments' app saw user %v (status %d), want alice", saw.User, code)
	}
	for _, tt := range []struct {
		what, path, token string
		want              int
		body              string
	}{
		{"Bob's payments with Alice's token", "/payments/bob", alice, 403, "denied"},
		{"a token not addressed to orders", "/payments/alice", batch.AccessToken, 401, "token exchange for spiffe://example.org/payments refused"},
		{"a tampered token", "/payments/alice", tamper(alice), 401, "refused"},
		{"no token: passed on, and payments requires a user", "/payments/alice", "", 403, "denied"},
	} {
		if got, b := call(tt.path, tt.token); got != tt.want || !strings.Contains(b, tt.body) {
			t.Errorf("%s: %d %s, want %d containing %q", tt.what, got, b, tt.want, tt.body)
		}
	}
	// A proxy whose own registration is wrong (no such OAuth client) says
	// so with 502, not as a problem with the user's token.
	misconfigured := m.proxy("orders", "--exchange-client-id", "nobody",
		"--outbound", "127.0.0.1:0="+inPay+",spiffe://example.org/payments,exchange")[1]
	if code, b := get(t, "http://"+misconfigured+"/payments/alice", map[string]string{"Authorization": "Bearer " + alice}); code != 502 || !strings.Contains(b, "invalid_client") {
		t.Errorf("exchange by an unregistered client: %d %s, want 502 naming invalid_client", code, b)
	}
	eventually(t, 15*time.Second, "exchange and decision with act in the audit log", func() error {
		exchanged := false
		log, _ := os.ReadFile(filepath.Join(m.s.dir, "audit", "entries.log"))
		exchanged = strings.Contains(string(log), `"action":"oauth.token_exchange"`) && strings.Contains(string(log), `"cnf":"x5t#S256"`)
		for _, e := range auditDecisions(t, m.s.dir) {
			actor, _ := e["actor"].(map[string]any)
			details, _ := e["details"].(map[string]any)
			if exchanged && actor["user"] == "alice" && details["act"] == "spiffe://example.org/orders" && e["outcome"] == "success" {
				return nil
			}
		}
		return errorf("no token exchange bound to orders' certificate and allowed decision for alice with act=orders yet")
	})
}

// TestSDKExchangesUserToken: a Go service on the SDK (this test process,
// attested as orders) calls payments with sdk.WithTokenExchange; the SDK
// swaps the user's token for one addressed to payments.
func TestSDKExchangesUserToken(t *testing.T) {
	m := newMesh(t)
	m.identity("payments", "")
	m.putPolicy(deputyPolicy)
	exe, _ := os.Executable()
	mustCLI(t, m.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID,
		"--selector", myUID(), "--selector", "unix:path:"+exe)
	mustCLI(t, m.s.adminEnv(), "oauth", "client", "create", "--id", "orders", "--auth-method", "tls_client_auth", "--spiffe-id", "spiffe://example.org/orders",
		"--grant", "token-exchange", "--audience", "spiffe://example.org/payments")
	alice := aliceAtGateway(t, m)
	inPay := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"))[0]

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var src *sdk.Source
	eventually(t, 20*time.Second, "SDK source as orders", func() error {
		var err error
		src, err = sdk.New(ctx, sdk.WithSocket(m.a.socket), sdk.WithServer(m.s.addr))
		if err == nil && src.ID().String() != "spiffe://example.org/orders" {
			src.Close()
			return errorf("attested as %s", src.ID())
		}
		return err
	})
	defer src.Close()
	payments := spiffeid.RequireFromString("spiffe://example.org/payments")
	hc := src.HTTPClient(payments, sdk.WithTokenExchange("orders"))
	call := func(c *http.Client, path, token string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+inPay+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, "alice's payments through the SDK's exchange", func() error {
		if c := call(hc, "/payments/alice", alice); c != 200 {
			return errorf("status %d", c)
		}
		return nil
	})
	if c := call(hc, "/payments/bob", alice); c != 403 {
		t.Errorf("Bob's payments with Alice's token: %d, want 403", c)
	}
	// Without the exchange, Alice's token (addressed to orders) is refused.
	if c := call(src.HTTPClient(payments), "/payments/alice", alice); c != 401 {
		t.Errorf("Alice's token passed on unexchanged: %d, want 401", c)
	}
}
