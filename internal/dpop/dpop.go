package dpop

import (
	"context"
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
	maxProofSize  = 8 << 10
)

// Proof is a verified proof.
type Proof struct {
	JKT      string // RFC 7638 SHA-256 thumbprint of the proof key, base64url
	ID       string
	IssuedAt time.Time
	// Until is when the proof stops being acceptable (iat plus the
	// window): how long its jti must be remembered.
	Until time.Time
}

// ErrInvalid wraps every reason a proof is refused.
var ErrInvalid = errors.New("invalid DPoP proof")

// ErrUseNonce: the proof carries no nonce, or one the server no longer
// (or never) issued; the answer is "use_dpop_nonce" with a fresh one in
// the DPoP-Nonce header (RFC 9449 §8). It also matches ErrInvalid.
var ErrUseNonce = errors.New("use_dpop_nonce")

// Replay errors, returned (wrapped, with ErrInvalid) by Use.
var (
	ErrReplayed = errors.New("proof already used")
	ErrQuota    = errors.New("too many recent proofs by this key")
)

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

// ReplayCache remembers proofs so each is accepted once. Use records the
// proof key's thumbprint and the proof's jti until the proof expires; a
// second use is ErrReplayed, and a key that already has its quota of live
// proofs gets ErrQuota (so a single key, whoever holds it, cannot crowd
// out everyone else's proofs). MemoryReplay keeps them in a process; the
// authorization server keeps them in its store, shared by its replicas.
type ReplayCache interface {
	Use(ctx context.Context, jkt, jti string, until time.Time) error
}

// Checker verifies proofs (Verify, stateless) and records them against
// replay (Use); Check does both. It is safe for concurrent use.
type Checker struct {
	Now    func() time.Time // nil: time.Now
	Window time.Duration    // how far iat may be from now; 0: DefaultWindow
	// Nonce, if set, decides whether a proof's nonce claim is one the
	// server issued recently (RFC 9449 §8); a proof without a nonce, or
	// with one it refuses, fails with ErrUseNonce.
	Nonce func(nonce string) bool
	// Replay records proofs; Use and Check need it.
	Replay ReplayCache
}

