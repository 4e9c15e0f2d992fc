package accesstoken

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Type is the JOSE typ of an access token (RFC 9068).
const Type = "at+jwt"

// Claims are an access token's claims.
type Claims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.Audience     `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ID        string           `json:"jti"`
	ClientID  string           `json:"client_id"`
	Scope     string           `json:"scope,omitempty"`
	// SessionID names the grant family the token descends from; revoking
	// the family revokes the token.
	SessionID string `json:"sid,omitempty"`
	AuthTime  int64  `json:"auth_time,omitempty"`
	// AMR says how the login was proven (RFC 8176: "pwd", "otp").
	AMR    []string `json:"amr,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// Act names the service acting for the subject after a token exchange
	// (RFC 8693 §4.1); nested for each further hop.
	Act *Actor `json:"act,omitempty"`
	// Cnf binds the token to a key (RFC 8705 x5t#S256, RFC 9449 jkt).
	Cnf *Confirmation `json:"cnf,omitempty"`
	// SubjectType says what sub names: SubjectUser, an end user, or
	// SubjectClient, an OAuth client acting for itself (a client
	// credentials token, and every token exchanged from one, whose
	// client_id is then another client's). The issuer sets it on every
	// token; see ForUser.
	SubjectType string `json:"sub_type,omitempty"`
}

// Subject types (the sub_type claim).
const (
	SubjectUser   = "user"
	SubjectClient = "client"
)

// ForUser reports whether the token speaks for an end user, as user-only
// endpoints (userinfo) and user conditions of policies need. sub_type
// decides; any value but SubjectUser is not a user. A token without it
// (issued before the claim existed; they live minutes) is a user's unless
// its subject is its own client or a SPIFFE ID: the rule that, alone, took
// a machine's token exchanged by another client for a user's.
func (c *Claims) ForUser() bool {
	if strings.HasPrefix(c.Subject, "spiffe://") || c.Subject == "" {
		return false
	}
	switch c.SubjectType {
	case SubjectUser:
		return true
	case "":
		return c.Subject != c.ClientID
	}
	return false
}

// Actor is an RFC 8693 act claim.
type Actor struct {
	Subject string `json:"sub"`
	Act     *Actor `json:"act,omitempty"`
}

// Confirmation is a cnf claim.
type Confirmation struct {
	X5tS256 string `json:"x5t#S256,omitempty"`
	JKT     string `json:"jkt,omitempty"`
}

// Scopes returns the scope claim split on spaces.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope reports whether the token carries scope s.
func (c *Claims) HasScope(s string) bool { return slices.Contains(c.Scopes(), s) }

// Thumbprint returns the RFC 8705 certificate thumbprint of cert.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckBinding enforces a sender-constrained token's binding: a token bound
// to a certificate (cnf.x5t#S256, RFC 8705) must come over a connection
// authenticated with it (peer); a token bound to a key (cnf.jkt, RFC 9449)
// must come with the DPoP scheme and a proof made with that key (dpopJKT,
// "" when the Bearer scheme was used). A token that is not DPoP-bound sent
// with the DPoP scheme is refused too: the scheme claims a binding the
// token does not have.
func (c *Claims) CheckBinding(peer *x509.Certificate, dpopJKT string) error {
	var x5t, jkt string
	if c.Cnf != nil {
		x5t, jkt = c.Cnf.X5tS256, c.Cnf.JKT
	}
	if x5t != "" && (peer == nil || Thumbprint(peer) != x5t) {
		return errors.New("access token is bound to another client certificate (cnf.x5t#S256)")
	}
	switch {
	case jkt != "" && dpopJKT == "":
		return errors.New("access token is bound to a DPoP key: send it with the DPoP scheme and a proof")
	case jkt != "" && dpopJKT != jkt:
		return errors.New("the DPoP proof is made with another key than the token is bound to (cnf.jkt)")
	case jkt == "" && dpopJKT != "":
		return errors.New("access token is not bound to a DPoP key but was sent with the DPoP scheme")
	}
	return nil
}

// KeySet finds the issuer's published verification keys.
type KeySet interface {
	// Key returns the published key with this ID and its algorithm.
	Key(kid string) (key any, alg jose.SignatureAlgorithm, ok bool)
	// Algorithms lists the algorithms of the published keys.
	Algorithms() []jose.SignatureAlgorithm
}

// Options say what a valid token looks like.
type Options struct {
	Issuer   string
	Audience string // required in aud; empty: any audience (the issuer itself)
	Now      time.Time
	// Leeway is the clock skew allowed on exp and nbf: DefaultLeeway for
	// a service verifying another machine's tokens, zero (none) for the
	// issuer itself, whose clock is the one that set them. Negative is an
	// error.
	Leeway time.Duration
	// Revoked reports whether a jti or sid is on the revocation list.
	Revoked func(id string) bool
}

