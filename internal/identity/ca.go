package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/keysched"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// Defaults for CA lifetimes.
const (
	DefaultRootTTL         = 365 * 24 * time.Hour
	DefaultIntermediateTTL = 72 * time.Hour
	DefaultJWTKeyTTL       = 7 * 24 * time.Hour
)

// ErrNoSigner is returned when the CA has no usable intermediate, for example
// when an upstream root's key is unavailable and the intermediate expired.
var ErrNoSigner = errors.New("identity: no active intermediate to sign with")

// Upstream is a root supplied from outside: its certificates go into the
// bundle and its key signs intermediates, but neither enters the store. Key
// may be nil when the key is kept offline; the intermediate then cannot be
// replaced until it is supplied again.
type Upstream struct {
	Roots []*x509.Certificate
	Key   crypto.Signer
}

// Config configures a CA. Zero durations take the defaults.
type Config struct {
	TrustDomain     spiffeid.TrustDomain
	Store           store.Store
	Wrapper         *keywrap.Wrapper
	Now             func() time.Time
	Log             *slog.Logger
	RootTTL         time.Duration
	IntermediateTTL time.Duration
	JWTKeyTTL       time.Duration
	Upstream        *Upstream
	// JWTIssuer, if set, is the iss claim of every JWT-SVID: the issuer
	// whose OIDC discovery document relying parties fetch (package
	// oidcdiscovery). Empty: no iss claim (the SPIFFE spec leaves it out).
	JWTIssuer string
	// Downstream lets the intermediate sign downstream CAs
	// (SignDownstreamCA): intermediates are made with MaxPathLen 2
	// instead of 0, and an active one made with 0 is replaced at once.
	Downstream bool
}

type signingCert struct {
	id    string
	state store.CAKeyState
	cert  *x509.Certificate
	key   crypto.Signer // nil for roots whose key is not available
}

type jwtKey struct {
	kid       string
	state     store.CAKeyState
	pub       crypto.PublicKey
	key       crypto.Signer
	notBefore time.Time
	notAfter  time.Time
}

// CA issues X.509-SVIDs and JWT-SVIDs for one trust domain.
type CA struct {
	cfg     Config
	maintMu sync.Mutex // serialises Maintain and the manual rotations

	mu     sync.RWMutex
	roots  []signingCert // every root in the bundle, including prepared and retired
	inter  *signingCert  // active intermediate
	jwt    []jwtKey      // published JWT keys
	jwtSig jose.Signer   // signer of the active JWT key
	jwtKID string
}

// New loads the CA from the store, creating what is missing (root,
// intermediate, JWT key), and applies the rotation schedule once.
func New(ctx context.Context, cfg Config) (*CA, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RootTTL < 0 || cfg.IntermediateTTL < 0 || cfg.JWTKeyTTL < 0 {
		return nil, fmt.Errorf("identity: root, intermediate and JWT key TTLs must be positive (or zero for the default): %v, %v, %v",
			cfg.RootTTL, cfg.IntermediateTTL, cfg.JWTKeyTTL)
	}
	if cfg.RootTTL == 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.IntermediateTTL == 0 {
		cfg.IntermediateTTL = DefaultIntermediateTTL
	}
	if cfg.JWTKeyTTL == 0 {
		cfg.JWTKeyTTL = DefaultJWTKeyTTL
	}
	if cfg.IntermediateTTL > cfg.RootTTL/2 {
		return nil, fmt.Errorf("identity: intermediate TTL %v must be at most half the root TTL %v", cfg.IntermediateTTL, cfg.RootTTL)
	}
	if cfg.Upstream != nil && len(cfg.Upstream.Roots) == 0 {
		return nil, errors.New("identity: upstream CA has no certificates")
	}
	ca := &CA{cfg: cfg}
	if err := ca.Maintain(ctx); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.cfg.TrustDomain }

// Reload re-reads the CA state from the store; replicas sharing one database
// call it when the revision changes.
func (ca *CA) Reload(ctx context.Context) error {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	return ca.reload(ctx)
}

