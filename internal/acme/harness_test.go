package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/acme/acmetest"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// harness is a real ACME server (SQLite store, CA, TLS on loopback) with
// a DNS server that sends every name to 127.0.0.1, and challenge
// responders for http-01 and tls-alpn-01 on the ports it validates.
type harness struct {
	t     testing.TB
	srv   *Server
	ca    *identity.CA
	st    Store
	clk   *fakeclock.Clock
	ts    *httptest.Server
	dns   *acmetest.DNS
	http  *responder
	alpn  *alpnResponder
	reg   *prometheus.Registry
	audit *auditLog
}

type auditLog struct {
	mu      sync.Mutex
	entries []*audit.Entry
}

func (l *auditLog) record(_ context.Context, es ...*audit.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range es {
		if err := e.Validate(); err != nil {
			panic("invalid audit entry: " + err.Error())
		}
		l.entries = append(l.entries, e)
	}
}

// find returns the entries with action and outcome.
func (l *auditLog) find(action, outcome string) []*audit.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*audit.Entry
	for _, e := range l.entries {
		if e.Action == action && (outcome == "" || e.Outcome == outcome) {
			out = append(out, e)
		}
	}
	return out
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	st := storetest.SQLite(t, dir)
	return newHarnessWith(t, st, mod)
}

