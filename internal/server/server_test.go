package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type harness struct {
	t      testing.TB
	srv    *Server
	clk    *fakeclock.Clock
	addr   string
	dir    string
	admin  *api.Client
	roots  *x509.CertPool
	cancel context.CancelFunc
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, Config{DataDir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0"})
}

// newHarnessWith serves a server made from cfg (its clock replaced by the
// harness's).
func newHarnessWith(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, clk: fakeclock.New(time.Now()), dir: cfg.DataDir}
	cfg.Now = h.clk.Now
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	h.srv, h.addr, h.cancel = srv, ln.Addr().String(), cancel
	tok, err := os.ReadFile(filepath.Join(h.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(h.dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	h.roots = x509.NewCertPool()
	h.roots.AppendCertsFromPEM(pem)
	h.admin = h.client(strings.TrimSpace(string(tok)), nil)
	return h
}

// client returns an API client with an optional admin token and client cert.
func (h *harness) client(token string, cert *tls.Certificate) *api.Client {
	cfg := &tls.Config{RootCAs: h.roots, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &api.Client{BaseURL: "https://" + h.addr, AdminToken: token,
		HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}}
}

func (h *harness) joinToken(name string) string {
	h.t.Helper()
	var resp api.CreateJoinTokenResponse
	if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: name}, &resp); err != nil {
		h.t.Fatal(err)
	}
	return resp.Token
}

func newCSR(t testing.TB, id spiffeid.ID, mod func(*x509.CertificateRequest)) (crypto.Signer, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// attest enrols an agent and returns its TLS certificate.
func (h *harness) attest(name string) (*tls.Certificate, *x509.Certificate) {
	h.t.Helper()
	key, csr := newCSR(h.t, spiffeid.ID{}, nil)
	var resp api.AttestResponse
	if err := h.client("", nil).Do(context.Background(), http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: h.joinToken(name), CSR: csr}, &resp); err != nil {
		h.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.SVID.Chain[0])
	if err != nil {
		h.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: resp.SVID.Chain, PrivateKey: key}, leaf
}

func wantStatus(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var p *api.Problem
	if !errors.As(err, &p) {
		t.Fatalf("got %v, want a %d problem", err, status)
	}
	if p.Status != status || !strings.Contains(p.Detail, contains) {
		t.Fatalf("got %d %q, want %d containing %q", p.Status, p.Detail, status, contains)
	}
}

func TestFirstStartWritesDataDir(t *testing.T) {
	h := newHarness(t)
	for name, mode := range map[string]os.FileMode{"admin.token": 0o600, "keys/kek": 0o600, "rampart.db": 0o600, "bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(h.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	// A restart with another trust domain is refused.
	other := spiffeid.RequireTrustDomainFromString("other.org")
	if _, err := New(context.Background(), Config{DataDir: h.dir, TrustDomain: other}); err == nil || !strings.Contains(err.Error(), "belongs to trust domain") {
		t.Fatalf("data dir reused for another trust domain: %v", err)
	}
}

// Attack: admin calls without a token or with a wrong one.
func TestAdminAuth(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, tok := range []string{"", "wrong", "rpa_" + strings.Repeat("A", 43)} {
		err := h.client(tok, nil).Do(ctx, http.MethodGet, "/v1/entries", nil, nil)
		wantStatus(t, err, http.StatusUnauthorized, "admin token")
	}
	// A valid agent certificate is not an admin credential either.
	cert, _ := h.attest("node-1")
	err := h.client("", cert).Do(ctx, http.MethodGet, "/v1/entries", nil, nil)
	wantStatus(t, err, http.StatusUnauthorized, "admin token")
	if err := h.admin.Do(ctx, http.MethodGet, "/v1/entries", nil, nil); err != nil {
		t.Fatalf("the right token is refused: %v", err)
	}
}

// Attack: reusing a join token, an expired token, an unknown token.
func TestJoinTokenOneTimeAndExpiry(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	tok := h.joinToken("node-1")
	_, csr := newCSR(t, spiffeid.ID{}, nil)
	anon := h.client("", nil)
	if err := anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: tok, CSR: csr}, nil); err != nil {
		t.Fatal(err)
	}
	err := anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: tok, CSR: csr}, nil)
	wantStatus(t, err, http.StatusUnauthorized, "join token")

	expiring := h.joinToken("node-2")
	h.clk.Add(11 * time.Minute)
	err = anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: expiring, CSR: csr}, nil)
	wantStatus(t, err, http.StatusUnauthorized, "join token")

	err = anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: "rjt_made-up", CSR: csr}, nil)
	wantStatus(t, err, http.StatusUnauthorized, "join token")

	// A TTL whose nanoseconds wrap past int64 to 290 ms is refused, not
	// taken for what it wraps to.
	err = h.admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "node-3", TTLSeconds: 18446744074}, nil)
	wantStatus(t, err, http.StatusBadRequest, "ttl_seconds: must be between 1 and 604800")
}