func (ca *CA) reload(ctx context.Context) error {
	keys, err := ca.cfg.Store.ListCAKeys(ctx)
	if err != nil {
		return fmt.Errorf("identity: load CA keys: %w", err)
	}
	now := ca.cfg.Now()
	var roots []signingCert
	var inter *signingCert
	var jwks []jwtKey
	if up := ca.cfg.Upstream; up != nil {
		for _, c := range up.Roots {
			sc := signingCert{id: keyID(c), state: store.StateRetired, cert: c}
			if up.Key != nil && publicKeysEqual(c.PublicKey, up.Key.Public()) {
				sc.state, sc.key = store.StateActive, up.Key
			}
			roots = append(roots, sc)
		}
	}
	for _, k := range keys {
		if !now.Before(k.NotAfter) || k.State == store.StateDropped {
			continue // expired or dropped by a burn-down: no longer in any bundle
		}
		switch k.Kind {
		case store.KindRoot:
			if ca.cfg.Upstream != nil {
				continue
			}
			sc, err := ca.loadCert(k)
			if err != nil {
				return err
			}
			roots = append(roots, sc)
		case store.KindIntermediate:
			if k.State != store.StateActive {
				continue
			}
			sc, err := ca.loadCert(k)
			if err != nil {
				return err
			}
			if inter == nil || sc.cert.NotBefore.After(inter.cert.NotBefore) {
				inter = &sc
			}
		case store.KindJWT:
			pub, err := x509.ParsePKIXPublicKey(k.CertDER)
			if err != nil {
				return fmt.Errorf("identity: JWT key %s: %w", k.ID, err)
			}
			jk := jwtKey{kid: k.ID, state: k.State, pub: pub, notBefore: k.NotBefore, notAfter: k.NotAfter}
			if k.State != store.StateRetired {
				if jk.key, err = ca.cfg.Wrapper.Unwrap(k.ID, k.WrappedKey); err != nil {
					return fmt.Errorf("identity: JWT key %s: %w", k.ID, err)
				}
			}
			jwks = append(jwks, jk)
		}
	}
	// An intermediate is only usable if a root in the bundle signed it.
	if inter != nil && !signedByAny(inter.cert, roots) {
		inter = nil
	}
	slices.SortFunc(jwks, func(a, b jwtKey) int { return a.notBefore.Compare(b.notBefore) })
	var sig jose.Signer
	var kid string
	for _, k := range jwks {
		if k.state == store.StateActive && k.key != nil {
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}},
				(&jose.SignerOptions{}).WithType("JWT"))
			if err != nil {
				return fmt.Errorf("identity: JWT signer: %w", err)
			}
			sig, kid = s, k.kid
		}
	}
	ca.mu.Lock()
	ca.roots, ca.inter, ca.jwt, ca.jwtSig, ca.jwtKID = roots, inter, jwks, sig, kid
	ca.mu.Unlock()
	return nil
}

func (ca *CA) loadCert(k store.CAKey) (signingCert, error) {
	cert, err := x509.ParseCertificate(k.CertDER)
	if err != nil {
		return signingCert{}, fmt.Errorf("identity: %s %s: %w", k.Kind, k.ID, err)
	}
	sc := signingCert{id: k.ID, state: k.State, cert: cert}
	if k.WrappedKey != nil && k.State != store.StateRetired {
		if sc.key, err = ca.cfg.Wrapper.Unwrap(k.ID, k.WrappedKey); err != nil {
			return signingCert{}, fmt.Errorf("identity: %s %s: %w", k.Kind, k.ID, err)
		}
	}
	return sc, nil
}

