// Command respond measures alert to quarantine in force at every proxy,
// with real processes: a server, an agent, three inbound proxies, and a
// client holding a keep-alive connection to each with the identity to
// quarantine. Each drill starts a quarantine playbook for a simulated
// alert and times, from the alert, until every proxy has ended the
// connection it held; then the quarantine is lifted and the connections
// reopened. It prints p50, p99 and max over the drills. Run it through
// bench/respond.sh.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/respond"
)

var (
	bin    = flag.String("rampart", "bench/out/rampart", "the rampart binary")
	drills = flag.Int("drills", 50, "drills to run")
)

const playbook = `name: contain
vars: {service: actor.spiffe_id}
steps:
  - action: quarantine
    with: {identity: "${service}", reason: "bench drill"}
`

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "respond bench:", err)
		os.Exit(1)
	}
}

var procs []*exec.Cmd

func start(exe string, env []string, args ...string) error {
	c := exec.Command(exe, args...)
	c.Env = append(os.Environ(), env...)
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		return err
	}
	procs = append(procs, c)
	return nil
}

func waitFile(path string) (string, error) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", fmt.Errorf("%s did not appear", path)
}

func run() error {
	work, err := os.MkdirTemp("", "rampart-bench-respond")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	defer func() {
		for _, p := range slices.Backward(procs) { // proxies first, the server last
			p.Process.Signal(os.Interrupt)
			p.Wait()
		}
	}()
	ctx := context.Background()
	srvDir := filepath.Join(work, "server")
	if err := start(*bin, []string{"RAMPART_READY_FILE=" + filepath.Join(work, "srv.ready")}, "server", "--data", srvDir,
		"--listen", "127.0.0.1:0", "--trust-domain", "example.org", "--log-level", "warn"); err != nil {
		return err
	}
	addr, err := waitFile(filepath.Join(work, "srv.ready"))
	if err != nil {
		return err
	}
	tok, _ := os.ReadFile(filepath.Join(srvDir, "admin.token"))
	pem, _ := os.ReadFile(filepath.Join(srvDir, "bundle.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	admin := &api.Client{BaseURL: "https://" + addr, AdminToken: strings.TrimSpace(string(tok)),
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}}
	var jt api.CreateJoinTokenResponse
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "bench"}, &jt); err != nil {
		return err
	}
	sock := filepath.Join(work, "agent.sock")
	if err := start(*bin, []string{"RAMPART_JOIN_TOKEN=" + jt.Token}, "agent", "--server", addr, "--ca-bundle", filepath.Join(srvDir, "bundle.pem"),
		"--socket", sock, "--data", filepath.Join(work, "agent"), "--log-level", "warn"); err != nil {
		return err
	}
	services := []string{"svc-a", "svc-b", "svc-c"}
	exe := map[string]string{}
	for _, name := range append([]string{"orders"}, services...) {
		p := filepath.Join(work, name+"-rampart")
		b, _ := os.ReadFile(*bin)
		os.WriteFile(p, b, 0o755)
		exe[name] = p
		e := api.Entry{SpiffeID: "spiffe://example.org/" + name, ParentID: jt.AgentID,
			Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + p}}
		if err := admin.Do(ctx, http.MethodPost, "/v1/entries", e, nil); err != nil {
			return err
		}
	}
	app, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	inbound := map[string]string{}
	for _, svc := range services {
		policy := "service: spiffe://example.org/" + svc + "\nrules:\n  - name: orders\n    callers: [spiffe://example.org/orders]\n"
		if err := admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(policy), nil); err != nil {
			return err
		}
		ready := filepath.Join(work, svc+".ready")
		if err := start(exe[svc], []string{"RAMPART_READY_FILE=" + ready}, "proxy", "--socket", sock, "--server", addr,
			"--inbound", "127.0.0.1:0", "--app", app.Addr().String(), "--log-level", "warn"); err != nil {
			return err
		}
		s, err := waitFile(ready)
		if err != nil {
			return err
		}
		inbound[svc] = strings.Split(s, "\n")[0]
	}
	svidDir := filepath.Join(work, "orders-svid")
	var out []byte
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if out, err = exec.Command(exe["orders"], "svid", "fetch", "--socket", sock, "--write", svidDir, "--timeout", "2s").CombinedOutput(); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("svid fetch: %v %s", err, out)
	}
	sv, err := x509svid.Load(filepath.Join(svidDir, "svid.pem"), filepath.Join(svidDir, "svid.key"))
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), filepath.Join(svidDir, "bundle.pem"))
	if err != nil {
		return err
	}
	if err := admin.DoRaw(ctx, http.MethodPut, "/v1/playbooks", "application/yaml", []byte(playbook), nil); err != nil {
		return err
	}
	// hold opens a keep-alive connection to svc and returns a channel that
	// receives when the proxy ends it.
	hold := func(svc string) (chan time.Time, error) {
		cfg := tlsconfig.MTLSClientConfig(sv, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/"+svc)))
		cfg.NextProtos = []string{"http/1.1"}
		c, err := tls.Dial("tcp", inbound[svc], cfg)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.Close()
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			c.Close()
			return nil, fmt.Errorf("%s answered %d", svc, resp.StatusCode)
		}
		ch := make(chan time.Time, 1)
		go func() { io.Copy(io.Discard, br); ch <- time.Now(); c.Close() }()
		return ch, nil
	}
	var lat, recorded []time.Duration
	for i := 0; i < *drills; i++ {
		var ends []chan time.Time
		for _, svc := range services {
			var ch chan time.Time
			for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if ch, err = hold(svc); err == nil || time.Now().After(end) {
					break
				}
			}
			if err != nil {
				return fmt.Errorf("drill %d: %s: %w", i, svc, err)
			}
			ends = append(ends, ch)
		}
		alert := time.Now()
		var r respond.Run
		if err := admin.Do(ctx, http.MethodPost, "/v1/playbooks/contain/run", respond.RunRequest{Drill: true,
			Alert: &respond.AlertFacts{ID: "bench", Rule: "bench", Severity: "high", Group: "actor.spiffe_id=spiffe://example.org/orders", FirstSeen: alert}}, &r); err != nil {
			return err
		}
		var last time.Time
		for j, ch := range ends {
			select {
			case t := <-ch:
				if t.After(last) {
					last = t
				}
			case <-time.After(30 * time.Second):
				return fmt.Errorf("drill %d: %s kept the connection 30s after the quarantine", i, services[j])
			}
		}
		lat = append(lat, last.Sub(alert))
		for r.State == respond.RunRunning {
			time.Sleep(10 * time.Millisecond)
			admin.Do(ctx, http.MethodGet, "/v1/runs/"+r.ID, nil, &r)
		}
		if !r.ContainedAt.IsZero() {
			recorded = append(recorded, r.ContainedAt.Sub(alert))
		}
		if err := admin.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: "spiffe://example.org/orders", Reason: "bench drill over"}, nil); err != nil {
			return err
		}
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	fmt.Printf("%d drills, %d proxies each: alert to quarantine in force at every proxy (open connection ended): p50 %v, p99 %v, max %v\n",
		len(lat), len(services), pct(lat, 0.5).Round(time.Millisecond), pct(lat, 0.99).Round(time.Millisecond), pct(lat, 1).Round(time.Millisecond))
	if len(recorded) > 0 {
		fmt.Printf("alert to quarantine recorded by the server: p50 %v, p99 %v\n", pct(recorded, 0.5).Round(time.Millisecond), pct(recorded, 0.99).Round(time.Millisecond))
	}
	return nil
}
