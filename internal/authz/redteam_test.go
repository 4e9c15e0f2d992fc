package authz

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/accesstoken"
)

// Red team finding 2, data plane: the exchanger swapped a token sent with
// the DPoP scheme for one bound to the service's certificate, so the
// holder of a stolen DPoP-bound token (without its key) could call on
// through the service. It now refuses, without asking the server.
func TestExchangerRefusesDPoPBoundTokens(t *testing.T) {
	var calls atomic.Int32
	as := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "exchanged", "token_type": "Bearer", "expires_in": 300})
	}))
	defer as.Close()
	x := &Exchanger{tokenURL: as.URL + "/oauth2/token", clientID: "svc", hc: as.Client(), now: time.Now, cache: map[[32]byte]exchanged{}}
	reached := false
	h := x.Handler("spiffe://ex.org/next", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))

	r := httptest.NewRequest(http.MethodGet, "https://svc.example/x", nil)
	r.Header.Set("Authorization", "DPoP stolen.dpop.token")
	r.Header.Set("DPoP", "a-proof-for-this-service")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized || reached || calls.Load() != 0 || !strings.Contains(w.Body.String(), "DPoP key") {
		t.Fatalf("DPoP-scheme token: %d %s (app reached %v, token endpoint called %d times), want 401 before any exchange", w.Code, w.Body, reached, calls.Load())
	}
	// A bearer token is exchanged as before.
	r = httptest.NewRequest(http.MethodGet, "https://svc.example/x", nil)
	r.Header.Set("Authorization", "Bearer user.token.x")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || !reached || calls.Load() != 1 {
		t.Fatalf("bearer token: %d %s, app reached %v", w.Code, w.Body, reached)
	}
}

// Red team finding 3, data plane: a machine's token exchanged by another
// client (sub is not its client_id) passed for a user's: policies saw
// user.sub, decisions named a user. sub_type client says otherwise.
func TestExchangedMachineTokenHasNoUserInPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    accesstoken.Claims
		user bool
	}{
		{"machine token exchanged by another client", accesstoken.Claims{Subject: "robot", ClientID: "svc-0", SubjectType: accesstoken.SubjectClient}, false},
		{"machine token, SPIFFE subject, exchanged", accesstoken.Claims{Subject: "spiffe://ex.org/robot", ClientID: "svc-0", SubjectType: accesstoken.SubjectClient}, false},
		{"unknown sub_type", accesstoken.Claims{Subject: "robot", ClientID: "svc-0", SubjectType: "service"}, false},
		{"user token exchanged", accesstoken.Claims{Subject: "alice", ClientID: "svc-0", SubjectType: accesstoken.SubjectUser}, true},
		{"user claim on a SPIFFE subject", accesstoken.Claims{Subject: "spiffe://ex.org/x", ClientID: "svc-0", SubjectType: accesstoken.SubjectUser}, false},
		{"client's own token without sub_type", accesstoken.Claims{Subject: "robot", ClientID: "robot"}, false},
		{"user token without sub_type", accesstoken.Claims{Subject: "alice", ClientID: "web"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, hasSub := userClaims(&tc.c)["sub"]
			if isUserToken(&tc.c) != tc.user || hasSub != tc.user {
				t.Fatalf("user token %v, user.sub present %v; want %v", isUserToken(&tc.c), hasSub, tc.user)
			}
		})
	}
}
