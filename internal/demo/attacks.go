package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
)

// Outcome is what happened to one attack.
type Outcome struct {
	Stopped bool
	Prevent string // what stopped it
	Detect  string // which alert fired; "" if none
	// Audited is the action of the denied audit entry the attempt must
	// leave; runAttacks checks that it is in the log.
	Audited string
	Respond string // what the playbook did ("" when no playbook answers this attack)
}

// Attack is one scripted attack against the live demo system.
type Attack struct {
	Name  string
	Tried string
	Run   func(ctx context.Context, sys *System) (Outcome, error)
}

// Attacks lists every scenario, in the order they are run.
func Attacks() []Attack {
	return []Attack{
		{"admin-without-token", "call the admin API with no token, then with a guessed one, to register an identity for ourselves", attackAdminToken},
		{"stolen-operator-token", "copy the operator's access token (as from its session file) and call the admin API with it: as a bearer token, then with a DPoP proof by our own key", attackStolenOperatorToken},
		{"join-token-replay", "replay the join token the demo agent already spent, to enrol a rogue agent", attackJoinTokenReplay},
		{"foreign-ca-agent", "connect to the server as the demo agent with a certificate from our own CA", attackForeignCA},
		{"csr-for-another-id", "as the agent, ask for an SVID naming another service, then for a CA certificate", attackCSR},
		{"unregistered-workload", "run an unregistered binary that asks the agent's Workload API for an identity", attackUnregisteredWorkload},
		{"revoked-agent", "keep using an agent certificate after it was revoked", attackRevokedAgent},
		{"eavesdrop-plaintext", "talk to the payments port in plain HTTP, then with TLS 1.2, hoping for traffic to read or downgrade", attackPlaintext},
		{"no-client-certificate", "call payments over TLS without a client certificate", attackNoClientCert},
		{"forged-identity-header", "call orders through the gateway with X-Rampart-Caller and X-Forwarded-Client-Cert claiming to be payments-admin", attackForgedHeader},
		{"forbidden-call", "as orders, DELETE payments 1 to 25 (orders may only read them)", attackForbiddenCall},
		{"path-tricks", "reach /admin through the gateway with .., %2e%2e, %2F and // in the path", attackPathTricks},
		{"confused-deputy", "as alice, ask orders (which may read cards from payments) for bob's card on file, with her token and then with none", attackConfusedDeputy},
		{"refresh-token-replay", "replay alice's stolen refresh token after the shop has already used it", attackRefreshReplay},
		{"stolen-access-token", "present alice's access token, leaked from the shop, as a bearer token and then with our own DPoP key", attackStolenAccessToken},
		{"login-brute-force", "guess bob's password on the login page, six times, then try the right one", attackLoginBruteForce},
		{"stolen-database", "copy the customers database off the disk, look for card numbers, and ask the key store to unwrap its data key", attackStolenDatabase},
		{"tampered-audit-entry", "flip one byte of the newest audit entry on disk to cover tracks", attackTamperAudit},
		{"partner-trust-domain", "federate with a partner trust domain (its own CA) and, as its service, call orders (whose entry does not federate with it) and payments (whose entry does) for a payment", attackPartnerTrustDomain},
		{"compromised-service", "steal the orders proxy's SVID from the Workload API, hold a connection to payments with it from another process, and probe for cards", attackCompromisedService},
	}
}

func attackNames() []string {
	var out []string
	for _, a := range Attacks() {
		out = append(out, a.Name)
	}
	return out
}

func findAttack(name string) (Attack, bool) {
	for _, a := range Attacks() {
		if a.Name == name {
			return a, true
		}
	}
	return Attack{}, false
}