// Concurrent attempts to spend one token: exactly one succeeds.
func TestJoinTokenRace(t *testing.T) {
	h := newHarness(t)
	tok := h.joinToken("node-1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, csr := newCSR(t, spiffeid.ID{}, nil)
			if h.client("", nil).Do(context.Background(), http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: tok, CSR: csr}, nil) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d attestations succeeded with one token, want exactly 1", ok)
	}
}

// Attack: an agent presenting a certificate from another CA, even one that
// names a real agent ID.
func TestForeignCAAgentRefused(t *testing.T) {
	h := newHarness(t)
	h.attest("node-1")
	id, _ := identity.AgentID(td, "node-1")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "evil"}, URIs: []*url.URL{id.URL()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	err := h.client("", &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}).Do(context.Background(), http.MethodGet, "/v1/agent/sync", nil, nil)
	if err == nil {
		t.Fatal("a certificate from a foreign CA was accepted")
	}
	var p *api.Problem
	if errors.As(err, &p) {
		t.Fatalf("refused only after the handshake (%d); want a handshake failure", p.Status)
	}
}

// Attack: agent endpoints without any certificate; a workload SVID (not an
// agent) used as agent credential.
func TestAgentCallsNeedAgentSVID(t *testing.T) {
	h := newHarness(t)
	err := h.client("", nil).Do(context.Background(), http.MethodGet, "/v1/agent/sync", nil, nil)
	wantStatus(t, err, http.StatusUnauthorized, "client certificate")
}

// Attack: CSRs asking for another SPIFFE ID, a CA bit, a foreign trust
// domain; an entry of another agent.
func TestSignRefusesBadCSRs(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cert, _ := h.attest("node-1")
	h.attest("node-2")
	mine := h.createEntry("spiffe://example.org/orders", "spiffe://example.org/rampart/agent/node-1")
	theirs := h.createEntry("spiffe://example.org/payments", "spiffe://example.org/rampart/agent/node-2")
	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
	_, good := newCSR(t, orders, nil)
	_, other := newCSR(t, spiffeid.RequireFromString("spiffe://example.org/payments"), nil)
	_, foreign := newCSR(t, spiffeid.RequireFromString("spiffe://evil.org/orders"), nil)
	_, ca := newCSR(t, orders, func(r *x509.CertificateRequest) {
		bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
		r.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}
	})
	req := api.SignRequest{Requests: []api.SignItem{
		{EntryID: mine, CSR: good},
		{EntryID: mine, CSR: other},
		{EntryID: mine, CSR: foreign},
		{EntryID: mine, CSR: ca},
		{EntryID: theirs, CSR: other},
		{EntryID: "nope", CSR: good},
	}}
	var resp api.SignResponse
	if err := h.client("", cert).Do(ctx, http.MethodPost, "/v1/agent/svids", req, &resp); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "caller is entitled to", "foreign trust domain", "CA certificate", "not parented by", "not parented by"}
	for i, w := range want {
		r := resp.Results[i]
		if w == "" {
			if r.Error != "" || r.SVID == nil {
				t.Fatalf("item %d: legitimate CSR refused: %s", i, r.Error)
			}
			leaf, _ := x509.ParseCertificate(r.SVID.Chain[0])
			if leaf.URIs[0].String() != orders.String() || leaf.IsCA {
				t.Fatalf("item %d: issued %v CA=%v", i, leaf.URIs, leaf.IsCA)
			}
			continue
		}
		if r.SVID != nil || !strings.Contains(r.Error, w) {
			t.Errorf("item %d: got svid=%v error %q, want refusal containing %q", i, r.SVID != nil, r.Error, w)
		}
	}
}

