package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
)

func TestDirectory(t *testing.T) {
	h := newHarness(t, nil)
	resp, err := h.ts.Client().Get(h.url("directory"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d directory
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.NewNonce != h.url("new-nonce") || d.NewAccount != h.url("new-account") || d.NewOrder != h.url("new-order") ||
		d.RevokeCert != h.url("revoke-cert") || d.KeyChange != h.url("key-change") || d.RenewalInfo != h.url("renewal-info") {
		t.Errorf("directory URLs: %+v", d)
	}
	if !d.Meta.ExternalAccountRequired || d.Meta.Profiles[ProfileTLSServer] == "" {
		t.Errorf("meta: %+v", d.Meta)
	}
	if resp.Header.Get("Replay-Nonce") == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", resp.Header)
	}
	// new-nonce: 200 to HEAD, 204 to GET.
	for method, want := range map[string]int{http.MethodHead: 200, http.MethodGet: 204} {
		req, _ := http.NewRequest(method, h.url("new-nonce"), nil)
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Replay-Nonce") == "" {
			t.Errorf("%s new-nonce: %d, nonce %q", method, resp.StatusCode, resp.Header.Get("Replay-Nonce"))
		}
	}
}

// The whole flow, each challenge type: the certificate chains to the
// bundle, carries the TLS profile, and each step is audited as the
// account.
func TestIssue(t *testing.T) {
	for _, tc := range []struct {
		typ   string
		names []string
	}{
		{HTTP01, []string{"web.acme.test", "api.acme.test"}},
		{TLSALPN01, []string{"tls.acme.test"}},
		{DNS01, []string{"*.apps.acme.test", "db.acme.test"}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			h := newHarness(t, nil)
			c := h.newClient()
			c.account("*.acme.test")
			chain, key := c.issue(tc.typ, tc.names...)
			leaf := chain[0]
			roots := x509.NewCertPool()
			for _, r := range h.ca.X509Bundle() {
				roots.AddCert(r)
			}
			inter := x509.NewCertPool()
			inter.AddCert(chain[1])
			for _, n := range tc.names {
				n = strings.Replace(n, "*", "x", 1)
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter, CurrentTime: h.clk.Now()}); err != nil {
					t.Errorf("verify for %s: %v", n, err)
				}
			}
			if len(leaf.URIs) != 0 || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("profile: URIs %v, EKU %v", leaf.URIs, leaf.ExtKeyUsage)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				t.Error("the certificate is not for the CSR's key")
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != DefaultCertTTL+30*time.Second {
				t.Errorf("lifetime %v", got)
			}
			acct := "acme:" + c.kid[strings.LastIndex(c.kid, "/")+1:]
			for _, action := range []string{"acme.account_create", "acme.order_create", "acme.challenge", "acme.certificate_issue"} {
				es := h.audit.find(action, audit.OutcomeSuccess)
				if len(es) == 0 || es[0].Actor.User != acct {
					t.Errorf("%s: entries %+v, want one by %s", action, es, acct)
				}
			}
			if issued := h.audit.find("acme.certificate_issue", audit.OutcomeSuccess); len(issued) != 1 || issued[0].Details["serial"] != leaf.SerialNumber.Text(16) {
				t.Errorf("issue entry %+v", issued)
			}
			if n := testutil.ToFloat64(h.srv.metrics.orders.WithLabelValues("valid")); n != 1 {
				t.Errorf("orders valid = %v", n)
			}
			if n := testutil.ToFloat64(h.srv.metrics.challenges.WithLabelValues(tc.typ)); n != float64(len(tc.names)) {
				t.Errorf("challenges = %v", n)
			}
		})
	}
}

