package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The red team (issues 26-27 follow-up) held ~21,000 stalled TCP
// handshakes against an inbound proxy whose open-file limit was 20,000:
// every descriptor went to them, new mTLS connections timed out, /metrics
// went unanswered and the audit spool failed with "too many open files".
// Here the proxy runs with 1,024 descriptors (prlimit) and the flood is
// 1,500 connections that never send a byte, held open by the test. The
// proxy derives its bounds from its limit (256 connections; the
// handshakes are bounded by --inbound-max-handshakes, the oldest cut for
// a newer one), so while the flood is held a new mTLS caller is served,
// its decision reaches the audit log through the spool, /metrics answers,
// and the proxy's descriptors stay far from the limit.
func TestInboundConnectionFloodLeavesProxyWorking(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit (util-linux) is needed: apt-get install util-linux")
	}
	const nofile, flood, maxHandshakes = 1024, 1500, 48
	m := newMesh(t)
	payBin := m.identity("payments", "")
	m.putPolicy(`service: spiffe://example.org/payments
rules:
  - name: probe-reads-payments
    callers: [spiffe://example.org/probe]
    methods: [GET]
    paths: ["/payments/{id}"]
`)
	// The caller: an SVID of its own (its entry names the rampart binary,
	// which fetches it), used directly so that every request is a new
	// connection and a full mTLS handshake.
	mustCLI(t, m.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/probe", "--parent", agentID, "--selector", myUID(),
		"--selector", "unix:path:"+rampartBin)
	svidDir := t.TempDir()
	eventually(t, 20*time.Second, "the probe's SVID", func() error {
		_, err := cli(t, nil, "svid", "fetch", "--socket", m.a.socket, "--timeout", "3s", "--write", svidDir)
		return err
	})
	cert, err := tls.LoadX509KeyPair(filepath.Join(svidDir, "svid.pem"), filepath.Join(svidDir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	probe := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}
	scraper := &http.Client{Timeout: 5 * time.Second}

	metrics := freeAddr(t)
	ready := filepath.Join(m.binDir, "payments.ready")
	p := startBin(t, prlimit, []string{"RAMPART_READY_FILE=" + ready}, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--",
		payBin, "proxy", "--socket", m.a.socket, "--server", m.s.addr, "--inbound", "127.0.0.1:0", "--app", app(t),
		"--data", filepath.Join(m.binDir, "payments-data"), "--metrics-listen", metrics,
		"--inbound-max-handshakes", fmt.Sprint(maxHandshakes))
	inB := strings.Split(strings.TrimRight(waitFile(t, p, ready), "\n"), "\n")[0]
	get := func(path string) error {
		resp, err := probe.Get("https://" + inB + path)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	eventually(t, 20*time.Second, "the policy at the payments proxy", func() error { return get("/payments/0") })
	if !strings.Contains(p.out.String(), "inbound_max_conns=256 inbound_max_handshakes=48") {
		t.Fatalf("the proxy did not derive 256 connections from its %d descriptors, or ignored --inbound-max-handshakes:\n%s", nofile, p.out)
	}
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	base := fds()

	// The flood: connections that never send a byte, held until the end.
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < flood; i += 16 {
				c, err := net.DialTimeout("tcp", inB, 10*time.Second)
				if err != nil {
					t.Errorf("flood connection %d: %v", i, err)
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// While it is held: /metrics answers, and counts what the listener cut.
	var cut float64
	eventually(t, 30*time.Second, "the proxy to take in the flood", func() error {
		resp, err := scraper.Get("http://" + metrics + "/metrics")
		if err != nil {
			return fmt.Errorf("/metrics: %v", err)
		}
		resp.Body.Close()
		v := scrape(t, metrics)
		cut = v[fmt.Sprintf(`rampart_proxy_connections_refused_total{direction="inbound",listener="%s",reason="handshake_evicted"}`, inB)] +
			v[fmt.Sprintf(`rampart_proxy_connections_refused_total{direction="inbound",listener="%s",reason="max_conns"}`, inB)]
		if cut < flood-maxHandshakes {
			return fmt.Errorf("%v of the %d stalled connections cut", cut, flood)
		}
		return nil
	})
	// A new caller is served, over a new connection and a full handshake.
	if err := get("/payments/4242"); err != nil {
		t.Fatalf("a caller with a valid SVID, during the flood: %v", err)
	}
	// The proxy holds no more than its handshake bound of the flood.
	if n := fds(); n > base+maxHandshakes+32 {
		t.Fatalf("the proxy holds %d descriptors during the flood, %d before it (bound: %d handshakes)", n, base, maxHandshakes)
	}
	// The decision went through the spool to the server's audit log.
	eventually(t, 30*time.Second, "the decision in the audit log", func() error {
		for _, e := range auditDecisions(t, m.s.dir) {
			d, _ := e["details"].(map[string]any)
			if e["outcome"] == "success" && d["path"] == "/payments/4242" {
				return nil
			}
		}
		return fmt.Errorf("not there yet")
	})
	if strings.Contains(p.out.String(), "too many open files") {
		t.Fatalf("the proxy ran out of descriptors:\n%s", p.out)
	}
	t.Logf("%d descriptors before the flood, %d during; %v of %d flood connections cut", base, fds(), cut, flood)
}