// Maintain creates whatever is missing and applies the rotation schedule
// described in the package documentation. Call it periodically.
func (ca *CA) Maintain(ctx context.Context) error {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	if err := ca.reload(ctx); err != nil {
		return err
	}
	now := ca.cfg.Now()
	changed := false

	if ca.cfg.Upstream == nil {
		active, prepared := ca.rootsByState()
		switch {
		case active == nil && prepared != nil:
			if err := ca.activateRoot(ctx, prepared, nil); err != nil {
				return err
			}
			changed = true
		case active == nil:
			if _, err := ca.newRoot(ctx, now, store.StateActive); err != nil {
				return err
			}
			changed = true
		case prepared == nil && lifeFraction(active.cert, now) >= 0.5:
			if _, err := ca.newRoot(ctx, now, store.StatePrepared); err != nil {
				return err
			}
			ca.cfg.Log.Info("prepared the next root CA; it is published in the bundle and becomes active at two thirds of the current root's life", "current_not_after", active.cert.NotAfter)
			changed = true
		case prepared != nil && lifeFraction(active.cert, now) >= 2.0/3:
			if err := ca.activateRoot(ctx, prepared, active); err != nil {
				return err
			}
			ca.cfg.Log.Info("activated the next root CA; the old one stays in the bundle until it expires", "old_not_after", active.cert.NotAfter)
			changed = true
		}
		if changed {
			if err := ca.reload(ctx); err != nil {
				return err
			}
		}
	}

	if ca.inter == nil || lifeFraction(ca.inter.cert, now) >= 0.5 || ca.cfg.Downstream && ca.inter.cert.MaxPathLen < interPathLenDownstream {
		if err := ca.rotateIntermediate(ctx, now); err != nil {
			if ca.inter == nil {
				return err
			}
			ca.cfg.Log.Error("cannot rotate the intermediate CA; it keeps signing until it expires", "not_after", ca.inter.cert.NotAfter, "err", err)
		} else {
			changed = true
		}
	}

	if err := ca.maintainJWT(ctx, now, &changed); err != nil {
		return err
	}
	if changed {
		return ca.reload(ctx)
	}
	return nil
}

func (ca *CA) maintainJWT(ctx context.Context, now time.Time, changed *bool) error {
	var active, prepared *jwtKey
	for i := range ca.jwt {
		switch ca.jwt[i].state {
		case store.StateActive:
			active = &ca.jwt[i]
		case store.StatePrepared:
			prepared = &ca.jwt[i]
		}
	}
	window := func(k *jwtKey) *keysched.Key {
		if k == nil {
			return nil
		}
		return &keysched.Key{NotBefore: k.notBefore, NotAfter: k.notAfter}
	}
	switch keysched.Next(now, window(active), window(prepared)) {
	case keysched.CreateActive:
		*changed = true
		return ca.newJWTKey(ctx, now, store.StateActive)
	case keysched.PromotePrepared:
		*changed = true
		return ca.cfg.Store.SetCAKeyState(ctx, prepared.kid, store.StateActive)
	case keysched.CreatePrepared:
		*changed = true
		return ca.newJWTKey(ctx, now, store.StatePrepared)
	case keysched.Switch:
		*changed = true
		if err := ca.cfg.Store.SetCAKeyState(ctx, prepared.kid, store.StateActive); err != nil {
			return err
		}
		return ca.cfg.Store.SetCAKeyState(ctx, active.kid, store.StateRetired)
	}
	return nil
}

func (ca *CA) rootsByState() (active, prepared *signingCert) {
	for i := range ca.roots {
		r := &ca.roots[i]
		switch r.state {
		case store.StateActive:
			if active == nil || r.cert.NotBefore.After(active.cert.NotBefore) {
				active = r
			}
		case store.StatePrepared:
			prepared = r
		}
	}
	return active, prepared
}

func (ca *CA) newRoot(ctx context.Context, now time.Time, state store.CAKeyState) (*x509.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	cn := fmt.Sprintf("Rampart root CA %s %s", ca.cfg.TrustDomain.Name(), now.UTC().Format("2006-01-02T15:04Z"))
	tmpl, err := svid.CATemplate(ca.cfg.TrustDomain, cn, now, now.Add(ca.cfg.RootTTL), -1)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: sign root: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, ca.put(ctx, store.KindRoot, state, cert, key, now)
}