func TestIPIdentifier(t *testing.T) {
	h := newHarness(t, nil)
	// The validator reaches 10.9.0.1 nowhere on this machine: let the
	// order use the responder through a name instead, and check the
	// offered challenges of an IP identifier.
	c := h.newClient()
	c.account("10.9.0.0/16")
	o, _ := c.order("10.9.0.1")
	a := c.authz(o.Authorizations[0])
	var types []string
	for _, ch := range a.Challenges {
		types = append(types, ch.Type)
	}
	if !slices.Equal(types, []string{HTTP01, TLSALPN01}) || a.Identifier != (identifier{"ip", "10.9.0.1"}) {
		t.Fatalf("IP authorization: %+v", a)
	}
	if r := c.newOrder("10.9.00.1"); r.status != http.StatusBadRequest {
		t.Fatalf("non-canonical IP accepted: %d %s", r.status, r.body)
	}
}

func TestRefusedAccounts(t *testing.T) {
	h := newHarness(t, nil)
	t.Run("no EAB", func(t *testing.T) {
		c := h.newClient()
		c.register("", nil).wantProblem(t, http.StatusForbidden, errExternalAccountRequired, "external account binding")
	})
	t.Run("revoked EAB key", func(t *testing.T) {
		kid, mac := h.eab()
		if _, err := h.srv.RevokeEABKey(t.Context(), kid); err != nil {
			t.Fatal(err)
		}
		h.newClient().register(kid, mac).wantProblem(t, http.StatusForbidden, errUnauthorized, "is revoked")
	})
	t.Run("wrong HMAC key", func(t *testing.T) {
		kid, _ := h.eab()
		h.newClient().register(kid, make([]byte, 32)).wantProblem(t, http.StatusForbidden, errUnauthorized, "MAC does not verify")
	})
	t.Run("unknown EAB key", func(t *testing.T) {
		h.newClient().register("kid-nope", make([]byte, 32)).wantProblem(t, http.StatusForbidden, errUnauthorized, "unknown external account key")
	})
	t.Run("single-use EAB key used twice", func(t *testing.T) {
		kid, mac := h.eab()
		if r := h.newClient().register(kid, mac); r.status != http.StatusCreated {
			t.Fatalf("first: %d %s", r.status, r.body)
		}
		h.newClient().register(kid, mac).wantProblem(t, http.StatusForbidden, errUnauthorized, "already bound")
	})
	t.Run("EAB binding another key", func(t *testing.T) {
		kid, mac := h.eab()
		c, other := h.newClient(), h.newClient()
		url := h.url("new-account")
		b, _ := json.Marshal(map[string]any{"externalAccountBinding": other.eabJWS(kid, mac, url)})
		c.postBody(url, c.sign(url, b, true), "application/jose+json").wantProblem(t, http.StatusForbidden, errUnauthorized, "binds another key")
	})
	t.Run("EAB for another URL", func(t *testing.T) {
		kid, mac := h.eab()
		c := h.newClient()
		url := h.url("new-account")
		b, _ := json.Marshal(map[string]any{"externalAccountBinding": c.eabJWS(kid, mac, h.url("new-order"))})
		c.postBody(url, c.sign(url, b, true), "application/jose+json").wantProblem(t, http.StatusForbidden, errUnauthorized, "is not the new-account URL")
	})
	t.Run("EAB expired", func(t *testing.T) {
		k, b64mac, err := h.srv.CreateEABKey(t.Context(), NewEABKey{TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := base64.RawURLEncoding.DecodeString(b64mac)
		h.clk.Add(2 * time.Hour)
		h.newClient().register(k.KeyID, mac).wantProblem(t, http.StatusForbidden, errUnauthorized, "expired")
	})
	if n := len(h.audit.find("acme.account_create", audit.OutcomeDenied)); n < 7 {
		t.Errorf("%d refused registrations audited, want every one", n)
	}
	// The same key again gets its existing account, not a second one.
	c := h.newClient()
	c.account()
	r := c.register("", nil)
	if r.status != http.StatusOK || r.header.Get("Location") != c.kid {
		t.Fatalf("existing key: %d %s %s", r.status, r.header.Get("Location"), r.body)
	}
}

func TestEABOptional(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.EABOptional = true })
	c := h.newClient()
	if r := c.register("", nil); r.status != http.StatusCreated {
		t.Fatalf("register without EAB: %d %s", r.status, r.body)
	}
	// Without a key, the server's names apply.
	if r := c.newOrder("web.acme.test"); r.status != http.StatusCreated {
		t.Fatalf("order: %d %s", r.status, r.body)
	}
	c.newOrder("web.example.com").wantProblem(t, http.StatusBadRequest, errRejectedIdentifier, "not among the names this server issues")
}