// runAttacks runs the attacks and prints each outcome; it fails if any
// attack was not stopped.
func runAttacks(ctx context.Context, w io.Writer, sys *System, attacks []Attack) error {
	failed := 0
	for _, a := range attacks {
		fmt.Fprintf(w, "attack %s\n  tried:   %s\n", a.Name, a.Tried)
		start := time.Now()
		out, err := a.Run(ctx, sys)
		if err == nil && out.Audited != "" && out.Detect == "" {
			if err = waitAudited(ctx, sys, out.Audited, start); err == nil {
				out.Detect = "denied " + out.Audited + " entry in the audit log (rampart audit query --action " + out.Audited + "); no rule alerts on a single refusal"
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(w, "  ERROR:   %v\n\n", err)
			continue
		}
		if !out.Stopped {
			failed++
			fmt.Fprintf(w, "  NOT STOPPED\n\n")
			continue
		}
		fmt.Fprintf(w, "  prevent: %s\n", out.Prevent)
		fmt.Fprintf(w, "  detect:  %s\n", orPending(out.Detect, "no audit entry for this attempt yet: agents and proxies audit policy decisions, not refused handshakes or stripped headers"))
		fmt.Fprintf(w, "  respond: %s\n", orPending(out.Respond, "no playbook: prevention held and the attempt is on record"))
		fmt.Fprintf(w, "  result:  STOPPED\n\n")
	}
	fmt.Fprintf(w, "%d attacks, %d stopped, %d not stopped\n", len(attacks), len(attacks)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("demo: %d attack(s) were not stopped", failed)
	}
	return nil
}

func orPending(s, pending string) string {
	if s == "" {
		return pending
	}
	return s
}

func attackAdminToken(ctx context.Context, sys *System) (Outcome, error) {
	e := api.Entry{SpiffeID: spiffeid.RequireFromPath(TrustDomain, "/attacker").String(),
		ParentID: "spiffe://" + TrustDomain.Name() + "/rampart/agent/" + sys.AgentName, Selectors: []string{"unix:uid:0"}}
	var statuses []string
	for _, tok := range []string{"", "rpa_guessed-token-000000000000000000000000000"} {
		c := *sys.Admin
		c.AdminToken, c.Authorize = tok, nil
		err := c.Do(ctx, http.MethodPost, "/v1/entries", e, nil)
		var p *api.Problem
		if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
			return Outcome{}, fmt.Errorf("admin call with token %q was not refused with 401: %v", tok, err)
		}
		statuses = append(statuses, fmt.Sprint(p.Status))
	}
	return Outcome{Stopped: true, Prevent: "the server answered " + strings.Join(statuses, " and ") + " Unauthorized: admin calls need a signed-in operator's DPoP-bound token, a workload SVID holding a role, or the 256-bit break-glass token (compared in constant time)", Audited: "admin.auth"}, nil
}

func attackJoinTokenReplay(ctx context.Context, sys *System) (Outcome, error) {
	if sys.JoinToken == "" {
		return Outcome{}, errors.New("the demo's spent join token is unknown (data dir from an older run)")
	}
	_, csr := newCSR(spiffeid.ID{})
	c := &api.Client{BaseURL: sys.Admin.BaseURL, HTTP: sys.Admin.HTTP}
	err := c.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: sys.JoinToken, CSR: csr}, nil)
	var p *api.Problem
	if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		return Outcome{}, fmt.Errorf("replayed join token was not refused: %v", err)
	}
	return Outcome{Stopped: true, Prevent: "the server refused it (401 " + p.Detail + "): a join token is spent atomically on first use", Audited: "agent.attest"}, nil
}

func attackForeignCA(ctx context.Context, sys *System) (Outcome, error) {
	agentID, _ := identity.AgentID(TrustDomain, sys.AgentName)
	cert, err := selfSignedSVID(agentID)
	if err != nil {
		return Outcome{}, err
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(sys.BundleFile)
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}}
	resp, err := hc.Get(sys.Admin.BaseURL + "/v1/agent/sync")
	if err == nil {
		resp.Body.Close()
		return Outcome{}, fmt.Errorf("server accepted a foreign certificate (status %d)", resp.StatusCode)
	}
	return Outcome{Stopped: true, Prevent: "TLS handshake refused (" + lastLine(err.Error()) + "): the certificate does not chain to the trust bundle", Audited: "tls.client_auth"}, nil
}

func attackCSR(ctx context.Context, sys *System) (Outcome, error) {
	var entries []api.Entry
	if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/entries", nil, &entries); err != nil {
		return Outcome{}, err
	}
	var entryID string
	for _, e := range entries {
		if e.SpiffeID == sys.Workload.String() {
			entryID = e.ID
		}
	}
	sv, err := sys.Agent.GetX509SVID()
	if err != nil {
		return Outcome{}, err
	}
	c := mtlsClient(sys, sv.Certificates, sv.PrivateKey)
	_, otherCSR := newCSR(spiffeid.RequireFromPath(TrustDomain, "/payments"))
	_, caCSR := newCSRWith(sys.Workload, true)
	var resp api.SignResponse
	req := api.SignRequest{Requests: []api.SignItem{{EntryID: entryID, CSR: otherCSR}, {EntryID: entryID, CSR: caCSR}}}
	if err := c.Do(ctx, http.MethodPost, "/v1/agent/svids", req, &resp); err != nil {
		return Outcome{}, err
	}
	var reasons []string
	for _, r := range resp.Results {
		if r.SVID != nil || r.Error == "" {
			return Outcome{}, errors.New("the CA signed a CSR it should have refused")
		}
		reasons = append(reasons, r.Error)
	}
	return Outcome{Stopped: true, Prevent: "the CA refused both CSRs: " + strings.Join(reasons, "; "), Audited: "svid.issue"}, nil
}