func (ca *CA) activateRoot(ctx context.Context, next, old *signingCert) error {
	if err := ca.cfg.Store.SetCAKeyState(ctx, next.id, store.StateActive); err != nil {
		return err
	}
	if old != nil {
		if err := ca.cfg.Store.SetCAKeyState(ctx, old.id, store.StateRetired); err != nil {
			return err
		}
	}
	// The intermediate must now chain to the new root.
	if err := ca.reload(ctx); err != nil {
		return err
	}
	return ca.rotateIntermediate(ctx, ca.cfg.Now())
}

func (ca *CA) rotateIntermediate(ctx context.Context, now time.Time) error {
	active, _ := ca.rootsByState()
	if active == nil || active.key == nil {
		return errors.New("identity: the root's key is not available to sign a new intermediate (supply --upstream-ca-key)")
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	notAfter := now.Add(ca.cfg.IntermediateTTL)
	if notAfter.After(active.cert.NotAfter) {
		notAfter = active.cert.NotAfter
	}
	cn := fmt.Sprintf("Rampart intermediate CA %s %s", ca.cfg.TrustDomain.Name(), now.UTC().Format("2006-01-02T15:04:05Z"))
	pathLen := 0
	if ca.cfg.Downstream {
		pathLen = interPathLenDownstream
	}
	tmpl, err := svid.CATemplate(ca.cfg.TrustDomain, cn, now, notAfter, pathLen)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, active.cert, key.Public(), active.key)
	if err != nil {
		return fmt.Errorf("identity: sign intermediate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	if ca.inter != nil {
		if err := ca.cfg.Store.SetCAKeyState(ctx, ca.inter.id, store.StateRetired); err != nil {
			return err
		}
	}
	return ca.put(ctx, store.KindIntermediate, store.StateActive, cert, key, now)
}

func (ca *CA) newJWTKey(ctx context.Context, now time.Time, state store.CAKeyState) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	kidBytes := make([]byte, 16)
	if _, err := rand.Read(kidBytes); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	kid := hex.EncodeToString(kidBytes)
	wrapped, err := ca.cfg.Wrapper.Wrap(kid, key)
	if err != nil {
		return err
	}
	return ca.cfg.Store.PutCAKey(ctx, store.CAKey{
		ID: kid, Kind: store.KindJWT, State: state, CertDER: pub, WrappedKey: wrapped,
		NotBefore: now, NotAfter: now.Add(ca.cfg.JWTKeyTTL), CreatedAt: now,
	})
}

func (ca *CA) put(ctx context.Context, kind store.CAKeyKind, state store.CAKeyState, cert *x509.Certificate, key crypto.Signer, now time.Time) error {
	id := keyID(cert)
	wrapped, err := ca.cfg.Wrapper.Wrap(id, key)
	if err != nil {
		return err
	}
	return ca.cfg.Store.PutCAKey(ctx, store.CAKey{
		ID: id, Kind: kind, State: state, CertDER: cert.Raw, WrappedKey: wrapped,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CreatedAt: now,
	})
}

// RotateIntermediate replaces the intermediate now.
func (ca *CA) RotateIntermediate(ctx context.Context) error {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	if err := ca.rotateIntermediate(ctx, ca.cfg.Now()); err != nil {
		return err
	}
	return ca.reload(ctx)
}

// PrepareRoot creates the next root now and publishes it in the bundle. It
// does not sign anything until ActivateRoot (or the schedule) activates it.
func (ca *CA) PrepareRoot(ctx context.Context) error {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	if ca.cfg.Upstream != nil {
		return errors.New("identity: the root is upstream; rotate it by supplying new upstream certificates")
	}
	if _, prepared := ca.rootsByState(); prepared != nil {
		return fmt.Errorf("identity: root %s is already prepared; activate it first", prepared.id)
	}
	if _, err := ca.newRoot(ctx, ca.cfg.Now(), store.StatePrepared); err != nil {
		return err
	}
	return ca.reload(ctx)
}

