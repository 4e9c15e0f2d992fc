package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// decisionsIn sums what the audit log's authz.decision entries matching
// keep stand for: an entry with details.count stands for that many
// decisions (an aggregate), any other for one.
func decisionsIn(t *testing.T, es []map[string]any, keep func(map[string]any) bool) int {
	t.Helper()
	n := 0
	for _, e := range es {
		if !keep(e) {
			continue
		}
		d, _ := e["details"].(map[string]any)
		c, ok := d["count"].(string)
		if !ok {
			n++
			continue
		}
		k, err := strconv.Atoi(c)
		if err != nil || k < 1 {
			t.Fatalf("entry with count %q", c)
		}
		n += k
	}
	return n
}

// Issue 27: a caller that floods a denied path over HTTP/1.1 and HTTP/2,
// cancelling its requests and resetting its streams, erased 16-24% of its
// own deny records (the spool waited on the request's context). Every
// decision the proxy made must be in the audit log, one by one or in an
// aggregate's count, and the flood must be a bounded number of entries.
func TestDeniedFloodIsFullyAudited(t *testing.T) {
	m := newMesh(t)
	m.identity("payments", "")
	m.putPolicy(paymentsPolicy)
	// The attacker: an SVID of its own, used directly against the inbound
	// proxy (it needs no proxy to reset streams).
	// (Its entry names the rampart binary, which fetches it, so that the
	// payments proxy, same uid, is not attested as the rogue too.)
	mustCLI(t, m.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/rogue", "--parent", agentID, "--selector", myUID(),
		"--selector", "unix:path:"+rampartBin)
	svidDir := t.TempDir()
	eventually(t, 20*time.Second, "the rogue's SVID", func() error {
		_, err := cli(t, nil, "svid", "fetch", "--socket", m.a.socket, "--timeout", "3s", "--write", svidDir)
		return err
	})
	cert, err := tls.LoadX509KeyPair(filepath.Join(svidDir, "svid.pem"), filepath.Join(svidDir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	metrics := freeAddr(t)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t), "--data", filepath.Join(m.binDir, "payments-data"), "--metrics-listen", metrics)[0]

	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 8,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true}}

	const workers, perWorker = 8, 400
	var sent, answered atomic.Int64
	flood := func(c *http.Client, proto string) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					ctx, cancel := context.WithCancel(context.Background())
					ctx, stop := context.WithTimeout(ctx, 10*time.Second)
					cancelEarly := i%2 == 0 // half are given up as soon as they are sent
					ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
						sent.Add(1)
						if cancelEarly {
							cancel() // HTTP/2: RST_STREAM; HTTP/1.1: the connection closes
						}
					}})
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s/admin/%s/%d/%d", inB, proto, w, i), nil)
					resp, err := c.Do(req)
					if err == nil {
						if resp.StatusCode != http.StatusForbidden {
							t.Errorf("%s: got %d, want 403", proto, resp.StatusCode)
						}
						if resp.ProtoMajor != map[string]int{"h1": 1, "h2": 2}[proto] {
							t.Errorf("%s request went over %s", proto, resp.Proto)
						}
						resp.Body.Close()
						answered.Add(1)
					}
					stop()
					cancel()
				}
			})
		}
		wg.Wait()
	}
	flood(h1, "h1")
	flood(h2, "h2")
	if t.Failed() {
		t.FailNow()
	}

	// The proxy's own count of its deny decisions, once it is stable.
	var decided int
	eventually(t, 30*time.Second, "the proxy's decisions to settle", func() error {
		a := int(scrape(t, metrics)[`rampart_authz_decisions_total{outcome="deny"}`])
		b := int(scrape(t, metrics)[`rampart_authz_decisions_total{outcome="deny"}`])
		if a != b || a == 0 {
			return fmt.Errorf("still moving: %d, %d", a, b)
		}
		decided = a
		return nil
	})
	if int64(decided) < answered.Load() || int64(decided) > sent.Load() {
		t.Fatalf("the proxy decided %d times; %d requests were sent, %d answered", decided, sent.Load(), answered.Load())
	}
	rogue := func(e map[string]any) bool {
		return e["outcome"] == "denied" && e["actor"].(map[string]any)["spiffe_id"] == "spiffe://example.org/rogue"
	}
	var entries, inLog int
	eventually(t, 60*time.Second, "every deny decision in the audit log", func() error {
		es := auditDecisions(t, m.s.dir)
		inLog = decisionsIn(t, es, rogue)
		entries = 0
		for _, e := range es {
			if rogue(e) {
				entries++
			}
		}
		if inLog != decided {
			return fmt.Errorf("the audit log holds %d of the rogue's %d deny decisions", inLog, decided)
		}
		return nil
	})
	// Bounded: distinct paths are at most 64 kinds per interval, then one
	// aggregate per interval; the flood lasted seconds.
	if entries > 2*workers*perWorker/10 {
		t.Fatalf("%d entries for %d decisions: the flood is not bounded", entries, decided)
	}
	t.Logf("%d requests sent, %d answered, %d decided, in %d audit entries", sent.Load(), answered.Load(), decided, entries)
}