func TestNamePolicy(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.internal.acme.test", "10.9.1.0/24")
	for _, tc := range []struct {
		names  []string
		detail string
	}{
		{[]string{"web.acme.test"}, "web.acme.test: not among the names this account may order (allowed: *.internal.acme.test, 10.9.1.0/24)"},
		{[]string{"*.other.acme.test"}, "not among the names this account may order"},
		{[]string{"*.acme.test"}, "the server's own name"},
		{[]string{"internal.acme.test"}, "not among the names this account may order"},
		{[]string{"web.example.com"}, "not among the names this server issues"},
		{[]string{"10.9.2.1"}, "not among the names this account may order"},
		{[]string{"rampart.acme.test"}, "the server's own name"},
		{[]string{"127.0.0.1"}, "the server's own name"},
		{[]string{"a.internal.acme.test", "web.acme.test"}, "web.acme.test"},
	} {
		p := c.newOrder(tc.names...).wantProblem(t, http.StatusBadRequest, errRejectedIdentifier, tc.detail)
		if p.Identifier == nil && len(p.Subproblems) == 0 {
			t.Errorf("%v: no identifier in the problem", tc.names)
		}
	}
	p := c.newOrder("a.acme.test", "b.acme.test").wantProblem(t, http.StatusBadRequest, errRejectedIdentifier, "2 of the 2 identifiers")
	if len(p.Subproblems) != 2 || p.Subproblems[1].Identifier.Value != "b.acme.test" {
		t.Errorf("subproblems %+v", p.Subproblems)
	}
	for _, names := range [][]string{{"a.internal.acme.test"}, {"*.x.internal.acme.test"}, {"10.9.1.7"}} {
		if r := c.newOrder(names...); r.status != http.StatusCreated {
			t.Errorf("%v: %d %s", names, r.status, r.body)
		}
	}
	if n := len(h.audit.find("acme.order_create", audit.OutcomeDenied)); n != 10 {
		t.Errorf("%d refused orders audited, want 10", n)
	}
	// Malformed identifiers are named.
	for _, tc := range []struct {
		id     identifier
		kind   string
		detail string
	}{
		{identifier{"dns", "a..acme.test"}, errRejectedIdentifier, `label ""`},
		{identifier{"dns", "a.*.acme.test"}, errRejectedIdentifier, "whole first label"},
		{identifier{"dns", "10.9.1.7"}, errRejectedIdentifier, "use an identifier of type ip"},
		{identifier{"email", "a@b"}, errUnsupportedIdentifier, `"email"`},
		{identifier{"ip", "::ffff:10.9.1.7"}, errMalformed, "dotted decimal"},
	} {
		c.post(h.url("new-order"), map[string]any{"identifiers": []identifier{tc.id}}).wantProblem(t, http.StatusBadRequest, tc.kind, tc.detail)
	}
	// A revoked EAB key stops its accounts.
	kid := mustAccountKID(t, h, c)
	if _, err := h.srv.RevokeEABKey(t.Context(), kid); err != nil {
		t.Fatal(err)
	}
	c.newOrder("a.internal.acme.test").wantProblem(t, http.StatusForbidden, errUnauthorized, "is revoked")
}

