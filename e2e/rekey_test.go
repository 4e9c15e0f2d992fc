package e2e

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// stolenSVID is an SVID with its key, as an intruder copies it from a
// host (the agent's cache.json).
type stolenSVID struct {
	id   string
	cert tls.Certificate
}

func stealFromAgentCache(t *testing.T, a *agent) map[string]stolenSVID {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dir, "data", "cache.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cf struct {
		Agent     *cachedSVIDFile            `json:"agent"`
		Workloads map[string]*cachedSVIDFile `json:"workloads"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	out := map[string]stolenSVID{}
	for _, c := range append([]*cachedSVIDFile{cf.Agent}, mapValues(cf.Workloads)...) {
		if c == nil {
			continue
		}
		key, err := x509.ParsePKCS8PrivateKey(c.Key)
		if err != nil {
			t.Fatal(err)
		}
		out[c.SpiffeID] = stolenSVID{id: c.SpiffeID, cert: tls.Certificate{Certificate: c.Chain, PrivateKey: key.(crypto.Signer)}}
	}
	return out
}

type cachedSVIDFile struct {
	SpiffeID string   `json:"spiffe_id"`
	Chain    [][]byte `json:"chain"`
	Key      []byte   `json:"key"`
}

func mapValues[K comparable, V any](m map[K]V) []V {
	var out []V
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// callWith calls url over mTLS presenting cert, trusting nothing about
// the server (the data plane authenticates by SPIFFE ID; here only the
// client side matters). It returns the status, or the error.
func callWith(cert tls.Certificate, rawURL string, hdr http.Header) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}}
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// rekeyState is the part of the burn-down's JSON the test reads.
type rekeyState struct {
	ID      string `json:"id"`
	Phase   string `json:"phase"`
	NewRoot string `json:"new_root"`
	CA      struct {
		RetiredRoots []string `json:"retired_roots"`
	} `json:"ca"`
	DroppedCA []string `json:"dropped_ca"`
	OAuth     struct {
		OldKeys []string `json:"old_keys"`
		NewKey  string   `json:"new_key"`
		Dropped []string `json:"dropped"`
	} `json:"oauth"`
	KMS []struct {
		Key        string `json:"key"`
		NewVersion int    `json:"new_version"`
		Retired    []int  `json:"retired"`
	} `json:"kms"`
	SVIDs struct {
		Before     int      `json:"before"`
		Reissued   int      `json:"reissued"`
		Revoked    int      `json:"revoked"`
		Hosts      []string `json:"hosts"`
		Stragglers []struct {
			SpiffeID string `json:"spiffe_id"`
		} `json:"stragglers"`
	} `json:"svids"`
	Steps []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"steps"`
}