func attackUnregisteredWorkload(ctx context.Context, sys *System) (Outcome, error) {
	// A copy of this binary at another path: same uid, but the entry also
	// requires unix:path of the real binary, so the copy matches nothing.
	dir := filepath.Join(sys.Dir, "impostor")
	os.MkdirAll(dir, 0o700)
	imp := filepath.Join(dir, "rampart")
	if err := copyFile(sys.Exe, imp); err != nil {
		return Outcome{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, imp, "svid", "fetch", "--socket", sys.Socket, "--timeout", "3s").CombinedOutput()
	if err == nil {
		return Outcome{}, fmt.Errorf("the unregistered binary got an identity: %s", out)
	}
	if !bytes.Contains(out, []byte("PermissionDenied")) && !bytes.Contains(out, []byte("no identity issued")) {
		return Outcome{}, fmt.Errorf("the unregistered binary failed for another reason: %s", out)
	}
	return Outcome{Stopped: true, Audited: "workload.attest",
		Prevent: "the agent attested the caller from the kernel (uid " + fmt.Sprint(os.Getuid()) + ", path " + imp + ") and answered PermissionDenied: no entry matches"}, nil
}

func attackRevokedAgent(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	name := fmt.Sprintf("rogue-%d", time.Now().UnixNano())
	var jt api.CreateJoinTokenResponse
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: name}, &jt); err != nil {
		return Outcome{}, err
	}
	key, csr := newCSR(spiffeid.ID{})
	var att api.AttestResponse
	plain := &api.Client{BaseURL: sys.Admin.BaseURL, HTTP: sys.Admin.HTTP}
	if err := plain.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: jt.Token, CSR: csr}, &att); err != nil {
		return Outcome{}, err
	}
	chain, err := parseDER(att.SVID.Chain)
	if err != nil {
		return Outcome{}, err
	}
	serial := chain[0].SerialNumber.Text(16)
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{Serial: serial, Reason: "demo: key stolen"}, nil); err != nil {
		return Outcome{}, err
	}
	defer sys.Admin.Do(ctx, http.MethodPost, "/v1/agents/"+name+"/evict", nil, nil)
	c := mtlsClient(sys, chain, key)
	rogueID, _ := spiffeid.FromURI(chain[0].URIs[0])
	_, csr2 := newCSR(rogueID)
	err = c.Do(ctx, http.MethodPost, "/v1/agent/renew", api.RenewRequest{CSR: csr2}, nil)
	if err == nil {
		return Outcome{}, errors.New("the revoked agent certificate renewed")
	}
	out := Outcome{Stopped: true, Prevent: "the server refused the revoked certificate (serial " + serial + ") at the TLS handshake: " + lastLine(err.Error())}
	a, err := waitAlert(ctx, sys, "revoked-credential-use", start)
	if err != nil {
		return Outcome{}, err
	}
	out.Detect = alertLine(a)
	return out, nil
}

// waitAudited waits for a denied entry of action at or after since (entries
// from proxies arrive through their spools, so not at once).
func waitAudited(ctx context.Context, sys *System, action string, since time.Time) error {
	_, err := waitEntry(ctx, sys, "a denied "+action+" entry", since, func(e *audit.Entry) bool {
		return e.Action == action && e.Outcome == audit.OutcomeDenied
	})
	return err
}

// waitEntry waits up to 20 s for an audit entry at or after since that
// match accepts (entries from proxies arrive through their spools).
func waitEntry(ctx context.Context, sys *System, what string, since time.Time, match func(*audit.Entry) bool) (audit.Entry, error) {
	dir := filepath.Join(sys.Dir, "server", "audit")
	deadline := time.Now().Add(20 * time.Second)
	from := int64(0)
	for {
		var found *audit.Entry
		err := audit.Scan(dir, from, func(i int64, raw []byte) error {
			from = i + 1
			var e audit.Entry
			if json.Unmarshal(raw, &e) == nil && !e.Time.Before(since) && match(&e) {
				found = &e
				return audit.ErrStop
			}
			return nil
		})
		if err != nil {
			return audit.Entry{}, err
		}
		if found != nil {
			return *found, nil
		}
		if time.Now().After(deadline) {
			return audit.Entry{}, fmt.Errorf("no %s in the audit log within 20s", what)
		}
		select {
		case <-ctx.Done():
			return audit.Entry{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitAlert waits for an alert of rule that fired at or after since (a new
// one, or one of an earlier run that fired again).
func waitAlert(ctx context.Context, sys *System, rule string, since time.Time) (api.Alert, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var as []api.Alert
		if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/alerts?rule="+rule, nil, &as); err != nil {
			return api.Alert{}, err
		}
		for _, a := range as {
			if !a.LastSeen.Before(since.Add(-time.Second)) {
				return a, nil
			}
		}
		if time.Now().After(deadline) {
			return api.Alert{}, fmt.Errorf("no %s alert within 20s", rule)
		}
		select {
		case <-ctx.Done():
			return api.Alert{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func alertLine(a api.Alert) string {
	return fmt.Sprintf("alert %s [%s] %s (rampart alert show %s)", a.Rule, a.Severity, a.Summary, a.ID)
}
