package accesstoken

import (
	"fmt"
	"sync"
	"time"
)

// DefaultCacheSize bounds a Verifier's cache of verified tokens.
const DefaultCacheSize = 10000

// Verifier verifies tokens for one issuer and audience and remembers the
// tokens whose signature it has checked: a service sees the same token on
// every call of a session, and an ECDSA verification costs ~80 µs on a
// small core while a cache hit costs well under one. The cache is keyed by
// the whole token (signature included), so an altered token never hits;
// expiry, not-before and revocation are checked again on every call.
type Verifier struct {
	Keys     KeySet
	Issuer   string
	Audience string
	Revoked  func(id string) bool
	Now      func() time.Time
	// Leeway is the clock skew allowed on exp and nbf (see Options).
	Leeway time.Duration
	// CacheSize bounds the cache (default DefaultCacheSize; negative: no
	// cache).
	CacheSize int

	mu    sync.RWMutex
	cache map[string]cached
}

// cached is a verified token and the key that verified it: a hit is
// honoured only while that key is still in Keys (a key withdrawn by a
// burn-down takes its tokens with it at once, cached or not).
type cached struct {
	claims *Claims
	kid    string
}

// Verify checks raw; see the package's Verify for what is checked.
func (v *Verifier) Verify(raw string) (*Claims, error) {
	o := Options{Issuer: v.Issuer, Audience: v.Audience, Revoked: v.Revoked, Leeway: v.Leeway}
	if v.Now != nil {
		o.Now = v.Now()
	}
	v.mu.RLock()
	e, ok := v.cache[raw]
	v.mu.RUnlock()
	if ok {
		if _, _, known := v.Keys.Key(e.kid); !known {
			v.mu.Lock()
			delete(v.cache, raw)
			v.mu.Unlock()
			return nil, fmt.Errorf("%w: unknown key ID %q", ErrSignature, e.kid)
		}
		if err := check(e.claims, o); err != nil {
			return nil, err
		}
		cp := *e.claims
		return &cp, nil
	}
	c, kid, err := verify(raw, v.Keys, o)
	if err != nil {
		return nil, err
	}
	v.remember(raw, cached{claims: c, kid: kid}, o.Now)
	cp := *c
	return &cp, nil
}

func (v *Verifier) remember(raw string, c cached, now time.Time) {
	size := v.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size < 0 {
		return
	}
	if now.IsZero() {
		now = time.Now()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cache == nil {
		v.cache = make(map[string]cached)
	}
	if len(v.cache) >= size {
		// Drop the expired; if that frees nothing, start afresh (bounded
		// memory matters more than the hit rate of a flood).
		for k, old := range v.cache {
			if !now.Before(old.claims.Expiry.Time()) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= size {
			clear(v.cache)
		}
	}
	v.cache[raw] = c
}