// Attack: renewing after revocation; calling after eviction.
func TestRevokedAndEvictedAgentsCannotRenew(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id1, _ := identity.AgentID(td, "node-1")
	cert1, leaf1 := h.attest("node-1")
	_, csr := newCSR(t, id1, nil)
	renew := func(cert *tls.Certificate) error {
		return h.client("", cert).Do(ctx, http.MethodPost, "/v1/agent/renew", api.RenewRequest{CSR: csr}, nil)
	}
	if err := renew(cert1); err != nil {
		t.Fatalf("legitimate renewal refused: %v", err)
	}
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{Serial: leaf1.SerialNumber.Text(16)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := renew(cert1); err == nil {
		t.Fatal("renewed with a revoked certificate")
	}
	// The attempt is in the audit log, under the identity it claimed.
	found := false
	for i := int64(0); i < h.srv.audit.Size(); i++ {
		b, _ := h.srv.audit.Entry(i)
		e, err := audit.ParseEntry(b)
		if err == nil && e.Outcome == audit.OutcomeDenied && e.Actor.SpiffeID == id1.String() && strings.Contains(e.Reason, "revoked") {
			found = true
		}
	}
	if !found {
		t.Fatal("no audit entry for the use of a revoked certificate")
	}

	id2, _ := identity.AgentID(td, "node-2")
	cert2, _ := h.attest("node-2")
	var ev api.EvictResponse
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/agents/node-2/evict", nil, &ev); err != nil {
		t.Fatal(err)
	}
	if !ev.Agent.Evicted || len(ev.Revoked) == 0 {
		t.Fatalf("eviction response %+v", ev)
	}
	_, csr2 := newCSR(t, id2, nil)
	if err := h.client("", cert2).Do(ctx, http.MethodPost, "/v1/agent/renew", api.RenewRequest{CSR: csr2}, nil); err == nil {
		t.Fatal("an evicted agent renewed")
	}
}

// A CSR for another agent's ID during renewal is refused.
func TestRenewCannotChangeIdentity(t *testing.T) {
	h := newHarness(t)
	cert, _ := h.attest("node-1")
	_, csr := newCSR(t, spiffeid.RequireFromString("spiffe://example.org/rampart/agent/node-9"), nil)
	err := h.client("", cert).Do(context.Background(), http.MethodPost, "/v1/agent/renew", api.RenewRequest{CSR: csr}, nil)
	wantStatus(t, err, http.StatusBadRequest, "entitled to")
}

func (h *harness) createEntry(id, parent string) string {
	h.t.Helper()
	var e api.Entry
	if err := h.admin.Do(context.Background(), http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: parent, Selectors: []string{"unix:uid:1000"}}, &e); err != nil {
		h.t.Fatal(err)
	}
	return e.ID
}

func TestEntryValidation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	parent := "spiffe://example.org/rampart/agent/node-1"
	tests := []struct {
		name string
		body any
		want string
	}{
		{"unknown field", map[string]any{"spiffe_id": "spiffe://example.org/a", "parent_id": parent, "selectors": []string{"unix:uid:1"}, "pth": "/x"}, `unknown field "pth"`},
		{"wrong type", map[string]any{"spiffe_id": 42}, `field "spiffe_id"`},
		{"foreign domain", api.Entry{SpiffeID: "spiffe://evil.org/a", ParentID: parent, Selectors: []string{"unix:uid:1"}}, "spiffe_id:"},
		{"reserved path", api.Entry{SpiffeID: "spiffe://example.org/rampart/agent/x", ParentID: parent, Selectors: []string{"unix:uid:1"}}, "reserved"},
		{"parent not agent", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: "spiffe://example.org/orders", Selectors: []string{"unix:uid:1"}}, "parent_id:"},
		{"no selectors", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent}, "selectors: at least one"},
		{"bad selector", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:abc"}}, "selectors:"},
		{"negative ttl", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:1"}, X509TTLSeconds: -1}, "x509_ttl_seconds"},
		// Seconds whose nanoseconds wrap past int64: to a negative TTL,
		// or to 290 ms, which nobody asked for.
		{"ttl wrapping negative", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:1"}, X509TTLSeconds: 9223372037}, "x509_ttl_seconds: must be between"},
		{"ttl wrapping small", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:1"}, JWTTTLSeconds: 18446744074}, "jwt_ttl_seconds: must be between"},
		{"bad dns", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:1"}, DNSNames: []string{"Bad Name"}}, "dns_names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.admin.Do(ctx, http.MethodPost, "/v1/entries", tt.body, nil)
			wantStatus(t, err, http.StatusBadRequest, tt.want)
		})
	}
	id := h.createEntry("spiffe://example.org/a", parent)
	err := h.admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: "spiffe://example.org/a", ParentID: parent, Selectors: []string{"unix:uid:1000"}}, nil)
	wantStatus(t, err, http.StatusConflict, "already gives")
	var got api.Entry
	if err := h.admin.Do(ctx, http.MethodDelete, "/v1/entries/"+id, nil, &got); err != nil || got.ID != id {
		t.Fatalf("delete: %v %+v", err, got)
	}
	err = h.admin.Do(ctx, http.MethodGet, "/v1/entries/"+id, nil, nil)
	wantStatus(t, err, http.StatusNotFound, "no entry")
}