func mustAccountKID(t *testing.T, h *harness, c *client) string {
	t.Helper()
	a, err := h.st.GetACMEAccount(t.Context(), c.kid[strings.LastIndex(c.kid, "/")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return a.EABKeyID
}

func TestCSRMustMatchOrder(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	o, ou := c.order("web.acme.test", "api.acme.test")
	c.finalize(o, csrFor(t, mustKey(), "web.acme.test", "api.acme.test")).wantProblem(t, http.StatusForbidden, errOrderNotReady, "pending")
	c.solve(o, HTTP01)
	k := mustKey()
	for _, tc := range []struct {
		names  []string
		detail string
	}{
		{[]string{"web.acme.test"}, "missing: [dns:api.acme.test]"},
		{[]string{"web.acme.test", "api.acme.test", "evil.acme.test"}, "not in the order: [dns:evil.acme.test]"},
		{[]string{"web.acme.test", "api.acme.test", "10.9.0.1"}, "not in the order: [ip:10.9.0.1]"},
	} {
		c.finalize(o, csrFor(t, k, tc.names...)).wantProblem(t, http.StatusBadRequest, errBadCSR, tc.detail)
	}
	// The account key is not a certificate key.
	c.finalize(o, csrFor(t, c.key, "web.acme.test", "api.acme.test")).wantProblem(t, http.StatusBadRequest, errBadCSR, "account key")
	// A CSR with a forged signature proves no key.
	der := csrFor(t, k, "web.acme.test", "api.acme.test")
	der[len(der)-3] ^= 0xff
	c.finalize(o, der).wantProblem(t, http.StatusBadRequest, errBadCSR, "")
	if n := len(h.audit.find("acme.certificate_issue", audit.OutcomeDenied)); n != 5 {
		t.Errorf("%d refused finalizations audited, want 5", n)
	}
	// Still ready; the right CSR issues, once.
	if o = c.getOrder(ou); o.Status != "ready" {
		t.Fatalf("order %s", o.Status)
	}
	if r := c.finalize(o, csrFor(t, k, "API.acme.test", "web.acme.test")); r.status != http.StatusOK {
		t.Fatalf("finalize: %d %s", r.status, r.body)
	}
	c.finalize(o, csrFor(t, k, "api.acme.test", "web.acme.test")).wantProblem(t, http.StatusForbidden, errOrderNotReady, "valid")
}

func mustKey() *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

func TestWrongKeyAuthorization(t *testing.T) {
	for _, typ := range []string{HTTP01, TLSALPN01, DNS01} {
		t.Run(typ, func(t *testing.T) {
			h := newHarness(t, nil)
			c := h.newClient()
			c.account("*.acme.test")
			o, ou := c.order("web.acme.test")
			a := c.authz(o.Authorizations[0])
			var ch challengeJSON
			for _, x := range a.Challenges {
				if x.Type == typ {
					ch = x
				}
			}
			// The key authorization of another account's key.
			other := h.newClient()
			wrong := other.keyAuth(ch.Token)
			switch typ {
			case HTTP01:
				h.http.set(ch.Token, wrong)
			case TLSALPN01:
				h.alpn.set("web.acme.test", wrong)
			case DNS01:
				sum := sha256.Sum256([]byte(wrong))
				h.dns.SetTXT("_acme-challenge.web.acme.test", base64.RawURLEncoding.EncodeToString(sum[:]))
			}
			if r := c.post(ch.URL, map[string]any{}); r.status != http.StatusOK {
				t.Fatalf("respond: %d %s", r.status, r.body)
			}
			h.srv.Wait()
			var got challengeJSON
			c.post(ch.URL, nil).decode(t, &got)
			if got.Status != store.ACMEInvalid || got.Error == nil || got.Error.Type != errPrefix+errIncorrectResponse {
				t.Fatalf("challenge after a wrong answer: %+v %+v", got, got.Error)
			}
			if a := c.authz(o.Authorizations[0]); a.Status != store.ACMEInvalid {
				t.Fatalf("authorization %s, want invalid", a.Status)
			}
			if o := c.getOrder(ou); o.Status != store.ACMEInvalid || o.Error == nil {
				t.Fatalf("order %+v, want invalid", o)
			}
			// Answering again does not restart it.
			h.http.set(ch.Token, c.keyAuth(ch.Token))
			c.post(ch.URL, map[string]any{})
			h.srv.Wait()
			if a := c.authz(o.Authorizations[0]); a.Status != store.ACMEInvalid {
				t.Fatalf("authorization %s after a second answer, want invalid", a.Status)
			}
			fails := h.audit.find("acme.challenge", audit.OutcomeFailure)
			if len(fails) != 1 || fails[0].Target != "web.acme.test" || fails[0].Details["problem"] != errIncorrectResponse {
				t.Fatalf("audited failures %+v", fails)
			}
			if n := testutil.ToFloat64(h.srv.metrics.challengeFailures.WithLabelValues(typ, errIncorrectResponse)); n != 1 {
				t.Errorf("failure metric %v", n)
			}
		})
	}
}

// A tls-alpn-01 certificate must be exactly as RFC 8737 says.
func TestTLSALPNCertificateRules(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	for _, tc := range []struct {
		name   string
		cert   func(ka string) *tls.Certificate
		detail string
	}{
		{"extension not critical", func(ka string) *tls.Certificate { return alpnCert("web.acme.test", ka, false) }, "must be critical"},
		{"other name", func(ka string) *tls.Certificate { return alpnCert("other.acme.test", ka, true) }, "must name exactly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := c.order("web.acme.test")
			a := c.authz(o.Authorizations[0])
			ch := a.Challenges[1]
			h.alpn.setCert("web.acme.test", tc.cert(c.keyAuth(ch.Token)))
			c.post(ch.URL, map[string]any{})
			h.srv.Wait()
			var got challengeJSON
			c.post(ch.URL, nil).decode(t, &got)
			if got.Status != store.ACMEInvalid || !strings.Contains(got.Error.Detail, tc.detail) {
				t.Fatalf("challenge %+v %+v, want invalid with %q", got, got.Error, tc.detail)
			}
		})
	}
}

func TestRevocation(t *testing.T) {
	h := newHarness(t, nil)
	var changed int
	h.srv.cfg.Changed = func(_ context.Context) { changed++ }
	c := h.newClient()
	c.account("*.acme.test")
	other := h.newClient()
	other.account("*.acme.test")

	chain, key := c.issue(HTTP01, "web.acme.test")
	revoke := map[string]any{"certificate": b64(chain[0].Raw), "reason": 4}
	other.post(h.url("revoke-cert"), revoke).wantProblem(t, http.StatusForbidden, errUnauthorized, "only the account that ordered")
	c.post(h.url("revoke-cert"), map[string]any{"certificate": b64(chain[0].Raw), "reason": 2}).wantProblem(t, http.StatusBadRequest, errBadRevocationReason, "reason 2")
	if r := c.post(h.url("revoke-cert"), revoke); r.status != http.StatusOK {
		t.Fatalf("revoke by account: %d %s", r.status, r.body)
	}
	c.post(h.url("revoke-cert"), revoke).wantProblem(t, http.StatusBadRequest, errAlreadyRevoked, "already revoked")
	revs, err := h.st.(store.Store).ListRevocations(t.Context(), h.clk.Now())
	if err != nil || len(revs) != 1 || revs[0].Serial != chain[0].SerialNumber.Text(16) {
		t.Fatalf("revocation list %+v %v", revs, err)
	}
	if changed != 1 {
		t.Errorf("Changed called %d times", changed)
	}

	// By the certificate's key, without an account.
	chain2, key2 := c.issue(HTTP01, "api.acme.test")
	kc := &client{h: h, key: key, alg: jose.ES256, hc: h.ts.Client()} // the first certificate's key
	url := h.url("revoke-cert")
	pl, _ := json.Marshal(map[string]any{"certificate": b64(chain2[0].Raw)})
	kc.postBody(url, kc.sign(url, pl, true), "application/jose+json").wantProblem(t, http.StatusForbidden, errUnauthorized, "certificate's key")
	kc.key = key2
	if r := kc.postBody(url, kc.sign(url, pl, true), "application/jose+json"); r.status != http.StatusOK {
		t.Fatalf("revoke by certificate key: %d %s", r.status, r.body)
	}
	es := h.audit.find("acme.certificate_revoke", audit.OutcomeSuccess)
	if len(es) != 2 || es[0].Actor.User != "acme:"+c.kid[strings.LastIndex(c.kid, "/")+1:] || es[1].Actor.User != "acme:cert-key" || es[0].Details["reason"] != "superseded" {
		t.Fatalf("revocation entries %+v", es)
	}
	// A certificate this server did not issue through ACME.
	fake := *chain2[0]
	fake.Raw = append([]byte{}, chain2[0].Raw...)
	fake.Raw[len(fake.Raw)-5] ^= 1
	c.post(url, map[string]any{"certificate": b64(fake.Raw)}).wantProblem(t, http.StatusNotFound, errMalformed, "no such certificate")
}

func TestRenewalInfoAndReplaces(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	chain, _ := c.issue(HTTP01, "web.acme.test")
	leaf := chain[0]
	id := certID(leaf.AuthorityKeyId, leaf.SerialNumber)
	get := func(id string) (int, renewalInfo, http.Header) {
		resp, err := h.ts.Client().Get(h.url("renewal-info/" + id))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ri renewalInfo
		json.NewDecoder(resp.Body).Decode(&ri)
		return resp.StatusCode, ri, resp.Header
	}
	status, ri, hdr := get(id)
	if status != 200 || hdr.Get("Retry-After") == "" {
		t.Fatalf("renewal info: %d %+v", status, ri)
	}
	start, _ := time.Parse(time.RFC3339, ri.SuggestedWindow.Start)
	end, _ := time.Parse(time.RFC3339, ri.SuggestedWindow.End)
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if !start.Equal(leaf.NotBefore.Add(life*2/3).Truncate(time.Second)) || !end.After(start) || !end.Before(leaf.NotAfter) {
		t.Fatalf("window %v to %v for a certificate of %v to %v", start, end, leaf.NotBefore, leaf.NotAfter)
	}
	for _, bad := range []string{"x", "a.b.c", b64(leaf.AuthorityKeyId) + "." + b64([]byte{0x80}), "AAAA." + b64(leaf.SerialNumber.Bytes())} {
		if status, _, _ := get(bad); status != http.StatusBadRequest && status != http.StatusNotFound {
			t.Errorf("CertID %q: status %d", bad, status)
		}
	}

	// Another account cannot replace it.
	other := h.newClient()
	other.account("*.acme.test")
	other.post(h.url("new-order"), map[string]any{"identifiers": dnsIDs("web.acme.test"), "replaces": id}).
		wantProblem(t, http.StatusForbidden, errUnauthorized, "another account")
	// Its account can, once.
	r := c.post(h.url("new-order"), map[string]any{"identifiers": dnsIDs("web.acme.test"), "replaces": id})
	var o orderJSON
	r.decode(t, &o)
	if o.Replaces != id {
		t.Fatalf("replacing order %+v", o)
	}
	c.post(h.url("new-order"), map[string]any{"identifiers": dnsIDs("web.acme.test"), "replaces": id}).
		wantProblem(t, http.StatusConflict, errAlreadyReplaced, "already being replaced")
	c.post(h.url("new-order"), map[string]any{"identifiers": dnsIDs("api.acme.test"), "replaces": id}).
		wantProblem(t, http.StatusBadRequest, errMalformed, "none of this order's identifiers")

	// A revoked certificate should be renewed now: a window in the past.
	if _, err := h.srv.RevokeCert(t.Context(), leaf.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	_, ri, _ = get(id)
	end, _ = time.Parse(time.RFC3339, ri.SuggestedWindow.End)
	if !end.Before(h.clk.Now().Add(time.Second)) {
		t.Fatalf("window of a revoked certificate ends %v, after now %v", end, h.clk.Now())
	}
}

func TestKeyChangeAndDeactivation(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	other := h.newClient()
	other.account("*.acme.test")
	oldKey := c.key
	newKey := mustKey()
	keyChange := func(newKey *ecdsa.PrivateKey, oldPub any) reply {
		url := h.url("key-change")
		oldJWK, _ := (&jose.JSONWebKey{Key: oldPub}).MarshalJSON()
		inner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: newKey},
			&jose.SignerOptions{EmbedJWK: true, ExtraHeaders: map[jose.HeaderKey]any{"url": url}})
		pl, _ := json.Marshal(map[string]any{"account": c.kid, "oldKey": json.RawMessage(oldJWK)})
		j, _ := inner.Sign(pl)
		return c.postBody(url, c.sign(url, []byte(j.FullSerialize()), false), "application/jose+json")
	}
	// To another account's key: 409 with that account.
	r := keyChange(other.key.(*ecdsa.PrivateKey), oldKey.Public())
	r.wantProblem(t, http.StatusConflict, errMalformed, "another account holds")
	if r.header.Get("Location") != other.kid {
		t.Errorf("conflict Location %q, want %q", r.header.Get("Location"), other.kid)
	}
	// To the key it has.
	keyChange(oldKey.(*ecdsa.PrivateKey), oldKey.Public()).wantProblem(t, http.StatusBadRequest, errMalformed, "is the account's current key")
	// With a wrong oldKey.
	keyChange(newKey, mustKey().Public()).wantProblem(t, http.StatusForbidden, errUnauthorized, "oldKey")
	if r := keyChange(newKey, oldKey.Public()); r.status != http.StatusOK {
		t.Fatalf("key change: %d %s", r.status, r.body)
	}
	// The old key no longer signs for the account; the new one does.
	c.newOrder("web.acme.test").wantProblem(t, http.StatusForbidden, errUnauthorized, "does not verify")
	c.key = newKey
	if r := c.newOrder("web.acme.test"); r.status != http.StatusCreated {
		t.Fatalf("order with the new key: %d %s", r.status, r.body)
	}
	if len(h.audit.find("acme.key_change", audit.OutcomeSuccess)) != 1 {
		t.Error("key change not audited")
	}
	// Deactivation ends the account.
	if r := c.post(c.kid, map[string]any{"status": "deactivated"}); r.status != http.StatusOK {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	c.newOrder("web.acme.test").wantProblem(t, http.StatusForbidden, errUnauthorized, "deactivated")
	if len(h.audit.find("acme.account_deactivate", audit.OutcomeSuccess)) != 1 {
		t.Error("deactivation not audited")
	}
}

// An account sees only its own resources.
func TestAccountsAreIsolated(t *testing.T) {
	h := newHarness(t, nil)
	a, b := h.newClient(), h.newClient()
	a.account("*.acme.test")
	b.account("*.acme.test")
	chain, _ := a.issue(HTTP01, "web.acme.test")
	o, ou := a.order("api.acme.test")
	az := a.authz(o.Authorizations[0])
	b.post(ou, nil).wantProblem(t, http.StatusNotFound, errMalformed, "no such order")
	b.post(o.Authorizations[0], nil).wantProblem(t, http.StatusNotFound, errMalformed, "no such authorization")
	b.post(az.Challenges[0].URL, map[string]any{}).wantProblem(t, http.StatusNotFound, errMalformed, "no such authorization")
	b.post(o.Finalize, map[string]string{"csr": "AAAA"}).wantProblem(t, http.StatusNotFound, errMalformed, "no such order")
	b.post(h.url("cert/"+chain[0].SerialNumber.Text(16)), nil).wantProblem(t, http.StatusNotFound, errMalformed, "no such certificate")
	b.post(a.kid, nil).wantProblem(t, http.StatusForbidden, errUnauthorized, "another account")
	b.post(a.kid, map[string]any{"status": "deactivated"}).wantProblem(t, http.StatusForbidden, errUnauthorized, "another account")
}

func TestMaintainGauges(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	c.issue(HTTP01, "web.acme.test")
	h.srv.Maintain(t.Context())
	if v := testutil.ToFloat64(h.srv.metrics.certsValid); v != 1 {
		t.Errorf("valid %v", v)
	}
	if v := testutil.ToFloat64(h.srv.metrics.certsNearExpiry); v != 0 {
		t.Errorf("near expiry %v", v)
	}
	h.clk.Add(20 * time.Hour) // 20 of 24 hours: the last quarter
	h.srv.Maintain(t.Context())
	if v := testutil.ToFloat64(h.srv.metrics.certsNearExpiry); v != 1 {
		t.Errorf("near expiry %v at 20h", v)
	}
}

// Tokens are base64url of whole bytes: certbot decodes a token and
// encodes it again to build the path it serves (it served nothing for
// the 22-character tokens of an earlier version).
func TestTokensAreCanonicalBase64url(t *testing.T) {
	for range 100 {
		tok := newToken()
		b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
		if err != nil || base64.RawURLEncoding.EncodeToString(b) != tok || len(b) < 16 {
			t.Fatalf("token %q does not survive decoding and encoding (%v)", tok, err)
		}
	}
}

// A second answer while a validation runs starts no second one: it gets
// "processing" and when to look again.
func TestOneValidationAtATime(t *testing.T) {
	h := newHarness(t, nil)
	c := h.newClient()
	c.account("*.acme.test")
	o, _ := c.order("web.acme.test")
	ch := c.authz(o.Authorizations[0]).Challenges[0]
	ka := c.keyAuth(ch.Token)
	hit, release := make(chan struct{}, 10), make(chan struct{})
	var hits atomic.Int32
	h.http.setHandler(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hit <- struct{}{}
		<-release
		io.WriteString(w, ka)
	})
	first := *c
	body := first.sign(ch.URL, []byte("{}"), false)
	c.nonce = "" // spent by first
	done := make(chan reply)
	go func() { done <- first.postBody(ch.URL, body, "application/jose+json") }()
	<-hit
	r := c.post(ch.URL, map[string]any{})
	var got challengeJSON
	r.decode(t, &got)
	if got.Status != store.ACMEProcessing || r.header.Get("Retry-After") != "1" {
		t.Fatalf("second answer while validating: %+v, Retry-After %q", got, r.header.Get("Retry-After"))
	}
	close(release)
	(<-done).decode(t, &got)
	if got.Status != store.ACMEValid {
		t.Fatalf("first answer: %+v", got)
	}
	h.srv.Wait()
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d validations for one authorization", n)
	}
}

