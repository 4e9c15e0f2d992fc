package acme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// Each request that an attacker can forge is refused with the problem
// RFC 8555 names, and audited.
func TestRequestAttacks(t *testing.T) {
	h := newHarness(t, nil)
	a := h.newClient()
	a.account("*.acme.test")
	b := h.newClient()
	b.account("*.acme.test")
	newOrder := h.url("new-order")
	order := []byte(`{"identifiers":[{"type":"dns","value":"web.acme.test"}]}`)
	aKey := a.key.(*ecdsa.PrivateKey)

	t.Run("replayed nonce", func(t *testing.T) {
		body := a.sign(newOrder, order, false)
		if r := a.postBody(newOrder, body, "application/jose+json"); r.status != http.StatusCreated {
			t.Fatalf("first: %d %s", r.status, r.body)
		}
		r := a.postBody(newOrder, body, "application/jose+json")
		r.wantProblem(t, http.StatusBadRequest, errBadNonce, "already used")
		if r.header.Get("Replay-Nonce") == "" {
			t.Error("a badNonce answer must carry a fresh nonce")
		}
	})
	t.Run("nonce not issued here", func(t *testing.T) {
		a.nonce = b64(make([]byte, nonceLen))
		a.postBody(newOrder, a.sign(newOrder, order, false), "application/jose+json").wantProblem(t, http.StatusBadRequest, errBadNonce, "not one this server issued")
	})
	t.Run("expired nonce", func(t *testing.T) {
		a.nonce = ""
		body := a.sign(newOrder, order, false)
		h.clk.Add(NonceTTL + time.Second)
		a.postBody(newOrder, body, "application/jose+json").wantProblem(t, http.StatusBadRequest, errBadNonce, "expired")
	})
	t.Run("alg none", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "none", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		r := a.postBody(newOrder, []byte(`{"protected":"`+prot+`","payload":"`+b64(order)+`","signature":""}`), "application/jose+json")
		r.wantProblem(t, http.StatusBadRequest, errMalformed, "signature is empty")
		prot = b64json(map[string]any{"alg": "none", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		p := a.postBody(newOrder, rawJWS(prot, b64(order), nil), "application/jose+json").wantProblem(t, http.StatusBadRequest, errBadSignatureAlgorithm, `"none"`)
		if len(p.Algorithms) != 5 {
			t.Errorf("algorithms %v", p.Algorithms)
		}
	})
	t.Run("HMAC on a request", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "HS256", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		m := hmac.New(sha256.New, []byte("guessable"))
		m.Write([]byte(prot + "." + b64(order)))
		body := []byte(`{"protected":"` + prot + `","payload":"` + b64(order) + `","signature":"` + b64(m.Sum(nil)) + `"}`)
		a.postBody(newOrder, body, "application/jose+json").wantProblem(t, http.StatusBadRequest, errBadSignatureAlgorithm, `"HS256"`)
	})
	t.Run("kid of A signed by B", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "ES256", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		a.postBody(newOrder, rawJWS(prot, b64(order), b.key.(*ecdsa.PrivateKey)), "application/jose+json").
			wantProblem(t, http.StatusForbidden, errUnauthorized, "does not verify with the account's key")
		es := h.audit.find("acme.request", audit.OutcomeDenied)
		if len(es) == 0 || es[len(es)-1].Actor.User != "anonymous" || es[len(es)-1].Details["claimed_account"] == "" {
			t.Fatalf("refusal audited as %+v; want anonymous with the claimed account", es)
		}
	})
	t.Run("signature over another payload", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "ES256", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		good := rawJWS(prot, b64(order), aKey)
		var f map[string]string
		json.Unmarshal(good, &f)
		other := []byte(`{"identifiers":[{"type":"dns","value":"evil.acme.test"}]}`)
		body, _ := json.Marshal(map[string]string{"protected": f["protected"], "payload": b64(other), "signature": f["signature"]})
		a.postBody(newOrder, body, "application/jose+json").wantProblem(t, http.StatusForbidden, errUnauthorized, "does not verify")
	})
	t.Run("url of another endpoint", func(t *testing.T) {
		a.postBody(newOrder, a.sign(h.url("new-account"), order, false), "application/jose+json").
			wantProblem(t, http.StatusForbidden, errUnauthorized, "is not this request's URL")
	})
	t.Run("both jwk and kid", func(t *testing.T) {
		jwk, _ := a.jwk().MarshalJSON()
		prot := b64json(map[string]any{"alg": "ES256", "kid": a.kid, "jwk": json.RawMessage(jwk), "nonce": a.freshNonce(), "url": newOrder})
		a.postBody(newOrder, rawJWS(prot, b64(order), aKey), "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, "exactly one of jwk and kid")
	})
	t.Run("jwk where an account must sign", func(t *testing.T) {
		a.postBody(newOrder, a.sign(newOrder, order, true), "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, "use kid")
	})
	t.Run("kid of no account", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "ES256", "kid": h.url("acct/nope"), "nonce": a.freshNonce(), "url": newOrder})
		a.postBody(newOrder, rawJWS(prot, b64(order), aKey), "application/jose+json").wantProblem(t, http.StatusBadRequest, errAccountDoesNotExist, "no account nope")
		prot = b64json(map[string]any{"alg": "ES256", "kid": "https://elsewhere.example/acme/acct/x", "nonce": a.freshNonce(), "url": newOrder})
		a.postBody(newOrder, rawJWS(prot, b64(order), aKey), "application/jose+json").wantProblem(t, http.StatusBadRequest, errAccountDoesNotExist, "not an account URL")
	})
	t.Run("header parameters that change what is signed", func(t *testing.T) {
		for _, extra := range []map[string]any{{"b64": false, "crit": []string{"b64"}}, {"crit": []string{"exp"}}, {"x5c": []string{}}, {"typ": "JWT"}} {
			hdr := map[string]any{"alg": "ES256", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder}
			for k, v := range extra {
				hdr[k] = v
			}
			a.postBody(newOrder, rawJWS(b64json(hdr), b64(order), aKey), "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, "is not allowed")
		}
	})
	t.Run("duplicate header field", func(t *testing.T) {
		prot := b64([]byte(`{"alg":"ES256","kid":"` + a.kid + `","nonce":"` + a.freshNonce() + `","url":"` + newOrder + `","url":"` + h.url("new-account") + `"}`))
		a.postBody(newOrder, rawJWS(prot, b64(order), aKey), "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, `"url" appears twice`)
	})
	t.Run("unprotected header", func(t *testing.T) {
		body := a.sign(newOrder, order, false)
		body = []byte(strings.Replace(string(body), `{`, `{"header":{"kid":"x"},`, 1))
		a.postBody(newOrder, body, "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, `"header" is not allowed`)
	})
	t.Run("compact serialization", func(t *testing.T) {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: aKey, KeyID: a.kid}},
			&jose.SignerOptions{NonceSource: nonceSource(a.freshNonce()), ExtraHeaders: map[jose.HeaderKey]any{"url": newOrder}})
		j, _ := s.Sign(order)
		compact, _ := j.CompactSerialize()
		a.postBody(newOrder, []byte(compact), "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, "flattened JSON")
	})
	t.Run("padded base64", func(t *testing.T) {
		prot := b64json(map[string]any{"alg": "ES256", "kid": a.kid, "nonce": a.freshNonce(), "url": newOrder})
		body := rawJWS(prot, b64(order), aKey)
		body = []byte(strings.Replace(string(body), `","payload"`, `=","payload"`, 1))
		a.postBody(newOrder, body, "application/jose+json").wantProblem(t, http.StatusBadRequest, errMalformed, "base64url")
	})
	t.Run("content type", func(t *testing.T) {
		a.postBody(newOrder, a.sign(newOrder, order, false), "application/json").wantProblem(t, http.StatusUnsupportedMediaType, errMalformed, "application/jose+json")
	})
	t.Run("oversized body", func(t *testing.T) {
		big := make([]byte, maxRequestBody+1)
		a.postBody(newOrder, big, "application/jose+json").wantProblem(t, http.StatusRequestEntityTooLarge, errMalformed, "larger than")
	})
	t.Run("weak account key", func(t *testing.T) {
		c := h.newClient()
		weak, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		c.key = weak
		c.alg = jose.RS256
		kid, mac := h.eab()
		c.register(kid, mac).wantProblem(t, http.StatusBadRequest, errBadPublicKey, "1024 bits")
	})
	t.Run("GET of a resource", func(t *testing.T) {
		resp, err := h.ts.Client().Get(a.kid)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("GET %s: %d", a.kid, resp.StatusCode)
		}
	})
	// Every refusal above was audited.
	if n := len(h.audit.find("acme.request", audit.OutcomeDenied)); n < 18 {
		t.Errorf("%d refused requests audited", n)
	}
}

