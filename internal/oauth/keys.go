package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/keysched"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// keyStore is what the keyring needs from the store.
type keyStore interface {
	ListCAKeys(ctx context.Context) ([]store.CAKey, error)
	PutCAKey(ctx context.Context, k store.CAKey) error
	SetCAKeyState(ctx context.Context, id string, state store.CAKeyState) error
}

// pubKey is one published token signing key.
type pubKey struct {
	kid       string
	state     store.CAKeyState
	alg       jose.SignatureAlgorithm
	pub       crypto.PublicKey
	notBefore time.Time
	notAfter  time.Time
	wrapped   []byte // the sealed private key
}

// keyring holds the token signing keys: the active one signs; prepared and
// retired ones are published so verifiers know them in time.
type keyring struct {
	store keyStore
	wrap  *keywrap.Wrapper
	alg   jose.SignatureAlgorithm // for new keys
	ttl   time.Duration

	maintMu sync.Mutex
	mu      sync.RWMutex
	keys    []pubKey
	signer  jose.Signer // typ at+jwt: access tokens
	idSig   jose.Signer // typ JWT: ID tokens
	kid     string
	kidAlg  jose.SignatureAlgorithm
}

// maintain applies the rotation schedule and reloads the keys.
func (k *keyring) maintain(ctx context.Context, now time.Time) error {
	k.maintMu.Lock()
	defer k.maintMu.Unlock()
	keys, err := k.load(ctx, now)
	if err != nil {
		return err
	}
	var active, prepared *pubKey
	for i := range keys {
		switch keys[i].state {
		case store.StateActive:
			active = &keys[i]
		case store.StatePrepared:
			prepared = &keys[i]
		}
	}
	window := func(p *pubKey) *keysched.Key {
		if p == nil {
			return nil
		}
		return &keysched.Key{NotBefore: p.notBefore, NotAfter: p.notAfter}
	}
	switch keysched.Next(now, window(active), window(prepared)) {
	case keysched.None:
		return k.install(keys)
	case keysched.CreateActive:
		err = k.create(ctx, now, store.StateActive)
	case keysched.CreatePrepared:
		err = k.create(ctx, now, store.StatePrepared)
	case keysched.PromotePrepared:
		err = k.store.SetCAKeyState(ctx, prepared.kid, store.StateActive)
	case keysched.Switch:
		if err = k.store.SetCAKeyState(ctx, prepared.kid, store.StateActive); err == nil {
			err = k.store.SetCAKeyState(ctx, active.kid, store.StateRetired)
		}
	}
	if err != nil {
		return fmt.Errorf("oauth: rotate signing key: %w", err)
	}
	return k.reload(ctx, now)
}

// load reads the unexpired OAuth keys from the store.
func (k *keyring) load(ctx context.Context, now time.Time) ([]pubKey, error) {
	all, err := k.store.ListCAKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	var out []pubKey
	for _, ck := range all {
		if ck.Kind != store.KindOAuth || !now.Before(ck.NotAfter) || ck.State == store.StateDropped {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(ck.CertDER)
		if err != nil {
			return nil, fmt.Errorf("oauth: signing key %s: %w", ck.ID, err)
		}
		alg := jose.ES256
		if _, ok := pub.(ed25519.PublicKey); ok {
			alg = jose.EdDSA
		}
		out = append(out, pubKey{kid: ck.ID, state: ck.State, alg: alg, pub: pub, notBefore: ck.NotBefore, notAfter: ck.NotAfter, wrapped: ck.WrappedKey})
	}
	return out, nil
}

// reload refreshes the published keys and the signer from the store.
func (k *keyring) reload(ctx context.Context, now time.Time) error {
	keys, err := k.load(ctx, now)
	if err != nil {
		return err
	}
	return k.install(keys)
}

// install publishes keys and makes the active one sign.
func (k *keyring) install(keys []pubKey) error {
	var signer, idSig jose.Signer
	var kid string
	var kidAlg jose.SignatureAlgorithm
	for _, p := range keys {
		if p.state != store.StateActive {
			continue
		}
		priv, err := k.wrap.Unwrap(p.kid, p.wrapped)
		if err != nil {
			return fmt.Errorf("oauth: signing key %s: %w", p.kid, err)
		}
		key := jose.SigningKey{Algorithm: p.alg, Key: jose.JSONWebKey{Key: priv, KeyID: p.kid}}
		if signer, err = jose.NewSigner(key, (&jose.SignerOptions{}).WithType("at+jwt")); err != nil {
			return fmt.Errorf("oauth: signing key %s: %w", p.kid, err)
		}
		if idSig, err = jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT")); err != nil {
			return fmt.Errorf("oauth: signing key %s: %w", p.kid, err)
		}
		kid, kidAlg = p.kid, p.alg
	}
	k.mu.Lock()
	k.keys, k.signer, k.idSig, k.kid, k.kidAlg = keys, signer, idSig, kid, kidAlg
	k.mu.Unlock()
	return nil
}