// Sentinel errors, wrapped with detail.
var (
	ErrMalformed = errors.New("access token malformed")
	ErrSignature = errors.New("access token signature invalid")
	ErrClaims    = errors.New("access token claims invalid")
	ErrRevoked   = errors.New("access token revoked")
)

// Verify parses and checks raw; the error says what was wrong.
func Verify(raw string, keys KeySet, o Options) (*Claims, error) {
	c, _, err := verify(raw, keys, o)
	return c, err
}

// verify is Verify, also returning the key ID that verified the token.
func verify(raw string, keys KeySet, o Options) (*Claims, string, error) {
	c, kid, err := verifySigned(raw, keys)
	if err != nil {
		return nil, "", err
	}
	if err := check(c, o); err != nil {
		return nil, "", err
	}
	return c, kid, nil
}

func verifySigned(raw string, keys KeySet) (*Claims, string, error) {
	algs := keys.Algorithms()
	if len(algs) == 0 {
		return nil, "", fmt.Errorf("%w: no verification keys", ErrSignature)
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return nil, "", fmt.Errorf("%w: want exactly one signature", ErrMalformed)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, Type) && !strings.EqualFold(typ, "application/"+Type) {
		return nil, "", fmt.Errorf("%w: typ %q, want %q", ErrMalformed, typ, Type)
	}
	for _, name := range []jose.HeaderKey{"jku", "x5u"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return nil, "", fmt.Errorf("%w: header %s is not accepted: keys come from the issuer's JWKS only", ErrSignature, name)
		}
	}
	// go-jose parses x5c out of the extra headers; Certificates tells
	// whether one was sent.
	if _, err := h.Certificates(x509.VerifyOptions{}); !errors.Is(err, jose.ErrMissingX5cHeader) {
		return nil, "", fmt.Errorf("%w: header x5c is not accepted: keys come from the issuer's JWKS only", ErrSignature)
	}
	if h.JSONWebKey != nil {
		return nil, "", fmt.Errorf("%w: embedded jwk header is not accepted: keys come from the issuer's JWKS only", ErrSignature)
	}
	key, alg, ok := keys.Key(h.KeyID)
	if !ok {
		return nil, "", fmt.Errorf("%w: unknown key ID %q", ErrSignature, h.KeyID)
	}
	if jose.SignatureAlgorithm(h.Algorithm) != alg {
		return nil, "", fmt.Errorf("%w: alg %s does not match key %s (%s)", ErrSignature, h.Algorithm, h.KeyID, alg)
	}
	var c Claims
	if err := tok.Claims(key, &c); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return &c, h.KeyID, nil
}

// DefaultLeeway is the clock skew a resource server allows between its
// clock and the issuer's.
const DefaultLeeway = 30 * time.Second

// MaxLeeway is the most skew any verifier may allow. The issuer keeps a
// revocation on the list it hands out until the revoked tokens' exp plus
// MaxLeeway: a verifier allowing more would take a revoked token again
// once its revocation has been dropped.
const MaxLeeway = DefaultLeeway

func check(c *Claims, o Options) error {
	leeway := o.Leeway
	if leeway < 0 || leeway > MaxLeeway {
		return fmt.Errorf("%w: leeway %v: want 0 to MaxLeeway (%v), the time revocations outlive exp", ErrClaims, leeway, MaxLeeway)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	switch {
	case c.Issuer != o.Issuer:
		return fmt.Errorf("%w: iss %q, want %q", ErrClaims, c.Issuer, o.Issuer)
	case o.Audience != "" && !c.Audience.Contains(o.Audience):
		return fmt.Errorf("%w: aud %v does not contain %q", ErrClaims, []string(c.Audience), o.Audience)
	case c.Expiry == nil:
		return fmt.Errorf("%w: exp missing", ErrClaims)
	case !now.Before(c.Expiry.Time().Add(leeway)):
		return fmt.Errorf("%w: expired at %s", ErrClaims, c.Expiry.Time().UTC().Format(time.RFC3339))
	case c.NotBefore != nil && now.Add(leeway).Before(c.NotBefore.Time()):
		return fmt.Errorf("%w: not valid before %s", ErrClaims, c.NotBefore.Time().UTC().Format(time.RFC3339))
	case c.ID == "":
		return fmt.Errorf("%w: jti missing", ErrClaims)
	case c.Subject == "":
		return fmt.Errorf("%w: sub missing", ErrClaims)
	}
	if o.Revoked != nil && (o.Revoked(c.ID) || (c.SessionID != "" && o.Revoked(c.SessionID))) {
		return ErrRevoked
	}
	return nil
}
