package dpop

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Algorithms are the proof signature algorithms accepted: asymmetric only.
// AlgEd25519 is RFC 9864's fully specified name for EdDSA over Ed25519,
// which clients such as openid-client send; go-jose knows only "EdDSA", so
// those proofs are verified here.
var Algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA, AlgEd25519, jose.RS256, jose.PS256}

// AlgEd25519 is the RFC 9864 algorithm name for Ed25519 signatures.
const AlgEd25519 = jose.SignatureAlgorithm("Ed25519")

// verifyJWS checks a compact JWS signed by the public key in its own jwk
// header and returns that key, the typ header and the payload.
func verifyJWS(raw string) (*jose.JSONWebKey, string, []byte, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, "", nil, invalid("not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, "", nil, invalid("header: %v", err)
	}
	var hdr struct {
		Alg string          `json:"alg"`
		Typ string          `json:"typ"`
		JWK json.RawMessage `json:"jwk"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, "", nil, invalid("header: %v", err)
	}
	if hdr.Alg != string(AlgEd25519) {
		jws, err := jose.ParseSignedCompact(raw, Algorithms)
		if err != nil {
			return nil, "", nil, invalid("not a JWS with an accepted algorithm (%v): %v", Algorithms, err)
		}
		if len(jws.Signatures) != 1 {
			return nil, "", nil, invalid("want exactly one signature")
		}
		jwk := jws.Signatures[0].Header.JSONWebKey
		if err := checkJWK(jwk); err != nil {
			return nil, "", nil, err
		}
		payload, err := jws.Verify(jwk)
		if err != nil {
			return nil, "", nil, invalid("signature does not verify with the jwk header: %v", err)
		}
		return jwk, hdr.Typ, payload, nil
	}
	var jwk jose.JSONWebKey
	if len(hdr.JWK) == 0 {
		return nil, "", nil, invalid("no valid public key in the jwk header")
	}
	if err := jwk.UnmarshalJSON(hdr.JWK); err != nil {
		return nil, "", nil, invalid("jwk header: %v", err)
	}
	if err := checkJWK(&jwk); err != nil {
		return nil, "", nil, err
	}
	pub, ok := jwk.Key.(ed25519.PublicKey)
	if !ok {
		return nil, "", nil, invalid("alg Ed25519 with a %T key", jwk.Key)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, "", nil, invalid("signature does not verify with the jwk header")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, "", nil, invalid("payload: %v", err)
	}
	return &jwk, hdr.Typ, payload, nil
}

func checkJWK(jwk *jose.JSONWebKey) error {
	if jwk == nil || !jwk.Valid() {
		return invalid("no valid public key in the jwk header")
	}
	if !jwk.IsPublic() {
		return invalid("the jwk header holds a private key")
	}
	return nil
}

// Defaults.
const (
	DefaultWindow = time.Minute // how far iat may be from now, either way
	maxSeen       = 1 << 20     // bound on remembered jti values
	maxProofSize  = 8 << 10
)

// Proof is a verified proof.
type Proof struct {
	JKT      string // RFC 7638 SHA-256 thumbprint of the proof key, base64url
	ID       string
	IssuedAt time.Time
}

// ErrInvalid wraps every reason a proof is refused.
var ErrInvalid = errors.New("invalid DPoP proof")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

type claims struct {
	ID     string `json:"jti"`
	Method string `json:"htm"`
	URL    string `json:"htu"`
	IAT    *int64 `json:"iat"`
	ATH    string `json:"ath,omitempty"`
	Nonce  string `json:"nonce,omitempty"`
}

// Checker verifies proofs and remembers their jti for replay detection.
// It is safe for concurrent use.
type Checker struct {
	Now    func() time.Time // nil: time.Now
	Window time.Duration    // 0: DefaultWindow

	mu      sync.Mutex
	seen    map[string]time.Time // jti -> when it may be forgotten
	inserts int
}

// Check verifies raw, the value of the request's single DPoP header, for a
// request with this method and URL; accessToken is the token sent with it
// ("" at the token endpoint), whose hash the proof must carry.
func (c *Checker) Check(raw, method, rawURL, accessToken string) (*Proof, error) {
	if raw == "" {
		return nil, invalid("no DPoP header")
	}
	if len(raw) > maxProofSize {
		return nil, invalid("proof larger than %d bytes", maxProofSize)
	}
	jwk, typ, payload, err := verifyJWS(raw)
	if err != nil {
		return nil, err
	}
	if typ != "dpop+jwt" {
		return nil, invalid("typ is %q, want dpop+jwt", typ)
	}
	var cl claims
	if err := jsonStrict(payload, &cl); err != nil {
		return nil, invalid("claims: %v", err)
	}
	if cl.ID == "" || len(cl.ID) > 256 {
		return nil, invalid("jti missing or too long")
	}
	if cl.Method != method {
		return nil, invalid("htm is %q, the request is %s", cl.Method, method)
	}
	want, err := normalize(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dpop: request URL: %w", err)
	}
	got, err := normalize(cl.URL)
	if err != nil || got != want {
		return nil, invalid("htu is %q, the request is for %s", cl.URL, want)
	}
	if cl.IAT == nil {
		return nil, invalid("iat missing")
	}
	now := c.now()
	iat := time.Unix(*cl.IAT, 0)
	win := c.window()
	if iat.Before(now.Add(-win)) || iat.After(now.Add(win)) {
		return nil, invalid("iat %s is outside %v of now", iat.UTC().Format(time.RFC3339), win)
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		if cl.ATH != base64.RawURLEncoding.EncodeToString(sum[:]) {
			return nil, invalid("ath does not match the access token")
		}
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalid("thumbprint: %v", err)
	}
	jkt := base64.RawURLEncoding.EncodeToString(tp)
	if !c.remember(jkt+"/"+cl.ID, now.Add(2*win)) {
		return nil, invalid("jti %q was already used (a replayed proof)", cl.ID)
	}
	return &Proof{JKT: jkt, ID: cl.ID, IssuedAt: iat}, nil
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checker) window() time.Duration {
	if c.Window > 0 {
		return c.Window
	}
	return DefaultWindow
}

// remember records id until forget; false if it is already there (or the
// cache is full of live entries: refuse rather than forget early).
func (c *Checker) remember(id string, forget time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	now := c.now()
	if t, ok := c.seen[id]; ok && now.Before(t) {
		return false
	}
	c.inserts++
	if c.inserts%1024 == 0 || len(c.seen) >= maxSeen {
		for k, t := range c.seen {
			if !now.Before(t) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= maxSeen {
			return false
		}
	}
	c.seen[id] = forget
	return true
}

// normalize reduces a URL to what htu compares (RFC 9449 §4.3): scheme and
// host in lower case, no default port, no query or fragment.
func normalize(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	host := strings.ToLower(u.Host)
	if h, p, ok := strings.Cut(host, ":"); ok && (u.Scheme == "https" && p == "443" || u.Scheme == "http" && p == "80") {
		host = h
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return strings.ToLower(u.Scheme) + "://" + host + path, nil
}

// NewProof makes a proof for a request, signed with key (its public half
// goes into the header). accessToken is the token sent with the request,
// or "" at the token endpoint.
func NewProof(key crypto.Signer, alg jose.SignatureAlgorithm, method, rawURL, accessToken string, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	iat := now.Unix()
	cl := claims{ID: hex.EncodeToString(id), Method: method, URL: rawURL, IAT: &iat}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		cl.ATH = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	payload, err := json.Marshal(cl)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	return obj.CompactSerialize()
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of a public key, as
// cnf.jkt carries it.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// Schemes of the Authorization header.
const (
	SchemeBearer = "Bearer"
	SchemeDPoP   = "DPoP"
)

// Authorization returns the scheme (SchemeBearer or SchemeDPoP, whatever
// case the client used) and token of an Authorization header.
func Authorization(h http.Header) (scheme, token string, ok bool) {
	s, tok, found := strings.Cut(h.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !found || tok == "" {
		return "", "", false
	}
	switch {
	case strings.EqualFold(s, SchemeBearer):
		return SchemeBearer, tok, true
	case strings.EqualFold(s, SchemeDPoP):
		return SchemeDPoP, tok, true
	}
	return "", "", false
}

// CheckRequest checks the single DPoP header of r, a request to a
// protected resource carrying token. The URL the proof must name is the
// one the client used: https (or http without TLS), the Host header, the
// path.
func (c *Checker) CheckRequest(r *http.Request, token string) (*Proof, error) {
	vals := r.Header.Values("DPoP")
	if len(vals) != 1 {
		return nil, invalid("want exactly one DPoP header, got %d", len(vals))
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return c.Check(vals[0], r.Method, scheme+"://"+r.Host+r.URL.EscapedPath(), token)
}