// ActivateRoot makes the prepared root the signing root and retires the old
// one (it stays in the bundle until it expires). Agents must have had time to
// fetch the bundle with the prepared root; the schedule leaves a sixth of the
// root's life for that.
func (ca *CA) ActivateRoot(ctx context.Context) error {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	active, prepared := ca.rootsByState()
	if prepared == nil {
		return errors.New("identity: no prepared root to activate (prepare one first)")
	}
	if err := ca.activateRoot(ctx, prepared, active); err != nil {
		return err
	}
	return ca.reload(ctx)
}

// SignX509SVID signs an X.509-SVID for id and returns the chain, leaf first,
// without the root. The lifetime is ttl, cut to the intermediate's.
func (ca *CA) SignX509SVID(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration, dns []string, ips []net.IP) ([]*x509.Certificate, error) {
	if id.TrustDomain() != ca.cfg.TrustDomain {
		return nil, fmt.Errorf("identity: %q is not in trust domain %q", id, ca.cfg.TrustDomain.Name())
	}
	if ttl <= 0 {
		// A caller's arithmetic gone wrong, never "the default".
		return nil, fmt.Errorf("identity: SVID lifetime %v for %s: must be positive", ttl, id)
	}
	ca.mu.RLock()
	inter := ca.inter
	ca.mu.RUnlock()
	now := ca.cfg.Now()
	if inter == nil || !now.Before(inter.cert.NotAfter) {
		return nil, ErrNoSigner
	}
	notAfter := now.Add(ttl)
	if notAfter.After(inter.cert.NotAfter) {
		notAfter = inter.cert.NotAfter
	}
	tmpl, err := svid.LeafTemplate(id, pub, now, notAfter, dns, ips)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, pub, inter.key)
	if err != nil {
		return nil, fmt.Errorf("identity: sign svid: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return []*x509.Certificate{leaf, inter.cert}, nil
}

// SignJWTSVID signs a JWT-SVID for id with the given audience.
func (ca *CA) SignJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error) {
	if len(audience) == 0 {
		return "", time.Time{}, errors.New("identity: a JWT-SVID needs at least one audience")
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("identity: JWT-SVID lifetime %v for %s: must be positive", ttl, id)
	}
	ca.mu.RLock()
	sig := ca.jwtSig
	ca.mu.RUnlock()
	if sig == nil {
		return "", time.Time{}, errors.New("identity: no active JWT signing key")
	}
	now := ca.cfg.Now()
	exp := now.Add(ttl).Truncate(time.Second)
	tok, err := jwt.Signed(sig).Claims(jwt.Claims{
		Issuer:   ca.cfg.JWTIssuer,
		Subject:  id.String(),
		Audience: audience,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(exp),
	}).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("identity: sign jwt-svid: %w", err)
	}
	return tok, exp, nil
}

// X509Bundle returns every root in the trust bundle: active, prepared and
// retired but not yet expired.
func (ca *CA) X509Bundle() []*x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	out := make([]*x509.Certificate, 0, len(ca.roots))
	for _, r := range ca.roots {
		out = append(out, r.cert)
	}
	return out
}

// JWTBundle returns the JWT signing keys as a JWKS document (RFC 7517), the
// format of SPIFFE JWT bundles.
func (ca *CA) JWTBundle() ([]byte, error) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	set := jose.JSONWebKeySet{}
	for _, k := range ca.jwt {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "jwt-svid"})
	}
	return json.Marshal(set)
}

// JWTAuthorities returns the JWT signing keys by key ID, as a SPIFFE
// bundle holds them (package federation serves them to other trust
// domains).
func (ca *CA) JWTAuthorities() map[string]crypto.PublicKey {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	out := make(map[string]crypto.PublicKey, len(ca.jwt))
	for _, k := range ca.jwt {
		out[k.kid] = k.pub
	}
	return out
}