// Replicas sharing PostgreSQL share nonces: a request accepted by one is
// refused by another, and a nonce one hands out is good at the other.
func TestNoncesAcrossReplicas(t *testing.T) {
	st1, err := store.OpenPostgres(t.Context(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st1.Close() })
	h1 := newHarnessWith(t, st1, func(c *Config) { c.Replicated = true })
	// A second replica over the same database, with the same KEK and CA.
	mux := http.NewServeMux()
	cfg := h1.srv.cfg
	cfg.Registerer = nil
	srv2, err := New(t.Context(), cfg)
	t.Cleanup(srv2.Wait)
	if err != nil {
		t.Fatal(err)
	}
	srv2.Register(mux, func(_ string, h http.HandlerFunc) http.Handler { return h })
	if string(srv2.nonces.key) != string(h1.srv.nonces.key) {
		t.Fatal("replicas do not share the nonce key")
	}
	c := h1.newClient()
	c.account("*.acme.test")
	body := c.sign(h1.url("new-order"), []byte(`{"identifiers":[{"type":"dns","value":"web.acme.test"}]}`), false)
	// The same request, as the second replica sees it.
	rec := func(srv http.Handler) int {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, h1.url("new-order"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/jose+json")
		srv.ServeHTTP(w, req)
		return w.Code
	}
	if code := rec(mux); code != http.StatusCreated {
		t.Fatalf("replica 2: %d", code)
	}
	r := c.postBody(h1.url("new-order"), body, "application/jose+json")
	r.wantProblem(t, http.StatusBadRequest, errBadNonce, "already used")
}

func TestMemoryNoncesRotateWhenFull(t *testing.T) {
	h := newHarness(t, nil)
	n := h.srv.nonces
	mb := n.book.(*memoryBook)
	nonce := n.issue()
	id, exp, p := n.check(nonce)
	if p != nil {
		t.Fatal(p)
	}
	before := n.issue()
	mb.mu.Lock()
	for i := range maxMemoryNonces - 1 {
		var k [16]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		k[15] = 1
		mb.used[k] = exp
	}
	mb.mu.Unlock()
	if p := n.spend(t.Context(), id, exp); p != nil {
		t.Fatal(p)
	}
	// Full: the key was replaced and the book emptied, so nonces handed
	// out before (spent or not) are refused.
	if _, _, p := n.check(before); p == nil {
		t.Fatal("a nonce from before the rotation still verifies")
	}
	if _, _, p := n.check(nonce); p == nil {
		t.Fatal("a spent nonce from before the rotation verifies again")
	}
	if len(mb.used) != 0 {
		t.Fatalf("book holds %d after rotation", len(mb.used))
	}
	if _, _, p := n.check(n.issue()); p != nil {
		t.Fatal(p)
	}
}