// The sync long poll returns as soon as something changes.
func TestSyncLongPollWakesOnChange(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cert, _ := h.attest("node-1")
	c := h.client("", cert)
	var first api.SyncResponse
	if err := c.Do(ctx, http.MethodGet, "/v1/agent/sync", nil, &first); err != nil {
		t.Fatal(err)
	}
	got := make(chan api.SyncResponse, 1)
	go func() {
		var r api.SyncResponse
		c.Do(ctx, http.MethodGet, "/v1/agent/sync?revision="+itoa(first.Revision)+"&wait=30", nil, &r)
		got <- r
	}()
	h.createEntry("spiffe://example.org/orders", "spiffe://example.org/rampart/agent/node-1")
	select {
	case r := <-got:
		if r.Revision <= first.Revision || len(r.Entries) != 1 {
			t.Fatalf("sync returned revision %d with %d entries", r.Revision, len(r.Entries))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not wake on an entry change")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestMetricsExposeCAExpiry(t *testing.T) {
	h := newHarness(t)
	// Issue 26 item 9: /metrics was public.
	resp, err := h.client("", nil).HTTP.Get("https://" + h.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without the metrics token: %d, want 401", resp.StatusCode)
	}
	tok, err := os.ReadFile(filepath.Join(h.dir, "metrics.token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(h.dir, "metrics.token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("metrics.token mode %v", fi.Mode().Perm())
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+h.addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err = h.client("", nil).HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{`rampart_ca_not_after_timestamp_seconds{id=`, `kind="root"`, `kind="intermediate"`, "rampart_server_admin_auth_failures_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Since any SVID of the domain may open a connection (workloads sync their
// policy), agent endpoints must still refuse a workload SVID.
func TestWorkloadSVIDCannotActAsAgent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	agentCert, _ := h.attest("node-1")
	entry := h.createEntry("spiffe://example.org/orders", "spiffe://example.org/rampart/agent/node-1")
	key, csr := newCSR(t, spiffeid.RequireFromString("spiffe://example.org/orders"), nil)
	var resp api.SignResponse
	if err := h.client("", agentCert).Do(ctx, http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: []api.SignItem{{EntryID: entry, CSR: csr}}}, &resp); err != nil || resp.Results[0].SVID == nil {
		t.Fatalf("sign: %v %+v", err, resp)
	}
	wl := &tls.Certificate{Certificate: resp.Results[0].SVID.Chain, PrivateKey: key}
	err := h.client("", wl).Do(ctx, http.MethodGet, "/v1/agent/sync", nil, nil)
	wantStatus(t, err, http.StatusForbidden, "not an agent SVID")
	// It may fetch its own (absent) policy.
	var ws api.WorkloadSyncResponse
	if err := h.client("", wl).Do(ctx, http.MethodGet, "/v1/workload/sync", nil, &ws); err != nil || ws.Service != "spiffe://example.org/orders" || ws.Policy != nil {
		t.Fatalf("workload sync: %v %+v", err, ws)
	}
}