// KeyStatus describes one CA key for status output and metrics.
type KeyStatus struct {
	Kind      store.CAKeyKind  `json:"kind"`
	ID        string           `json:"id"`
	State     store.CAKeyState `json:"state"`
	Subject   string           `json:"subject,omitempty"`
	NotBefore time.Time        `json:"not_before"`
	NotAfter  time.Time        `json:"not_after"`
	Upstream  bool             `json:"upstream,omitempty"`
}

// Status lists the roots, the active intermediate and the JWT keys.
func (ca *CA) Status() []KeyStatus {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	var out []KeyStatus
	for _, r := range ca.roots {
		out = append(out, KeyStatus{Kind: store.KindRoot, ID: r.id, State: r.state, Subject: r.cert.Subject.CommonName,
			NotBefore: r.cert.NotBefore, NotAfter: r.cert.NotAfter, Upstream: ca.cfg.Upstream != nil})
	}
	if i := ca.inter; i != nil {
		out = append(out, KeyStatus{Kind: store.KindIntermediate, ID: i.id, State: i.state, Subject: i.cert.Subject.CommonName,
			NotBefore: i.cert.NotBefore, NotAfter: i.cert.NotAfter})
	}
	for _, k := range ca.jwt {
		out = append(out, KeyStatus{Kind: store.KindJWT, ID: k.kid, State: k.state, NotBefore: k.notBefore, NotAfter: k.notAfter})
	}
	return out
}

// EncodePEM encodes certificates as concatenated PEM blocks (svid.EncodePEM).
func EncodePEM(certs []*x509.Certificate) []byte { return svid.EncodePEM(certs) }

// ParsePEM parses every CERTIFICATE block in b; anything else is an error
// (svid.ParsePEM).
func ParsePEM(b []byte) ([]*x509.Certificate, error) { return svid.ParsePEM(b) }

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return k, nil
}

func keyID(c *x509.Certificate) string {
	if len(c.SubjectKeyId) > 0 {
		return hex.EncodeToString(c.SubjectKeyId)
	}
	return hex.EncodeToString(c.SerialNumber.Bytes())
}

func lifeFraction(c *x509.Certificate, now time.Time) float64 {
	return float64(now.Sub(c.NotBefore)) / float64(c.NotAfter.Sub(c.NotBefore))
}

func signedByAny(c *x509.Certificate, roots []signingCert) bool {
	for _, r := range roots {
		if c.CheckSignatureFrom(r.cert) == nil {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// SelfTest signs a throwaway X.509-SVID (spiffe://TD/rampart/drill, one
// minute) and verifies that it chains to the current bundle: what a
// restore drill asks of a restored CA.
func (c *CA) SelfTest() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	id, err := spiffeid.FromSegments(c.cfg.TrustDomain, "rampart", "drill")
	if err != nil {
		return err
	}
	chain, err := c.SignX509SVID(id, key.Public(), time.Minute, nil, nil)
	if err != nil {
		return err
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range c.X509Bundle() {
		roots.AddCert(r)
	}
	for _, i := range chain[1:] {
		inter.AddCert(i)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// Manual rotations, by name (the API's and the CLI's).
const (
	RotateIntermediate = "intermediate"
	RotateRootPrepare  = "root-prepare"
	RotateRootActivate = "root-activate"
)

// ErrRotateTarget: Rotate was given no rotation it knows.
var ErrRotateTarget = errors.New("identity: unknown rotation")

// Rotate applies the manual rotation named target.
func (ca *CA) Rotate(ctx context.Context, target string) error {
	switch target {
	case RotateIntermediate:
		return ca.RotateIntermediate(ctx)
	case RotateRootPrepare:
		return ca.PrepareRoot(ctx)
	case RotateRootActivate:
		return ca.ActivateRoot(ctx)
	}
	return fmt.Errorf("%w: target: %q; want %s, %s or %s", ErrRotateTarget, target, RotateIntermediate, RotateRootPrepare, RotateRootActivate)
}