// The client-auth EKU only for accounts whose EAB key allows it.
func TestProfiles(t *testing.T) {
	h := newHarness(t, nil)
	plain := h.newClient()
	plain.account("*.acme.test")
	order := func(c *client, profile string) reply {
		return c.post(h.url("new-order"), map[string]any{"identifiers": dnsIDs("mq.acme.test"), "profile": profile})
	}
	order(plain, ProfileTLSServerClient).wantProblem(t, http.StatusBadRequest, errInvalidProfile, "allows client authentication")
	order(plain, "anything").wantProblem(t, http.StatusBadRequest, errInvalidProfile, `"anything"`)

	k, mac, err := h.srv.CreateEABKey(t.Context(), NewEABKey{AllowedNames: []string{"*.acme.test"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	macb, _ := base64.RawURLEncoding.DecodeString(mac)
	c := h.newClient()
	if r := c.register(k.KeyID, macb); r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r := order(c, ProfileTLSServerClient)
	var o orderJSON
	r.decode(t, &o)
	if o.Profile != ProfileTLSServerClient {
		t.Fatalf("order %+v", o)
	}
	c.solve(o, HTTP01)
	key := mustKey()
	c.finalize(o, csrFor(t, key, "mq.acme.test")).decode(t, &o)
	chain, err := identity.ParsePEM(c.post(o.Certificate, nil).body)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(chain[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || len(chain[0].URIs) != 0 {
		t.Fatalf("tls-server-client certificate: EKU %v, URIs %v", chain[0].ExtKeyUsage, chain[0].URIs)
	}
	// The same account's default profile stays server-only.
	chain, _ = c.issue(HTTP01, "web.acme.test")
	if !slices.Equal(chain[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Fatalf("default profile EKU %v", chain[0].ExtKeyUsage)
	}
}