// Check verifies raw and records it against replay: Verify, then Use.
func (c *Checker) Check(ctx context.Context, raw, method, rawURL, accessToken string) (*Proof, error) {
	p, err := c.Verify(raw, method, rawURL, accessToken)
	if err != nil {
		return nil, err
	}
	if err := c.Use(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Use records p in the replay cache: it fails if the proof was seen
// before or its key has too many live proofs. A resource server calls it
// after it has verified the access token the proof is bound to, so that
// only holders of a valid token for it can add entries at all.
func (c *Checker) Use(ctx context.Context, p *Proof) error {
	if c.Replay == nil {
		return errors.New("dpop: checker without a replay cache")
	}
	err := c.Replay.Use(ctx, p.JKT, p.ID, p.Until)
	switch {
	case errors.Is(err, ErrReplayed):
		return fmt.Errorf("%w: jti %q was already used (a replayed proof)", ErrInvalid, p.ID)
	case errors.Is(err, ErrQuota):
		return fmt.Errorf("%w: %w: key %s", ErrInvalid, ErrQuota, p.JKT)
	case err != nil:
		return fmt.Errorf("dpop: replay cache: %w", err)
	}
	return nil
}

// Verify checks raw, the value of the request's single DPoP header, for a
// request with this method and URL; accessToken is the token sent with it
// ("" at the token endpoint), whose hash the proof must carry. It does
// not record the proof: see Use.
func (c *Checker) Verify(raw, method, rawURL, accessToken string) (*Proof, error) {
	if raw == "" {
		return nil, invalid("no DPoP header")
	}
	if len(raw) > maxProofSize {
		return nil, invalid("proof larger than %d bytes", maxProofSize)
	}
	if c.Window < 0 {
		return nil, errors.New("dpop: negative window")
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
	if c.Nonce != nil && (cl.Nonce == "" || len(cl.Nonce) > 256 || !c.Nonce(cl.Nonce)) {
		what := "no nonce"
		if cl.Nonce != "" {
			what = "a nonce that is stale or not from this server"
		}
		return nil, fmt.Errorf("%w: %w: the proof has %s; make it again with the DPoP-Nonce of this answer", ErrInvalid, ErrUseNonce, what)
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalid("thumbprint: %v", err)
	}
	jkt := base64.RawURLEncoding.EncodeToString(tp)
	return &Proof{JKT: jkt, ID: cl.ID, IssuedAt: iat, Until: iat.Add(win + time.Second)}, nil
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

// MemoryReplay is a ReplayCache in the process's memory, bounded: each
// key may hold PerKey live proofs and the cache Max in all. When it is
// full of live proofs it refuses new ones (ErrQuota) rather than forget
// early; a resource server adds a proof only after the token it comes
// with verified and is bound to its key (see Use), so filling it takes
// Max/PerKey valid tokens bound to distinct keys.
type MemoryReplay struct {
	now    func() time.Time
	perKey int
	max    int

	mu      sync.Mutex
	keys    map[string]map[string]time.Time // jkt -> jti -> forget at
	n       int
	inserts int
}

// NewMemoryReplay returns an empty cache; perKey and max must be positive.
func NewMemoryReplay(perKey, max int, now func() time.Time) (*MemoryReplay, error) {
	if perKey < 1 || max < perKey || now == nil {
		return nil, fmt.Errorf("dpop: replay cache of %d per key, %d in all: want 1 <= per key <= all, and a clock", perKey, max)
	}
	return &MemoryReplay{now: now, perKey: perKey, max: max, keys: map[string]map[string]time.Time{}}, nil
}

// Use implements ReplayCache.
func (m *MemoryReplay) Use(_ context.Context, jkt, jti string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	ids := m.keys[jkt]
	if t, ok := ids[jti]; ok && now.Before(t) {
		return ErrReplayed
	}
	if len(ids) >= m.perKey {
		m.forget(jkt, ids, now)
		if len(ids) >= m.perKey {
			return ErrQuota
		}
	}
	m.inserts++
	if m.inserts%1024 == 0 || m.n >= m.max {
		for k, ids := range m.keys {
			m.forget(k, ids, now)
		}
		if m.n >= m.max {
			return ErrQuota
		}
	}
	if ids == nil {
		ids = map[string]time.Time{}
		m.keys[jkt] = ids
	}
	ids[jti] = until
	m.n++
	return nil
}

// forget drops the expired proofs of one key.
func (m *MemoryReplay) forget(jkt string, ids map[string]time.Time, now time.Time) {
	for id, t := range ids {
		if !now.Before(t) {
			delete(ids, id)
			m.n--
		}
	}
	if len(ids) == 0 {
		delete(m.keys, jkt)
	}
}

// Len returns how many proofs the cache holds.
func (m *MemoryReplay) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
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
// or "" at the token endpoint; nonce is the server's latest DPoP-Nonce, or
// "" before it sent one.
func NewProof(key crypto.Signer, alg jose.SignatureAlgorithm, method, rawURL, accessToken, nonce string, now time.Time) (string, error) {
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
	cl := claims{ID: hex.EncodeToString(id), Method: method, URL: rawURL, IAT: &iat, Nonce: nonce}
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

// VerifyRequest verifies the single DPoP header of r, a request to a
// protected resource carrying token (see Verify; the caller then calls
// Use). The URL the proof must name is the one the client used: https (or
// http without TLS), the Host header, the path.
func (c *Checker) VerifyRequest(r *http.Request, token string) (*Proof, error) {
	vals := r.Header.Values("DPoP")
	if len(vals) != 1 {
		return nil, invalid("want exactly one DPoP header, got %d", len(vals))
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return c.Verify(vals[0], r.Method, scheme+"://"+r.Host+r.URL.EscapedPath(), token)
}

// NonceHeader is where a server hands out DPoP nonces (RFC 9449 §8).
const NonceHeader = "DPoP-Nonce"

// IsNonceChallenge reports whether resp asks for a proof with a server
// nonce (use_dpop_nonce, as a token endpoint's 400 or a resource's 401),
// and returns the nonce to use.
func IsNonceChallenge(resp *http.Response, body []byte) (string, bool) {
	nonce := resp.Header.Get(NonceHeader)
	if nonce == "" {
		return "", false
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return nonce, strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`)
	case http.StatusBadRequest:
		var e struct {
			Error string `json:"error"`
		}
		return nonce, json.Unmarshal(body, &e) == nil && e.Error == "use_dpop_nonce"
	}
	return "", false
}