func newHarnessWith(t testing.TB, st store.Store, mod func(*Config)) *harness {
	t.Helper()
	w, err := keywrap.LoadOrCreateFile(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	ca, err := identity.New(t.Context(), identity.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Store: st, Wrapper: w, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	dns, err := acmetest.StartDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	dns.SetDefault(netip.MustParseAddr("127.0.0.1"))
	h := &harness{t: t, ca: ca, st: st.(Store), clk: clk, dns: dns, reg: prometheus.NewRegistry(), audit: &auditLog{}}
	h.http = startResponder(t)
	h.alpn = startALPNResponder(t)
	cfg := Config{Store: h.st, CA: ca, Sealer: w, Resolver: dns.Addr, HTTPPort: h.http.port, TLSPort: h.alpn.port,
		AllowedNames: []string{"*.acme.test", "10.9.0.0/16"}, DeniedNames: []string{"localhost", "rampart.acme.test", "127.0.0.0/8", "::1"},
		Record: h.audit.record, Registerer: h.reg, Now: clk.Now, ValidationTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	if h.srv, err = New(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.srv.Register(mux, func(_ string, h http.HandlerFunc) http.Handler { return h })
	h.ts = httptest.NewUnstartedServer(mux)
	h.ts.EnableHTTP2 = true
	h.ts.StartTLS()
	t.Cleanup(func() { h.srv.Wait(); h.ts.Close() })
	return h
}

func (h *harness) url(path string) string { return h.ts.URL + PathPrefix + path }

// eab creates an EAB key (as an operator) allowing names.
func (h *harness) eab(names ...string) (kid string, mac []byte) {
	h.t.Helper()
	k, b64, err := h.srv.CreateEABKey(h.t.Context(), NewEABKey{AllowedNames: names, Label: "test"})
	if err != nil {
		h.t.Fatal(err)
	}
	mac, _ = base64.RawURLEncoding.DecodeString(b64)
	return k.KeyID, mac
}

// client is a hand-rolled ACME client: it does what a real one does, and
// what an attacker would instead.
type client struct {
	h     *harness
	key   crypto.Signer
	alg   jose.SignatureAlgorithm
	kid   string // account URL once registered
	nonce string
	hc    *http.Client
}

func (h *harness) newClient() *client {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &client{h: h, key: k, alg: jose.ES256, hc: h.ts.Client()}
}

func (c *client) jwk() *jose.JSONWebKey { return &jose.JSONWebKey{Key: c.key.Public()} }

func (c *client) freshNonce() string {
	c.h.t.Helper()
	if n := c.nonce; n != "" {
		c.nonce = ""
		return n
	}
	resp, err := c.hc.Head(c.h.url("new-nonce"))
	if err != nil {
		c.h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

type nonceSource string

func (n nonceSource) Nonce() (string, error) { return string(n), nil }

// sign builds a request JWS: with kid when the client has an account
// (unless useJWK), else with its jwk.
func (c *client) sign(url string, payload []byte, useJWK bool) []byte {
	c.h.t.Helper()
	opts := &jose.SignerOptions{NonceSource: nonceSource(c.freshNonce()), ExtraHeaders: map[jose.HeaderKey]any{"url": url}}
	jk := jose.JSONWebKey{Key: c.key}
	if c.kid != "" && !useJWK {
		jk.KeyID = c.kid
	} else {
		opts.EmbedJWK = true
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: c.alg, Key: jk}, opts)
	if err != nil {
		c.h.t.Fatal(err)
	}
	j, err := s.Sign(payload)
	if err != nil {
		c.h.t.Fatal(err)
	}
	return []byte(j.FullSerialize())
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) problem() *Problem {
	p := &Problem{}
	json.Unmarshal(r.body, p)
	return p
}

// wantProblem checks that r is the problem kind with status, and that
// its detail contains detail.
func (r reply) wantProblem(t testing.TB, status int, kind, detail string) *Problem {
	t.Helper()
	p := r.problem()
	if r.status != status || p.Type != errPrefix+kind || !strings.Contains(p.Detail, detail) {
		t.Fatalf("got %d %s %q, want %d %s with %q (body %s)", r.status, p.Type, p.Detail, status, errPrefix+kind, detail, r.body)
	}
	if r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("problem content type %q", r.header.Get("Content-Type"))
	}
	return p
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if r.status >= 300 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// postBody sends a prepared body.
func (c *client) postBody(url string, body []byte, contentType string) reply {
	c.h.t.Helper()
	resp, err := c.hc.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		c.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if n := resp.Header.Get("Replay-Nonce"); n != "" {
		c.nonce = n
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// post signs payload (nil: POST-as-GET) and sends it.
func (c *client) post(url string, payload any) reply {
	c.h.t.Helper()
	b := []byte{} // POST-as-GET: "payload": ""
	if payload != nil {
		var err error
		if b, err = json.Marshal(payload); err != nil {
			c.h.t.Fatal(err)
		}
	}
	return c.postBody(url, c.sign(url, b, false), "application/jose+json")
}

// eabJWS is the external account binding over the client's key.
func (c *client) eabJWS(kid string, mac []byte, url string) json.RawMessage {
	c.h.t.Helper()
	pub, _ := c.jwk().MarshalJSON()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: mac},
		&jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"kid": kid, "url": url}})
	if err != nil {
		c.h.t.Fatal(err)
	}
	j, err := s.Sign(pub)
	if err != nil {
		c.h.t.Fatal(err)
	}
	return json.RawMessage(j.FullSerialize())
}

// register creates the client's account with an EAB key.
func (c *client) register(kid string, mac []byte) reply {
	c.h.t.Helper()
	url := c.h.url("new-account")
	pl := map[string]any{"termsOfServiceAgreed": true, "contact": []string{"mailto:ops@example.org"}}
	if kid != "" {
		pl["externalAccountBinding"] = c.eabJWS(kid, mac, url)
	}
	b, _ := json.Marshal(pl)
	r := c.postBody(url, c.sign(url, b, true), "application/jose+json")
	if r.status == http.StatusCreated || r.status == http.StatusOK {
		c.kid = r.header.Get("Location")
	}
	return r
}

// account is register with a fresh EAB key for names, which must succeed.
func (c *client) account(names ...string) {
	c.h.t.Helper()
	kid, mac := c.h.eab(names...)
	if r := c.register(kid, mac); r.status != http.StatusCreated {
		c.h.t.Fatalf("register: %d %s", r.status, r.body)
	}
}

func dnsIDs(names ...string) []identifier {
	var ids []identifier
	for _, n := range names {
		typ := "dns"
		if _, err := netip.ParseAddr(n); err == nil {
			typ = "ip"
		}
		ids = append(ids, identifier{Type: typ, Value: n})
	}
	return ids
}

func (c *client) newOrder(names ...string) reply {
	return c.post(c.h.url("new-order"), map[string]any{"identifiers": dnsIDs(names...)})
}

// order creates an order that must succeed and returns it with its URL.
func (c *client) order(names ...string) (orderJSON, string) {
	c.h.t.Helper()
	r := c.newOrder(names...)
	if r.status != http.StatusCreated {
		c.h.t.Fatalf("new order: %d %s", r.status, r.body)
	}
	var o orderJSON
	r.decode(c.h.t, &o)
	return o, r.header.Get("Location")
}

func (c *client) authz(url string) authzJSON {
	c.h.t.Helper()
	var a authzJSON
	c.post(url, nil).decode(c.h.t, &a)
	return a
}

func (c *client) keyAuth(token string) string {
	ka, err := keyAuthorization(token, c.jwk())
	if err != nil {
		c.h.t.Fatal(err)
	}
	return ka
}

// solve answers every authorization of an order with typ and waits for
// the validations.
func (c *client) solve(o orderJSON, typ string) {
	c.h.t.Helper()
	for _, u := range o.Authorizations {
		a := c.authz(u)
		var ch *challengeJSON
		for i := range a.Challenges {
			if a.Challenges[i].Type == typ {
				ch = &a.Challenges[i]
			}
		}
		if ch == nil {
			c.h.t.Fatalf("no %s challenge in %+v", typ, a)
		}
		ka := c.keyAuth(ch.Token)
		switch typ {
		case HTTP01:
			c.h.http.set(ch.Token, ka)
		case TLSALPN01:
			c.h.alpn.set(a.Identifier.Value, ka)
		case DNS01:
			sum := sha256.Sum256([]byte(ka))
			c.h.dns.SetTXT("_acme-challenge."+a.Identifier.Value, base64.RawURLEncoding.EncodeToString(sum[:]))
		}
		if r := c.post(ch.URL, map[string]any{}); r.status != http.StatusOK {
			c.h.t.Fatalf("respond to %s: %d %s", ch.URL, r.status, r.body)
		}
	}
	c.h.srv.Wait()
}

func (c *client) getOrder(url string) orderJSON {
	c.h.t.Helper()
	var o orderJSON
	c.post(url, nil).decode(c.h.t, &o)
	return o
}

// csr makes a CSR for names with a new key.
func csrFor(t testing.TB, key crypto.Signer, names ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (c *client) finalize(o orderJSON, csr []byte) reply {
	return c.post(o.Finalize, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csr)})
}

// issue runs a whole order with typ and returns the chain and its key.
func (c *client) issue(typ string, names ...string) ([]*x509.Certificate, crypto.Signer) {
	c.h.t.Helper()
	o, ou := c.order(names...)
	c.solve(o, typ)
	if o = c.getOrder(ou); o.Status != "ready" {
		c.h.t.Fatalf("order %s after validation, want ready: %+v", o.Status, o)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r := c.finalize(o, csrFor(c.h.t, k, names...))
	r.decode(c.h.t, &o)
	if o.Status != store.ACMEValid || o.Certificate == "" {
		c.h.t.Fatalf("finalized order: %+v", o)
	}
	cr := c.post(o.Certificate, nil)
	if cr.status != http.StatusOK || cr.header.Get("Content-Type") != "application/pem-certificate-chain" {
		c.h.t.Fatalf("certificate: %d %s", cr.status, cr.body)
	}
	chain, err := identity.ParsePEM(cr.body)
	if err != nil {
		c.h.t.Fatal(err)
	}
	return chain, k
}

// responder serves http-01 key authorizations by token.
type responder struct {
	port int
	mu   sync.Mutex
	m    map[string]string
	// handler, when set, answers instead (for attacks and redirects).
	handler http.HandlerFunc
}

func startResponder(t testing.TB) *responder {
	r := &responder{m: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		h := r.handler
		ka, ok := r.m[strings.TrimPrefix(req.URL.Path, "/.well-known/acme-challenge/")]
		r.mu.Unlock()
		if h != nil {
			h(w, req)
			return
		}
		if !ok {
			http.NotFound(w, req)
			return
		}
		io.WriteString(w, ka)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *responder) set(token, ka string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[token] = ka
}

func (r *responder) setHandler(h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handler = h
}

// alpnResponder answers tls-alpn-01 (RFC 8737) by SNI.
type alpnResponder struct {
	port int
	mu   sync.Mutex
	m    map[string]*tls.Certificate
}

func startALPNResponder(t testing.TB) *alpnResponder {
	a := &alpnResponder{m: map[string]*tls.Certificate{}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{NextProtos: []string{"acme-tls/1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.m[hello.ServerName], nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	a.port = ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return a
}

// alpnCert builds the RFC 8737 certificate for name and keyAuth; mod
// changes it for attacks.
func alpnCert(name, keyAuth string, critical bool) *tls.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sum := sha256.Sum256([]byte(keyAuth))
	val, _ := asn1.Marshal(sum[:])
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "acme"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{name},
		ExtraExtensions: []pkix.Extension{{Id: idPeACMEIdentifier, Critical: critical, Value: val}}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func (a *alpnResponder) set(name, keyAuth string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[name] = alpnCert(name, keyAuth, true)
}

func (a *alpnResponder) setCert(name string, c *tls.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[name] = c
}

// b64json encodes v as JSON in base64url (for hand-made JWS parts).
func b64json(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rawJWS assembles a flattened JWS from parts, signing protected.payload
// with key (nil: an empty signature) using the ES256 encoding.
func rawJWS(protected, payload string, key *ecdsa.PrivateKey) []byte {
	sig := "AAAA"
	if key != nil {
		h := sha256.Sum256([]byte(protected + "." + payload))
		r, s, _ := ecdsa.Sign(rand.Reader, key, h[:])
		b := make([]byte, 64)
		r.FillBytes(b[:32])
		s.FillBytes(b[32:])
		sig = b64(b)
	}
	return []byte(`{"protected":"` + protected + `","payload":"` + payload + `","signature":"` + sig + `"}`)
}
