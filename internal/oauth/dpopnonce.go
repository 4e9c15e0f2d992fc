package oauth

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/store"
)

// DPoP nonces (RFC 9449 §8). A nonce is the number of the current period
// of DPoPNonceTTL and a MAC of it under the session key, which replicas
// share: every replica issues the same nonce in a period and accepts it
// in that period and the next, so a proof is made within a period or two
// of asking, never in advance, and no replica keeps state for nonces.

// dpopNonceAt returns the nonce of period n.
func (p *Provider) dpopNonceAt(n int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return base64.RawURLEncoding.EncodeToString(append(b[:], p.mac("dpop-nonce", string(b[:]))[:16]...))
}

func (p *Provider) dpopPeriod() int64 {
	return p.cfg.Now().Unix() / int64(p.cfg.DPoPNonceTTL/time.Second)
}

// dpopNonce is the nonce to hand out now.
func (p *Provider) dpopNonce() string { return p.dpopNonceAt(p.dpopPeriod()) }

// dpopNonceOK accepts this period's nonce and the last one's.
func (p *Provider) dpopNonceOK(nonce string) bool {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 24 {
		return false
	}
	n := int64(binary.BigEndian.Uint64(raw[:8]))
	if cur := p.dpopPeriod(); n != cur && n != cur-1 {
		return false
	}
	return hmac.Equal(raw[8:], p.mac("dpop-nonce", string(raw[:8]))[:16])
}

// storeReplay keeps the DPoP proofs seen in the store, so that every
// replica refuses a proof another one accepted.
type storeReplay struct {
	st    Store
	quota int
	now   func() time.Time
}

func (s storeReplay) Use(ctx context.Context, jkt, jti string, until time.Time) error {
	err := s.st.UseDPoPProof(ctx, jkt, jti, until, s.now(), s.quota)
	switch {
	case errors.Is(err, store.ErrConflict):
		return dpop.ErrReplayed
	case errors.Is(err, store.ErrQuota):
		return dpop.ErrQuota
	}
	return err
}

// useDPoPNonce answers a proof without a current nonce at the token
// endpoint (the DPoP-Nonce header is already set): 400 use_dpop_nonce.
func useDPoPNonce(w http.ResponseWriter, err error) {
	writeOAuthError(w, errf(http.StatusBadRequest, "use_dpop_nonce", "%v", err))
}