func (k *keyring) create(ctx context.Context, now time.Time, state store.CAKeyState) error {
	var priv crypto.Signer
	var err error
	if k.alg == jose.EdDSA {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	} else {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	kid := hex.EncodeToString(b)
	wrapped, err := k.wrap.Wrap(kid, priv)
	if err != nil {
		return err
	}
	return k.store.PutCAKey(ctx, store.CAKey{ID: kid, Kind: store.KindOAuth, State: state, CertDER: pub,
		WrappedKey: wrapped, NotBefore: now, NotAfter: now.Add(k.ttl), CreatedAt: now})
}

// current returns the active signer and its key ID.
func (k *keyring) current() (jose.Signer, string, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.signer == nil {
		return nil, "", fmt.Errorf("oauth: no active signing key")
	}
	return k.signer, k.kid, nil
}

// idSigner returns the signer of ID tokens and its algorithm.
func (k *keyring) idSigner() (jose.Signer, jose.SignatureAlgorithm, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.idSig == nil {
		return nil, "", fmt.Errorf("oauth: no active signing key")
	}
	return k.idSig, k.kidAlg, nil
}

// jwks returns every published key.
func (k *keyring) jwks() jose.JSONWebKeySet {
	k.mu.RLock()
	defer k.mu.RUnlock()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(k.keys))}
	for _, p := range k.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: p.pub, KeyID: p.kid, Algorithm: string(p.alg), Use: "sig"})
	}
	return set
}

// algs lists the algorithms of the published keys, for verification.
func (k *keyring) algs() []jose.SignatureAlgorithm {
	k.mu.RLock()
	defer k.mu.RUnlock()
	seen := map[jose.SignatureAlgorithm]bool{}
	var out []jose.SignatureAlgorithm
	for _, p := range k.keys {
		if !seen[p.alg] {
			seen[p.alg] = true
			out = append(out, p.alg)
		}
	}
	return out
}

// RekeySigningKey replaces the token signing key now (a burn-down, package
// rekey): a new key signs from this moment; every other key stops signing
// and is either kept published (retired) so that tokens it signed verify
// until they expire, or, with dropOld, withdrawn at once so that they are
// refused everywhere the JWKS reaches. It returns the old key IDs and the
// new one.
func (p *Provider) RekeySigningKey(ctx context.Context, dropOld bool) (old []string, kid string, err error) {
	k := p.keys
	k.maintMu.Lock()
	defer k.maintMu.Unlock()
	now := p.cfg.Now()
	keys, err := k.load(ctx, now)
	if err != nil {
		return nil, "", err
	}
	for _, pk := range keys {
		old = append(old, pk.kid)
		state := store.StateRetired
		if dropOld {
			state = store.StateDropped
		}
		if pk.state != state {
			if err := k.store.SetCAKeyState(ctx, pk.kid, state); err != nil {
				return old, "", fmt.Errorf("oauth: rekey: %w", err)
			}
		}
	}
	if err := k.create(ctx, now, store.StateActive); err != nil {
		return old, "", fmt.Errorf("oauth: rekey: %w", err)
	}
	if err := k.reload(ctx, now); err != nil {
		return old, "", err
	}
	_, kid, err = k.current()
	return old, kid, err
}

// DropSigningKeys withdraws the named signing keys from the JWKS now:
// tokens they signed are refused from then on. The active key cannot be
// dropped; unknown and already dropped IDs are skipped. It returns the IDs
// it dropped.
func (p *Provider) DropSigningKeys(ctx context.Context, ids []string) ([]string, error) {
	k := p.keys
	k.maintMu.Lock()
	defer k.maintMu.Unlock()
	now := p.cfg.Now()
	keys, err := k.load(ctx, now)
	if err != nil {
		return nil, err
	}
	var dropped []string
	for _, pk := range keys {
		if !slices.Contains(ids, pk.kid) {
			continue
		}
		if pk.state == store.StateActive {
			return dropped, fmt.Errorf("oauth: signing key %s is the one signing now; it cannot be dropped", pk.kid)
		}
		if err := k.store.SetCAKeyState(ctx, pk.kid, store.StateDropped); err != nil {
			return dropped, fmt.Errorf("oauth: drop signing key %s: %w", pk.kid, err)
		}
		dropped = append(dropped, pk.kid)
	}
	return dropped, k.reload(ctx, now)
}
