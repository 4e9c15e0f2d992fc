package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

func (h *harness) deviceClient(id string) {
	h.client(store.OAuthClient{ID: id, AuthMethod: "none", GrantTypes: []string{oauth.GrantDeviceCode, "refresh_token"}, Audience: []string{"urn:test"}})
}

func (h *harness) startDevice(client string) (device, user string) {
	h.t.Helper()
	code, out := h.post(nil, oauth.PathDeviceAuthorization, url.Values{"client_id": {client}, "scope": {"openid"}}, "", "")
	if code != http.StatusOK {
		h.t.Fatalf("device authorization: %d %v", code, out)
	}
	return out["device_code"].(string), out["user_code"].(string)
}

func (h *harness) poll(client, device string) (int, map[string]any) {
	h.t.Helper()
	return h.post(nil, oauth.PathToken, url.Values{"client_id": {client}, "grant_type": {oauth.GrantDeviceCode}, "device_code": {device}}, "", "")
}

func (h *harness) approveDevice(user, username, password string, allow bool) (int, map[string]any) {
	h.t.Helper()
	action := "allow"
	if !allow {
		action = "deny"
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+oauth.PathDevice, strings.NewReader(url.Values{"user_code": {user},
		"username": {username}, "password": {password}, "action": {action}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return h.do(req)
}

// RFC 8628 §3.5 at the token endpoint: pending, slow_down, denied,
// expired; the code redeemed once, by its own client only; the tokens
// say how the login was proven.
func TestDeviceGrant(t *testing.T) {
	h := newHarness(t)
	h.deviceClient("cli")
	h.deviceClient("other")
	h.user("alice", "correct horse battery staple")

	device, user := h.startDevice("cli")
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "authorization_pending" {
		t.Fatalf("before approval: %d %v", code, out)
	}
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "slow_down" {
		t.Fatalf("polling at once again: %d %v", code, out)
	}
	h.clock.Add(11 * time.Second) // the interval grew to 10 s
	if code, out := h.poll("other", device); code != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("another client's poll: %d %v", code, out)
	}
	h.clock.Add(11 * time.Second)
	if code, out := h.approveDevice(strings.ToLower(strings.ReplaceAll(user, "-", "")), "alice", "wrong password", true); code != 401 || out["error"] != "access_denied" {
		t.Fatalf("a wrong password approves: %d %v", code, out)
	}
	if code, out := h.approveDevice("BCDF-GHJK", "alice", "correct horse battery staple", true); code != 400 {
		t.Fatalf("an unknown user code: %d %v", code, out)
	}
	if code, out := h.approveDevice(user, "alice", "correct horse battery staple", true); code != 200 || out["user"] != "alice" {
		t.Fatalf("approve: %d %v", code, out)
	}
	if code, _ := h.approveDevice(user, "alice", "correct horse battery staple", true); code != http.StatusConflict {
		t.Fatalf("approving twice: %d", code)
	}
	code, out := h.poll("cli", device)
	if code != 200 || out["refresh_token"] == nil {
		t.Fatalf("after approval: %d %v", code, out)
	}
	claims, err := h.p.VerifyAccessToken(out["access_token"].(string), "urn:test")
	if err != nil || claims.Subject != "alice" || strings.Join(claims.AMR, " ") != "pwd" || claims.SessionID == "" {
		t.Fatalf("token: %v %+v", err, claims)
	}
	h.clock.Add(11 * time.Second)
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("redeemed twice: %d %v", code, out)
	}
	if n := len(h.auditedOutcome("oauth.device_approve", "success")); n != 1 {
		t.Fatalf("%d device approvals audited", n)
	}

	// Denied, and expired.
	device, user = h.startDevice("cli")
	h.approveDevice(user, "alice", "correct horse battery staple", false)
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "access_denied" {
		t.Fatalf("denied: %d %v", code, out)
	}
	device, user = h.startDevice("cli")
	h.clock.Add(oauth.DefaultDeviceCodeTTL + time.Second)
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "expired_token" {
		t.Fatalf("expired: %d %v", code, out)
	}
	if code, _ := h.approveDevice(user, "alice", "correct horse battery staple", true); code != 400 {
		t.Fatalf("approving an expired code: %d", code)
	}
	// A client not registered for the grant gets no codes.
	h.client(store.OAuthClient{ID: "web", AuthMethod: "none", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://x/cb"}})
	if code, out := h.post(nil, oauth.PathDeviceAuthorization, url.Values{"client_id": {"web"}}, "", ""); code != 400 || out["error"] != "unauthorized_client" {
		t.Fatalf("a client without the grant: %d %v", code, out)
	}
}

// A disabled user's approval is void when the client redeems it.
func TestDeviceGrantUserDisabledAfterApproval(t *testing.T) {
	h := newHarness(t)
	h.deviceClient("cli")
	h.user("alice", "correct horse battery staple")
	device, user := h.startDevice("cli")
	if code, out := h.approveDevice(user, "alice", "correct horse battery staple", true); code != 200 {
		t.Fatalf("approve: %d %v", code, out)
	}
	u, _ := h.store.GetOAuthUser(t.Context(), "alice")
	u.Disabled = true
	if err := h.store.UpdateOAuthUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if code, out := h.poll("cli", device); code != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("redeemed for a disabled user: %d %v", code, out)
	}
}

func TestUserCodes(t *testing.T) {
	for in, want := range map[string]string{"BCDF-GHJK": "BCDFGHJK", "bcdf ghjk": "BCDFGHJK", "BCDFGHJ": "", "BCDF-GHJA": "", "": "",
		"BCDF-GHJK-L": "", "ВCDF-GHJK": ""} {
		if got := oauth.NormalizeUserCode(in); got != want {
			t.Errorf("NormalizeUserCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzNormalizeUserCode: whatever is typed, the result is empty or eight
// letters of the alphabet, and normalising is idempotent.
func FuzzNormalizeUserCode(f *testing.F) {
	for _, s := range []string{"BCDF-GHJK", "bcdf ghjk", "", "AAAA-AAAA", "BCDF-GHJK\x00", "ßCDF-GHJK"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := oauth.NormalizeUserCode(s)
		if n == "" {
			return
		}
		if len(n) != 8 || strings.Trim(n, "BCDFGHJKLMNPQRSTVWXZ") != "" || oauth.NormalizeUserCode(n) != n {
			t.Fatalf("NormalizeUserCode(%q) = %q", s, n)
		}
	})
}
