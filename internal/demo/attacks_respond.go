package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/respond"
)

// compromisedPlaybook is what the demo's on-call runs for the alert: the
// response decided before the attack.
const compromisedPlaybook = `name: demo-compromised-service
description: a service's identity is used from somewhere else; contain it, open an incident
vars:
  service: actor.spiffe_id
steps:
  - name: contain
    action: quarantine
    with: {identity: "${service}", reason: "identity used by another process: probing payments"}
    timeout: 10s
  - name: open-incident
    action: incident
    with: {title: "compromised ${service}", severity: high, status: contained, identity: "${service}"}
`

// attackCompromisedService steals the orders proxy's SVID (fetched from
// the Workload API as the orders binary) and uses it from this process:
// a keep-alive connection to payments, then probing. The probing is
// detected (denied-burst), the playbook quarantines orders (the open
// connection ends, new calls are refused), an incident is opened with the
// breach scope attached, and the operator lifts the quarantine with a
// reason so the demo goes on.
func attackCompromisedService(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	orders := "spiffe://" + TrustDomain.Name() + "/orders"
	dir := filepath.Join(sys.Dir, "stolen")
	os.MkdirAll(dir, 0o700)
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(fctx, filepath.Join(sys.Dir, "bin", "orders-proxy"), "svid", "fetch", "--socket", sys.Socket,
		"--write", dir, "--timeout", "5s").CombinedOutput(); err != nil {
		return Outcome{}, fmt.Errorf("stealing orders' SVID: %v: %s", err, out)
	}
	sv, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		return Outcome{}, err
	}
	b, err := x509bundle.Load(TrustDomain, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return Outcome{}, err
	}
	cfg := tlsconfig.MTLSClientConfig(sv, b, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(TrustDomain, "/payments")))
	cfg.MinVersion, cfg.NextProtos = tls.VersionTLS13, []string{"http/1.1"}

	// A keep-alive connection, held open as a foothold.
	held, err := tls.Dial("tcp", sys.Services.PaymentsInbound, cfg)
	if err != nil {
		return Outcome{}, err
	}
	defer held.Close()
	br := bufio.NewReader(held)
	fmt.Fprintf(held, "GET /payments/1 HTTP/1.1\r\nHost: payments\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return Outcome{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return Outcome{}, fmt.Errorf("the stolen identity could not even read a payment: %d", resp.StatusCode)
	}
	endedAt := make(chan time.Time, 1)
	go func() { io.Copy(io.Discard, br); endedAt <- time.Now() }()

	// Probing with it: what orders itself never does.
	probe := &http.Transport{TLSClientConfig: cfg}
	defer probe.CloseIdleConnections()
	for i := range 25 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s/users/user-%d/card", sys.Services.PaymentsInbound, i), nil)
		if r, err := probe.RoundTrip(req); err == nil {
			r.Body.Close()
		}
	}
	alert, err := waitAlert(ctx, sys, "denied-burst", start)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{Stopped: true, Detect: alertLine(alert),
		Prevent: "payments refused the probing (403: orders may read a card only for its owner); the stolen identity's reach is what its policy allows"}

	// Respond: the playbook, run for the alert.
	if err := sys.Admin.DoRaw(ctx, http.MethodPut, "/v1/playbooks", "application/yaml", []byte(compromisedPlaybook), nil); err != nil {
		return Outcome{}, fmt.Errorf("demo playbook: %w", err)
	}
	var run respond.Run
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/playbooks/demo-compromised-service/run", respond.RunRequest{AlertID: alert.ID,
		Vars: map[string]string{"service": orders}}, &run); err != nil {
		return Outcome{}, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for run.State == respond.RunRunning && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/runs/"+run.ID, nil, &run); err != nil {
			return Outcome{}, err
		}
	}
	if run.State != respond.RunSucceeded {
		return Outcome{}, fmt.Errorf("the playbook run ended %s: %+v", run.State, run.Steps)
	}
	// Lifted whatever happens next: the demo goes on.
	defer sys.Admin.Do(context.WithoutCancel(ctx), http.MethodPost, "/v1/quarantines/lift",
		respond.QuarantineRequest{Identity: orders, Reason: "demo: orders re-keyed and redeployed"}, nil)
	var ended time.Time
	select {
	case ended = <-endedAt:
	case <-time.After(10 * time.Second):
		return Outcome{}, errors.New("the stolen identity's open connection outlived the quarantine")
	}
	if r, err := probe.RoundTrip(mustReq(ctx, "https://"+sys.Services.PaymentsInbound+"/payments/1")); err == nil {
		r.Body.Close()
		return Outcome{}, fmt.Errorf("a new call of the quarantined identity was answered %d", r.StatusCode)
	}
	var sc respond.Scope
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/incidents/"+url.PathEscape(run.Incident)+"/scope",
		respond.ScopeRequest{Identity: orders, Since: start.Add(-time.Minute)}, &sc); err != nil {
		return Outcome{}, err
	}
	var refused int64
	for _, a := range sc.Refused {
		refused += a.Count
	}
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: orders,
		Reason: "demo: orders re-keyed and redeployed"}, nil); err != nil {
		return Outcome{}, err
	}
	lag := ended.Sub(run.Steps[0].Ended).Round(time.Millisecond)
	out.Respond = fmt.Sprintf("playbook %s quarantined %s (contained %s after the attack began; its open connection ended %s after the quarantine, new calls refused), opened incident %s; breach scope: %d refused and %d allowed call kinds, %d refused calls, %d SVIDs issued (rampart incident report %s); the operator lifted the quarantine with a reason",
		run.Playbook, orders, run.ContainedAt.Sub(start).Round(time.Millisecond), max(lag, 0), run.Incident, len(sc.Refused), len(sc.Reached), refused, len(sc.SVIDs), run.Incident)
	if !strings.HasPrefix(run.Incident, "inc-") {
		return Outcome{}, fmt.Errorf("no incident: %+v", run)
	}
	return out, nil
}

func mustReq(ctx context.Context, u string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	return req
}
