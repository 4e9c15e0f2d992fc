package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/respond"
)

// The compromised-service scenario with real processes: the orders
// proxy's SVID is stolen and used from another process (this test) to hold
// an HTTP/2 stream to payments and a raw TCP connection to ledger, and to
// probe payments. The probing raises denied-burst; the playbook it
// triggers quarantines orders (the open stream and connection end within
// 2 s of the quarantine, new calls are refused), revokes orders' SVIDs,
// opens an incident, waits for a second operator (the admin token cannot
// approve; a workload named --approver can), and then mails the notice to
// an SMTP server this test runs. The audit log records every step.
func TestRespondCompromisedService(t *testing.T) {
	root := t.TempDir()
	s := startServer(t, filepath.Join(root, "server"), "--approver", "spiffe://example.org/approver")
	tok := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	a := startAgent(t, s, filepath.Join(root, "agent"), tok)
	m := &mesh{t: t, s: s, a: a, binDir: t.TempDir()}
	smtpAddr, mails := smtpServer(t)

	// payments: HTTP behind a proxy; ledger: raw TCP behind a proxy.
	m.identity("payments", "")
	m.identity("ledger", "")
	m.identity("orders", "")
	m.identity("approver", "")
	m.putPolicy(paymentsPolicy)
	m.putPolicy("service: spiffe://example.org/ledger\nrules:\n  - name: orders\n    callers: [spiffe://example.org/orders]\n")
	payData, ledData := filepath.Join(root, "payments-data"), filepath.Join(root, "ledger-data")
	inPay := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", streamingApp(t), "--data", payData)[0]
	inLed := m.proxy("ledger", "--tcp", "--inbound", "127.0.0.1:0", "--app", echoApp(t), "--data", ledData)[0]

	// The theft: orders' SVID and key, fetched as the orders binary would.
	stolen := stealSVID(t, m, "orders")
	approverSVID := stealSVID(t, m, "approver")

	playbook := filepath.Join(root, "playbook.yaml")
	os.WriteFile(playbook, []byte(strings.ReplaceAll(`name: compromised-service
trigger:
  rules: [denied-burst]
  labels: {actor.spiffe_id: "spiffe://example.org/orders"}
vars: {service: actor.spiffe_id}
steps:
  - name: contain
    action: quarantine
    with: {identity: "${service}", reason: "stolen identity probing payments"}
    timeout: 10s
  - name: revoke
    action: revoke_svids
    with: {identity: "${service}"}
  - name: open-incident
    action: incident
    with: {title: "compromised ${service}", severity: high, status: contained}
  - name: tell-security
    action: notice
    with: {notice: security}
    approval: {role: approver}
notices:
  security:
    audience: the security team
    channel: smtp
    addr: SMTP
    from: rampart@example.org
    to: [security@example.org]
    subject: "[incident {{.Incident.ID}}] {{.Vars.service}} quarantined"
    body: "{{.Vars.service}} was quarantined after: {{.Alert.Summary}}"
`, "SMTP", smtpAddr)), 0o600)
	if out := mustCLI(t, s.adminEnv(), "playbook", "put", playbook); !strings.Contains(out, "version 1") {
		t.Fatalf("playbook put: %s", out)
	}

	// The attacker's open connections, with the stolen identity.
	h2 := attackerTransport(t, stolen, "payments")
	req, _ := http.NewRequest(http.MethodGet, "https://"+inPay+"/payments/stream", nil)
	resp, err := h2.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("attacker's HTTP/2 stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	stream := bufio.NewReader(resp.Body)
	if line, _ := stream.ReadString('\n'); line != "tick\n" {
		t.Fatalf("stream: %q", line)
	}
	tcpConn, err := tls.Dial("tcp", inLed, attackerTLS(t, stolen, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	defer tcpConn.Close()
	tcp := bufio.NewReader(tcpConn)
	io.WriteString(tcpConn, "ping\n")
	if line, _ := tcp.ReadString('\n'); line != "ping\n" {
		t.Fatalf("tcp echo: %q", line)
	}
	var mu sync.Mutex
	ended := map[string]time.Time{}
	watch := func(name string, r io.Reader) {
		go func() {
			io.Copy(io.Discard, r)
			mu.Lock()
			ended[name] = time.Now()
			mu.Unlock()
		}()
	}
	watch("http2-stream", stream)
	watch("raw-tcp", tcp)

	// The attack the detector sees: probing what the policy refuses.
	probe := attackerTransport(t, stolen, "payments")
	for range 30 {
		req, _ := http.NewRequest(http.MethodGet, "https://"+inPay+"/admin/export", nil)
		if r, err := probe.RoundTrip(req); err == nil {
			r.Body.Close()
		}
	}

	// Detection → playbook → quarantine → waiting for approval.
	var inc respond.Incident
	eventually(t, 90*time.Second, "an incident opened by the playbook", func() error {
		out, err := cli(t, s.adminEnv(), "incident", "list", "--json")
		if err != nil {
			return err
		}
		var ins []respond.Incident
		if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins) == 0 {
			return fmt.Errorf("no incident yet: %s", out)
		}
		inc = ins[0]
		return nil
	})
	var view respond.IncidentView
	eventually(t, 30*time.Second, "the run waits for approval", func() error {
		out, err := cli(t, s.adminEnv(), "incident", "show", inc.ID, "--json")
		if err != nil {
			return err
		}
		view = respond.IncidentView{}
		json.Unmarshal([]byte(out), &view)
		if len(view.Runs) != 1 || view.Runs[0].State != respond.RunWaiting {
			return fmt.Errorf("runs: %s", out)
		}
		return nil
	})
	run := view.Runs[0]
	contain := run.Steps[0]
	if contain.State != respond.StepSucceeded || run.Steps[1].State != respond.StepSucceeded || !strings.Contains(run.Steps[1].Result, "revoked") {
		t.Fatalf("steps: %+v", run.Steps)
	}
	if view.Incident.Status != "contained" || !strings.Contains(view.Incident.Title, "spiffe://example.org/orders") {
		t.Errorf("incident: %+v", view.Incident)
	}

	// What was open ended within 2 s of the quarantine, and not before it.
	eventually(t, 10*time.Second, "the attacker's open connections end", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(ended) < 2 {
			return fmt.Errorf("ended so far: %v", ended)
		}
		return nil
	})
	for name, at := range ended {
		lag := at.Sub(contain.Ended)
		t.Logf("%s ended %v after the quarantine was recorded", name, lag.Round(time.Millisecond))
		if at.Before(contain.Started) {
			t.Errorf("%s ended before the quarantine (%v): something else cut it", name, contain.Started.Sub(at))
		}
		if lag > 2*time.Second {
			t.Errorf("%s ended %v after the quarantine, want within 2s", name, lag)
		}
	}
	// New calls with the stolen identity: refused.
	fresh := attackerTransport(t, stolen, "payments")
	req, _ = http.NewRequest(http.MethodGet, "https://"+inPay+"/payments/1", nil)
	if r, err := fresh.RoundTrip(req); err == nil {
		r.Body.Close()
		t.Errorf("a new call of the quarantined identity was answered %d", r.StatusCode)
	}
	if c, err := tls.Dial("tcp", inLed, attackerTLS(t, stolen, "ledger")); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "again\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			t.Errorf("a new TCP connection of the quarantined identity echoed %q", line)
		}
		c.Close()
	}

	// The notice waits for a second person: not the admin token (no one
	// in particular), but the approver workload.
	if len(mails()) != 0 {
		t.Fatal("the notice went out before the approval")
	}
	if out, err := cli(t, s.adminEnv(), "incident", "approve", inc.ID); err == nil || !strings.Contains(out, "not a named operator") {
		t.Fatalf("the admin token approved: %v %s", err, out)
	}
	mustCLI(t, s.adminEnv(), "incident", "approve", inc.ID, "--svid-cert", approverSVID.cert, "--svid-key", approverSVID.key)
	eventually(t, 20*time.Second, "the notice in the mailbox", func() error {
		if len(mails()) == 0 {
			return fmt.Errorf("no mail")
		}
		return nil
	})
	mail := mails()[0]
	if !strings.Contains(mail, "Subject: [incident "+inc.ID+"] spiffe://example.org/orders quarantined") || !strings.Contains(mail, "was quarantined after") {
		t.Errorf("mail: %q", mail)
	}

	// The audit log has every step, with who did it.
	out := mustCLI(t, nil, "audit", "query", "--data", s.dir, "--source", "server", "--json", "--limit", "100000")
	for _, want := range []string{`"action":"detect.alert"`, `"action":"playbook.put"`, `"action":"playbook.run"`, `"action":"respond.quarantine"`,
		`"action":"respond.step"`, `"action":"svid.revoke"`, `"action":"incident.open"`, `"action":"respond.approval_requested"`,
		`"action":"respond.approve","target":"compromised-service","outcome":"denied"`, `"spiffe_id":"spiffe://example.org/approver"},"action":"respond.approve"`,
		`"action":"respond.notice"`, `"action":"playbook.run_end"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	// And the breach scope names what the stolen identity reached and
	// was refused, attached to the incident.
	sc := mustCLI(t, s.adminEnv(), "incident", "scope", inc.ID, "--identity", "spiffe://example.org/orders", "--since", "1h", "--json")
	var scope respond.Scope
	if err := json.Unmarshal([]byte(sc), &scope); err != nil {
		t.Fatal(err)
	}
	if len(scope.Refused) == 0 || scope.Refused[0].Path != "/admin/export" || len(scope.SVIDs) == 0 {
		t.Errorf("scope: %s", sc)
	}
	if rep := mustCLI(t, s.adminEnv(), "incident", "report", inc.ID); !strings.Contains(rep, "/admin/export") || !strings.Contains(rep, "approved by") {
		t.Errorf("report:\n%s", rep)
	}
	mustCLI(t, s.adminEnv(), "incident", "lift", "spiffe://example.org/orders", "--reason", "orders rebuilt and re-enrolled")
}

type svidFiles struct{ cert, key, bundle string }

// stealSVID fetches NAME's SVID from the agent as NAME's binary.
func stealSVID(t *testing.T, m *mesh, name string) svidFiles {
	t.Helper()
	dir := filepath.Join(m.binDir, name+"-svid")
	os.MkdirAll(dir, 0o700)
	bin := filepath.Join(m.binDir, name+"-proxy")
	eventually(t, 30*time.Second, "fetching "+name+"'s SVID", func() error {
		p := startBin(t, bin, nil, "svid", "fetch", "--socket", m.a.socket, "--write", dir)
		<-p.done
		if _, err := os.Stat(filepath.Join(dir, "svid.key")); err != nil {
			return fmt.Errorf("%v: %s", err, p.out.String())
		}
		return nil
	})
	return svidFiles{filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"), filepath.Join(dir, "bundle.pem")}
}

func attackerTLS(t *testing.T, f svidFiles, target string) *tls.Config {
	t.Helper()
	sv, err := x509svid.Load(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.MTLSClientConfig(sv, b, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/"+target)))
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

func attackerTransport(t *testing.T, f svidFiles, target string) *http.Transport {
	tr := &http.Transport{TLSClientConfig: attackerTLS(t, f, target), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// streamingApp answers /payments/stream with a line, then a line a second
// until the caller goes; anything else with "ok".
func streamingApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/payments/stream" {
			io.WriteString(w, "ok")
			return
		}
		for {
			io.WriteString(w, "tick\n")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func echoApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// smtpServer speaks enough SMTP (RFC 5321) for net/smtp and keeps messages.
func smtpServer(t *testing.T) (string, func() []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var msgs []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				io.WriteString(c, "220 test ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.Fields(line + " x")[0]) {
					case "EHLO", "HELO":
						io.WriteString(c, "250 test\r\n")
					case "DATA":
						io.WriteString(c, "354 go on\r\n")
						var b strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil || l == ".\r\n" {
								break
							}
							b.WriteString(l)
						}
						mu.Lock()
						msgs = append(msgs, b.String())
						mu.Unlock()
						io.WriteString(c, "250 queued\r\n")
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), msgs...) }
}
