package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// attackConfusedDeputy: orders may read cards on file from payments, so a
// user who can call orders asks it for someone else's card. Were payments to
// decide on orders' authority alone, orders would be the confused deputy.
// It decides on the user's: orders' proxy exchanges the user's token for one
// addressed to payments (RFC 8693, act = orders), and payments' policy
// requires that user to own the card.
func attackConfusedDeputy(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	tok, status, err := login(ctx, sys, "alice", demoPassword)
	if err != nil || status != http.StatusOK {
		return Outcome{}, fmt.Errorf("login: %d %v", status, err)
	}
	alice, _ := tok["access_token"].(string)
	// Her own card: orders acts for her, and payments sees her.
	code, body, err := cardVia(ctx, sys, "alice", alice)
	if err != nil {
		return Outcome{}, err
	}
	var own struct {
		Card         string `json:"card"`
		VerifiedUser string `json:"verified_user"`
	}
	json.Unmarshal([]byte(body), &own)
	if code != http.StatusOK || own.VerifiedUser != "alice" {
		return Outcome{}, fmt.Errorf("alice's own card: %d %s", code, body)
	}
	// Bob's card, with her token, then with none (orders' own authority).
	withToken, bodyT, err := cardVia(ctx, sys, "bob", alice)
	if err != nil {
		return Outcome{}, err
	}
	noToken, bodyN, err := cardVia(ctx, sys, "bob", "")
	if err != nil {
		return Outcome{}, err
	}
	if withToken != http.StatusForbidden || noToken != http.StatusForbidden {
		return Outcome{}, fmt.Errorf("bob's card reached alice: with her token %d %s; with none %d %s", withToken, bodyT, noToken, bodyN)
	}
	payments := "spiffe://" + TrustDomain.Name() + "/payments"
	e, err := waitEntry(ctx, sys, "a denied decision at payments for alice via orders", start, func(e *audit.Entry) bool {
		return e.Action == "authz.decision" && e.Outcome == audit.OutcomeDenied && e.Target == payments &&
			e.Actor.User == "alice" && e.Details["act"] != "" && e.Details["path"] == "/users/bob/card"
	})
	if err != nil {
		return Outcome{}, err
	}
	return Outcome{Stopped: true,
		Prevent: fmt.Sprintf("payments decides on the user orders acts for, not on orders alone: alice's own card came back (%s, payments saw user alice); "+
			"bob's with her token -> 403 (the exchanged token names alice, act = orders); with no token -> 403 (orders' own identity is not enough)", own.Card),
		Detect: fmt.Sprintf("denied authz.decision entry at payments: actor %s as user %s, act %s, %s %s", e.Actor.SpiffeID, e.Actor.User, e.Details["act"], e.Details["method"], e.Details["path"]),
	}, nil
}

// cardVia asks orders, through the gateway, for user's card on file, with
// token as a bearer token if it is not "".
func cardVia(ctx context.Context, sys *System, user, token string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sys.Services.GatewayURL+"/users/"+user+"/card", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, "", errors.Join(errors.New("reading the answer"), err)
	}
	return resp.StatusCode, string(b), nil
}
