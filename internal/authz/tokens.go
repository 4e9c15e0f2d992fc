package authz

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/dpop"
)

// Tokens verifies end-user access tokens on inbound calls. The issuer, its
// signing keys and the token revocation list arrive with the workload sync
// (the same long poll as the policy), so a verifier never fetches keys from
// a URL a token names, and learns a revocation within about a second.
type Tokens struct {
	service string // audience a token must carry

	mu       sync.RWMutex
	issuer   string
	keys     map[string]jose.JSONWebKey
	algs     []jose.SignatureAlgorithm
	revoked  map[string]struct{}
	verifier *accesstoken.Verifier
	proofs   *dpop.Checker // DPoP proofs, and those seen, against replay
}

// Bounds of a service's DPoP replay cache: proofs live about two minutes,
// so a key may make DPoPKeyQuota calls in that time (8/s), and the cache
// holds at most DPoPMaxProofs (a few hundred MB at worst).
const (
	DPoPKeyQuota  = 1000
	DPoPMaxProofs = 1 << 20
)

func newTokens(service string) *Tokens {
	replay, err := dpop.NewMemoryReplay(DPoPKeyQuota, DPoPMaxProofs, time.Now)
	if err != nil {
		panic(err) // constants
	}
	return &Tokens{service: service, revoked: map[string]struct{}{}, proofs: &dpop.Checker{Replay: replay}}
}

// Update installs the issuer, its JWKS and the revocation list.
func (t *Tokens) Update(issuer string, jwks []byte, revoked []string) error {
	keys := map[string]jose.JSONWebKey{}
	var algs []jose.SignatureAlgorithm
	if len(jwks) > 0 {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(jwks, &set); err != nil {
			return fmt.Errorf("authz: token keys: %w", err)
		}
		for _, k := range set.Keys {
			alg := jose.SignatureAlgorithm(k.Algorithm)
			if !k.IsPublic() || (alg != jose.ES256 && alg != jose.EdDSA) {
				continue
			}
			keys[k.KeyID] = k
			if !containsAlg(algs, alg) {
				algs = append(algs, alg)
			}
		}
	}
	rv := make(map[string]struct{}, len(revoked))
	for _, id := range revoked {
		rv[id] = struct{}{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if issuer != t.issuer || t.verifier == nil {
		t.verifier = &accesstoken.Verifier{Keys: t, Issuer: issuer, Audience: t.service, Revoked: t.isRevoked,
			Leeway: accesstoken.DefaultLeeway}
	}
	t.issuer, t.keys, t.algs, t.revoked = issuer, keys, algs, rv
	return nil
}

func containsAlg(algs []jose.SignatureAlgorithm, a jose.SignatureAlgorithm) bool {
	for _, x := range algs {
		if x == a {
			return true
		}
	}
	return false
}

// Key implements accesstoken.KeySet.
func (t *Tokens) Key(kid string) (any, jose.SignatureAlgorithm, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	k, ok := t.keys[kid]
	return k.Key, jose.SignatureAlgorithm(k.Algorithm), ok
}

// Algorithms implements accesstoken.KeySet.
func (t *Tokens) Algorithms() []jose.SignatureAlgorithm {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.algs
}

func (t *Tokens) isRevoked(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.revoked[id]
	return ok
}

// errNoIssuer: tokens arrived before the server said who issues them.
var errNoIssuer = errors.New("no token issuer known yet (not synced with the server)")

// Verify checks an access token addressed to this service and its
// binding: a token bound to a certificate (cnf.x5t#S256) must come over a
// connection authenticated with it, a token bound to a key (cnf.jkt) with
// a DPoP proof made with that key (dpopJKT). A stolen bound token is
// useless.
func (t *Tokens) Verify(raw string, peer *x509.Certificate, dpopJKT string) (*accesstoken.Claims, error) {
	t.mu.RLock()
	v := t.verifier
	t.mu.RUnlock()
	if v == nil {
		return nil, errNoIssuer
	}
	c, err := v.Verify(raw)
	if err != nil {
		return nil, err
	}
	if err := c.CheckBinding(peer, dpopJKT); err != nil {
		return nil, err
	}
	return c, nil
}

// FromRequest verifies the access token of r, if it carries one
// (Authorization: Bearer or DPoP, with its proof). A DPoP proof is
// remembered against replay only once the token verified and is bound to
// the proof's key: a caller without such a token cannot fill the cache.
func (t *Tokens) FromRequest(r *http.Request, peer *x509.Certificate) (c *accesstoken.Claims, scheme string, err error) {
	scheme, raw, ok := dpop.Authorization(r.Header)
	if !ok {
		return nil, "", nil
	}
	var proof *dpop.Proof
	jkt := ""
	if scheme == dpop.SchemeDPoP {
		if proof, err = t.proofs.VerifyRequest(r, raw); err != nil {
			return nil, scheme, err
		}
		jkt = proof.JKT
	}
	if c, err = t.Verify(raw, peer, jkt); err != nil {
		return nil, scheme, err
	}
	if proof != nil {
		if err := t.proofs.Use(r.Context(), proof); err != nil {
			return nil, scheme, err
		}
	}
	return c, scheme, nil
}

// isUserToken tells a token that speaks for an end user from a client's
// own (client credentials, or exchanged from one: its subject is then
// another client than its client_id), as the issuer's sub_type says.
func isUserToken(c *accesstoken.Claims) bool { return c.ForUser() }

// userClaims is what policy conditions see as user. A client's own token
// has no sub there, so has(user.sub) is how a rule requires an end user.
func userClaims(c *accesstoken.Claims) map[string]any {
	scopes := make([]any, 0)
	for _, s := range c.Scopes() {
		scopes = append(scopes, s)
	}
	groups := make([]any, 0, len(c.Groups))
	for _, g := range c.Groups {
		groups = append(groups, g)
	}
	var chain []any
	for a := c.Act; a != nil; a = a.Act {
		chain = append(chain, a.Subject)
	}
	if chain == nil {
		chain = []any{}
	}
	act := ""
	if c.Act != nil {
		act = c.Act.Subject
	}
	m := map[string]any{
		"client_id": c.ClientID, "scope": c.Scope, "scopes": scopes, "groups": groups,
		"act": act, "act_chain": chain, "iss": c.Issuer, "sid": c.SessionID, "jti": c.ID,
	}
	if isUserToken(c) {
		m["sub"] = c.Subject
	}
	return m
}
