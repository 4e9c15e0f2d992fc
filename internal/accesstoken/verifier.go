package accesstoken

import (
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
	cache map[string]*Claims
}

// Verify checks raw; see the package's Verify for what is checked.
func (v *Verifier) Verify(raw string) (*Claims, error) {
	o := Options{Issuer: v.Issuer, Audience: v.Audience, Revoked: v.Revoked, Leeway: v.Leeway}
	if v.Now != nil {
		o.Now = v.Now()
	}
	v.mu.RLock()
	c, ok := v.cache[raw]
	v.mu.RUnlock()
	if ok {
		if err := check(c, o); err != nil {
			return nil, err
		}
		cp := *c
		return &cp, nil
	}
	c, err := Verify(raw, v.Keys, o)
	if err != nil {
		return nil, err
	}
	v.remember(raw, c, o.Now)
	cp := *c
	return &cp, nil
}

func (v *Verifier) remember(raw string, c *Claims, now time.Time) {
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
		v.cache = make(map[string]*Claims)
	}
	if len(v.cache) >= size {
		// Drop the expired; if that frees nothing, start afresh (bounded
		// memory matters more than the hit rate of a flood).
		for k, old := range v.cache {
			if !now.Before(old.Expiry.Time()) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= size {
			clear(v.cache)
		}
	}
	v.cache[raw] = c
}
