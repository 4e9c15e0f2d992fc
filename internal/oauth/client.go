package oauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/store"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// dummySecretHash is compared against for unknown and disabled clients.
var dummySecretHash = sha256.Sum256([]byte("rampart: no such client"))

// authedClient is a client that proved who it is at the token endpoint.
type authedClient struct {
	store.OAuthClient
	// cert is the SVID it authenticated with (tls_client_auth); tokens
	// issued to it are bound to this certificate.
	cert *x509.Certificate
	// dpopJKT is the thumbprint of the key of the request's DPoP proof;
	// tokens issued then are bound to that key (cnf.jkt).
	dpopJKT string
}

// actor is how the client is named in act claims: its SPIFFE ID when it
// has one, else its client ID.
func (c *authedClient) actor() string {
	if c.SPIFFEID != "" {
		return c.SPIFFEID
	}
	return c.ID
}

// authenticateClient authenticates the caller of the token, introspection
// or revocation endpoint by the method the client registered; any other
// method is refused, so a client registered for private_key_jwt cannot be
// attacked through a guessed secret.
func (p *Provider) authenticateClient(r *http.Request) (*authedClient, error) {
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: the credentials are form-urlencoded first.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, errf(http.StatusUnauthorized, "invalid_client", "malformed Basic credentials")
		}
		if r.PostForm.Has("client_secret") {
			return nil, errf(http.StatusBadRequest, "invalid_request", "client authenticated twice (Basic and client_secret)")
		}
	}
	form := r.PostForm
	method := "none"
	switch {
	case basic:
		method = "client_secret_basic"
	case form.Has("client_assertion"):
		method = "private_key_jwt"
	case form.Has("client_secret"):
		method = "client_secret_post"
		secret = form.Get("client_secret")
	case p.cfg.PeerCertificate(r) != nil:
		method = "tls_client_auth"
	}
	if !basic {
		id = form.Get("client_id")
	}
	if method == "private_key_jwt" {
		if form.Get("client_assertion_type") != assertionType {
			return nil, errf(http.StatusBadRequest, "invalid_request", "client_assertion_type must be %s", assertionType)
		}
		sub, err := unverifiedSubject(form.Get("client_assertion"))
		if err != nil {
			return nil, errf(http.StatusUnauthorized, "invalid_client", "client assertion: %v", err)
		}
		if id != "" && id != sub {
			return nil, errf(http.StatusUnauthorized, "invalid_client", "client_id %s does not match the assertion's subject", claimed(id))
		}
		id = sub
	}
	if basic && form.Has("client_id") && form.Get("client_id") != id {
		return nil, errf(http.StatusBadRequest, "invalid_request", "client_id in the body differs from the Basic credentials")
	}
	if id == "" {
		return nil, errf(http.StatusUnauthorized, "invalid_client", "no client authentication: send client_id")
	}
	c, err := p.cfg.Store.GetOAuthClient(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Disabled {
		// The same answer, and the same hash-and-compare, as a wrong
		// secret: an unknown or disabled client is told nothing more.
		// (Client IDs are not secret: the authorization endpoint must say
		// when one is unknown rather than redirect.)
		subtle.ConstantTimeCompare(hashToken(secret), dummySecretHash[:])
		oe := errf(http.StatusUnauthorized, "invalid_client", "unknown client or wrong credentials")
		if err == nil {
			oe.debug = "client " + id + " is disabled"
		}
		return nil, oe
	}
	if err != nil {
		return nil, err
	}
	// A client registered for tls_client_auth may also send its client_id
	// in the body: that is still tls_client_auth.
	if method == "none" && c.AuthMethod == "tls_client_auth" && p.cfg.PeerCertificate(r) != nil {
		method = "tls_client_auth"
	}
	if method != c.AuthMethod {
		return nil, errf(http.StatusUnauthorized, "invalid_client", "client %s must authenticate with %s, not %s", id, c.AuthMethod, method)
	}
	if c.SPIFFEID != "" && p.cfg.Quarantined != nil && p.cfg.Quarantined(c.SPIFFEID) {
		// Checked before the credentials: a quarantined workload gets no
		// token, whatever it proves (its SVID, a JWT-SVID, a secret).
		oe := errf(http.StatusUnauthorized, "invalid_client", "client %s is quarantined", id)
		oe.debug = c.SPIFFEID + " is quarantined"
		return nil, oe
	}
	ac := &authedClient{OAuthClient: c}
	switch method {
	case "client_secret_basic", "client_secret_post":
		got := hashToken(secret)
		if len(c.SecretHash) != len(got) || subtle.ConstantTimeCompare(got, c.SecretHash) != 1 {
			return nil, errf(http.StatusUnauthorized, "invalid_client", "unknown client or wrong credentials")
		}
	case "private_key_jwt":
		if err := p.verifyAssertion(r, c, form.Get("client_assertion")); err != nil {
			return nil, err
		}
	case "tls_client_auth":
		leaf := p.cfg.PeerCertificate(r)
		if !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == c.SPIFFEID }) {
			return nil, errf(http.StatusUnauthorized, "invalid_client", "client certificate does not carry %s", c.SPIFFEID)
		}
		ac.cert = leaf
	}
	return ac, nil
}