// The burn-down with real processes: a server, two agents (one of them a
// compromised host that is switched off), two services calling each other
// through their proxies under continuous traffic. rampart rekey replaces
// everything; no request fails during or after; afterwards the old root is
// gone from the bundle, the SVIDs and the OAuth token from before are
// refused by the data plane and the control plane, the key store's old
// version is on its way to destruction, and the report names the host
// that still held SVIDs from before.
func TestRekeyUnderTraffic(t *testing.T) {
	root := t.TempDir()
	s := startServer(t, filepath.Join(root, "server"), "--agent-svid-ttl", "40s")
	env := s.adminEnv()
	tok := mustCLI(t, env, "token", "create", "--agent-name", "node-1")
	a := startAgent(t, s, filepath.Join(root, "agent"), tok)
	m := &mesh{t: t, s: s, a: a, binDir: t.TempDir()}
	// SVIDs of a minute: renewed by the schedule only 24-30 s after issue,
	// so one replaced sooner was replaced by the burn-down.
	m.identity("orders", "60s")
	m.identity("payments", "60s")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	outA := m.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://example.org/payments")[1]

	// A second host, compromised: it got its SVIDs, then went dark.
	tok2 := mustCLI(t, env, "token", "create", "--agent-name", "node-2")
	a2 := startAgent(t, s, filepath.Join(root, "agent2"), tok2)
	mustCLI(t, env, "entry", "create", "--spiffe-id", "spiffe://example.org/batch", "--parent", "spiffe://example.org/rampart/agent/node-2",
		"--selector", myUID(), "--ttl", "20m")
	// The workload runs there and asks once (agents mint an SVID when its
	// workload first asks, not for every entry).
	eventually(t, 20*time.Second, "node-2 holds its workload SVID", func() error {
		fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := workloadapi.FetchX509SVID(fctx, addr(a2)); err != nil {
			return err
		}
		if _, ok := stealFromAgentCache(t, a2)["spiffe://example.org/batch"]; !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	a2.stop()

	// A key store key with data under its first version.
	mustCLI(t, env, "kms", "key", "create", "orders-db")

	// An OAuth client and a token for payments, from before.
	out := mustCLI(t, env, "oauth", "client", "create", "--id", "reports", "--auth-method", "client_secret_post",
		"--grant", "client_credentials", "--audience", "spiffe://example.org/payments")
	secret := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	if secret == nil {
		t.Fatalf("no client secret:\n%s", out)
	}
	_, hc := trustServer(s.dir)
	issuer := "https://" + s.addr
	token := func() string {
		t.Helper()
		resp, err := hc.PostForm(issuer+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"reports"}, "client_secret": {secret[1]}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&tr)
		if tr.AccessToken == "" {
			t.Fatalf("token endpoint: %d", resp.StatusCode)
		}
		return tr.AccessToken
	}
	oldToken := token()
	bearer := func(tok string) (int, string) {
		return get(t, "http://"+outA+"/payments/9", map[string]string{"Authorization": "Bearer " + tok})
	}
	eventually(t, 20*time.Second, "the proxies accept the token from before", func() error {
		if code, body := bearer(oldToken); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})

	// What an intruder copies from the hosts before the burn-down.
	stolen := stealFromAgentCache(t, a)
	oldOrders, oldAgent := stolen["spiffe://example.org/orders"], stolen["spiffe://example.org/rampart/agent/node-1"]
	if oldOrders.id == "" || oldAgent.id == "" {
		t.Fatalf("cache holds %v", mapValues(stolen))
	}
	if code, err := callWith(oldOrders.cert, "https://"+inB+"/payments/1", nil); err != nil || code != 200 {
		t.Fatalf("the copied SVID before the burn-down (must work, or the test proves nothing): %d %v", code, err)
	}
	if code, err := callWith(oldAgent.cert, "https://"+s.addr+"/v1/agent/sync", nil); err != nil || code != 200 {
		t.Fatalf("the copied agent SVID before the burn-down: %d %v", code, err)
	}
	bundleBefore, _ := os.ReadFile(filepath.Join(s.dir, "bundle.pem"))

	// Continuous traffic through the proxies, kept-alive and fresh
	// connections, from before the burn-down to after it.
	var ok, failed atomic.Int64
	stopTraffic := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	call := func(c *http.Client, path string) {
		resp, err := c.Get("http://" + outA + path)
		if err != nil {
			failed.Add(1)
			t.Logf("failed request: %v", err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed.Add(1)
			t.Logf("failed request: %d %s", resp.StatusCode, b)
			return
		}
		ok.Add(1)
	}
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stopTraffic:
					return
				default:
				}
				call(client, "/payments/7")
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stopTraffic:
				return
			case <-time.After(50 * time.Millisecond):
			}
			call(&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, "/payments/8")
		}
	})

	// The dry run first: nothing changes.
	plan := mustCLI(t, env, "rekey", "--dry-run")
	if !strings.Contains(plan, "dry run") {
		t.Fatalf("dry run:\n%s", plan)
	}
	if b, _ := os.ReadFile(filepath.Join(s.dir, "bundle.pem")); string(b) != string(bundleBefore) {
		t.Fatal("the dry run changed the bundle")
	}

	// The burn-down: it waits past the old SVIDs' recycling (45 s after
	// their issue) and for node-2 until the deadline.
	before := stealFromAgentCache(t, a)["spiffe://example.org/payments"]
	if _, err := cli(t, env, "rekey", "--propagation", "2s", "--deadline", "50s", "--revoke-tokens", "--kms-grace", "2h", "--no-wait"); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	// The agent re-issues at once when the new root signs (told by the
	// sync), not at the SVIDs' renewal time.
	var newRoot string
	eventually(t, 10*time.Second, "the new root signs", func() error {
		var st rekeyState
		json.Unmarshal([]byte(mustCLI(t, env, "rekey", "status", "--json")), &st)
		for _, s := range st.Steps {
			if s.Name == "ca.activate-root" && s.Status == "done" {
				newRoot = st.NewRoot
				return nil
			}
		}
		return fmt.Errorf("not yet: %+v", st.Steps)
	})
	eventually(t, 5*time.Second, "payments re-issued under the new root", func() error {
		cur := stealFromAgentCache(t, a)["spiffe://example.org/payments"]
		inter, err := x509.ParseCertificate(cur.cert.Certificate[1])
		if err != nil {
			return err
		}
		if fmt.Sprintf("%x", inter.AuthorityKeyId) != newRoot {
			return fmt.Errorf("payments still under %x", inter.AuthorityKeyId)
		}
		return nil
	})
	if time.Since(started) > 20*time.Second {
		t.Fatalf("re-issue took %v: that is the schedule, not the burn-down", time.Since(started))
	}
	if stealFromAgentCache(t, a)["spiffe://example.org/payments"].cert.Certificate[0][0] == 0 || before.id == "" {
		t.Fatal("no payments SVID")
	}
	var report string
	eventually(t, 90*time.Second, "the burn-down finishes", func() error {
		out := mustCLI(t, env, "rekey", "status")
		if !strings.Contains(out, "| Phase | finished |") {
			return fmt.Errorf("not finished")
		}
		report = out
		return nil
	})
	t.Logf("report:\n%s", report)
	// Keep the traffic going a little after the finish.
	time.Sleep(3 * time.Second)
	close(stopTraffic)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 100 {
		t.Fatalf("%d requests failed, %d succeeded across the burn-down", failed.Load(), ok.Load())
	}
	t.Logf("%d requests across the burn-down, none failed", ok.Load())

	var st rekeyState
	if err := json.Unmarshal([]byte(mustCLI(t, env, "rekey", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != "finished" {
		t.Fatalf("phase %s: %+v", st.Phase, st.Steps)
	}
	for _, s := range st.Steps {
		if s.Status != "done" {
			t.Fatalf("step %s: %s", s.Name, s.Status)
		}
	}
	// The report names the dark host, and only it.
	if len(st.SVIDs.Hosts) != 1 || st.SVIDs.Hosts[0] != "spiffe://example.org/rampart/agent/node-2" || !strings.Contains(report, "rampart agent evict") ||
		len(st.SVIDs.Stragglers) != 1 || st.SVIDs.Stragglers[0].SpiffeID != "spiffe://example.org/batch" {
		t.Fatalf("hosts still holding SVIDs from before: %v", st.SVIDs.Hosts)
	}
	// Which SVIDs from before are still unexpired at the census depends
	// on when the schedule last renewed them; node-1's own and at least
	// one workload's always are, and node-2's batch SVID (20 minutes).
	if st.SVIDs.Reissued < 2 || st.SVIDs.Before != st.SVIDs.Reissued+1 || st.SVIDs.Revoked < st.SVIDs.Before {
		t.Fatalf("svids: %+v", st.SVIDs)
	}

	// The old root is gone from the bundle the server publishes.
	bundle, err := os.ReadFile(filepath.Join(s.dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := parsePEMCerts(t, bundle)
	if len(roots) != 1 || fmt.Sprintf("%x", roots[0].SubjectKeyId) != st.NewRoot {
		t.Fatalf("bundle after the burn-down: %d roots, want only the new one %s", len(roots), st.NewRoot)
	}
	for _, old := range st.CA.RetiredRoots {
		if !strings.Contains(strings.Join(st.DroppedCA, " "), old) {
			t.Fatalf("old root %s not dropped: %v", old, st.DroppedCA)
		}
	}

	// A certificate issued under the old CA is refused: by the data plane
	// and by the control plane.
	if code, err := callWith(oldOrders.cert, "https://"+inB+"/payments/1", nil); err == nil && code == 200 {
		t.Fatal("the inbound proxy accepted an SVID issued under the old CA")
	}
	if code, err := callWith(oldAgent.cert, "https://"+s.addr+"/v1/agent/sync", nil); err == nil && code == 200 {
		t.Fatal("the server accepted an agent SVID issued under the old CA")
	}
	// The OAuth token from before is refused (--revoke-tokens); a new one works.
	if code, body := bearer(oldToken); code != 401 {
		t.Fatalf("token signed by the old key: %d %s", code, body)
	}
	eventually(t, 10*time.Second, "a token from after works", func() error {
		if code, body := bearer(token()); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	if len(st.OAuth.Dropped) == 0 || st.OAuth.NewKey == "" {
		t.Fatalf("oauth: %+v", st.OAuth)
	}

	// The key store: a second version signs; the first is refused and due
	// for destruction.
	show := mustCLI(t, env, "kms", "key", "show", "orders-db", "--json")
	if !strings.Contains(show, "destroy-scheduled") || len(st.KMS) != 1 || st.KMS[0].NewVersion != 2 {
		t.Fatalf("kms after the burn-down: %+v\n%s", st.KMS, show)
	}

	// The host the report names is evicted (then rebuilt and re-joined
	// with a new join token, docs/operations.md).
	mustCLI(t, env, "agent", "evict", "node-2")

	// Every step is in the audit log, as is the request.
	s.stop()
	log, err := cli(t, nil, "audit", "query", "--data", s.dir, "--json", "--limit", "1000000")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"action":"rekey.request"`, `"action":"rekey.start"`, `"action":"rekey.finish"`,
		`"step":"ca.drop-old"`, `"step":"svids.revoke-old"`, `"step":"kms.retire-old"`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}

func parsePEMCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
		b = rest
	}
}