// claimedClientID is the client ID an unauthenticated request names
// (Basic user name or client_id), for the audit log's claimed_client_id.
func claimedClientID(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		return id
	}
	return r.PostForm.Get("client_id")
}

// unverifiedSubject reads sub from an assertion before its signature is
// checked, only to find the client whose keys check it.
func unverifiedSubject(raw string) (string, error) {
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil {
		return "", err
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "", err
	}
	if c.Subject == "" || c.Subject != c.Issuer {
		return "", errors.New("iss and sub must both be the client ID")
	}
	return c.Subject, nil
}

var assertionAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA, jose.RS256, jose.PS256}

// verifyAssertion checks a private_key_jwt client assertion (RFC 7523 §3):
// signed by a key the client registered, addressed to this server, short
// lived, and used once.
func (p *Provider) verifyAssertion(r *http.Request, c store.OAuthClient, raw string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS, &set); err != nil || len(set.Keys) == 0 {
		return errf(http.StatusUnauthorized, "invalid_client", "client %s has no registered keys", c.ID)
	}
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil || len(tok.Headers) != 1 {
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion malformed")
	}
	h := tok.Headers[0]
	var keys []jose.JSONWebKey
	if h.KeyID != "" {
		keys = set.Key(h.KeyID)
	} else {
		keys = set.Keys
	}
	var claims jwt.Claims
	verified := false
	for _, k := range keys {
		if k.IsPublic() && (k.Algorithm == "" || k.Algorithm == h.Algorithm) && tok.Claims(k.Key, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion signature does not verify with the client's registered keys")
	}
	now := p.cfg.Now()
	aud := []string{p.cfg.Issuer, p.cfg.Issuer + PathToken, p.cfg.Issuer + r.URL.Path}
	switch {
	case claims.Issuer != c.ID || claims.Subject != c.ID:
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion iss and sub must be %s", c.ID)
	case !slices.ContainsFunc(aud, claims.Audience.Contains):
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion audience %v is not this server (%s)", []string(claims.Audience), p.cfg.Issuer)
	case claims.Expiry == nil || !now.Before(claims.Expiry.Time().Add(30*time.Second)):
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion expired or without exp")
	case claims.Expiry.Time().Sub(now) > 10*time.Minute:
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion lives longer than 10 minutes")
	case claims.NotBefore != nil && now.Add(30*time.Second).Before(claims.NotBefore.Time()):
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion not yet valid")
	case claims.ID == "":
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion has no jti")
	}
	// One use per jti: recorded as a grant until the assertion expires, so
	// the database, not this replica's memory, refuses a replay.
	err = p.cfg.Store.PutOAuthGrant(r.Context(), store.OAuthGrant{
		Hash: hashToken("assertion\x00" + c.ID + "\x00" + claims.ID), Kind: "assertion", Family: "assertion", ClientID: c.ID,
		Data: []byte("{}"), ExpiresAt: claims.Expiry.Time().Add(time.Minute), CreatedAt: now,
	})
	if errors.Is(err, store.ErrConflict) {
		return errf(http.StatusUnauthorized, "invalid_client", "client assertion replayed (jti %q already used)", claims.ID)
	}
	if err != nil {
		return fmt.Errorf("oauth: record assertion: %w", err)
	}
	return nil
}
