package kms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/store"
)

// ServiceID is the SPIFFE ID whose policy says which workload may use
// which key: paths /keys/NAME/OPERATION, method POST. The key store's own
// scheduled actions name it as their actor.
func ServiceID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "rampart", "kms")
}

// Operations are the key operations workloads call.
var Operations = []string{"encrypt", "decrypt", "datakey", "rewrap", "sign", "verify", "hmac", "verify-hmac"}

// PolicyGetter reads a service's current policy; store.Store implements it.
type PolicyGetter interface {
	GetPolicy(ctx context.Context, service string) (store.Policy, error)
}

// Access is the key-use policy, compiled: the policy protecting
// ServiceID(td). Without one, every key use is denied. Load it again
// whenever the store's revision moves; Decide is safe for concurrent use
// with Load.
type Access struct {
	td  spiffeid.TrustDomain
	cur atomic.Pointer[compiledAccess] // nil: no key-use policy
}

type compiledAccess struct {
	seq int64 // the policy's sequence number in the store
	eng *policy.Engine
}

// NewAccess returns the key-use policy of trust domain td, not yet loaded
// (everything denied).
func NewAccess(td spiffeid.TrustDomain) *Access { return &Access{td: td} }

// Load compiles the key-use policy if it changed.
func (a *Access) Load(ctx context.Context, st PolicyGetter) error {
	p, err := st.GetPolicy(ctx, ServiceID(a.td).String())
	if errors.Is(err, store.ErrNotFound) {
		a.cur.Store(nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("kms: key-use policy: %w", err)
	}
	if cur := a.cur.Load(); cur != nil && cur.seq == p.Seq {
		return nil
	}
	parsed, err := policy.Parse(p.Source)
	if err != nil {
		return fmt.Errorf("kms: key-use policy: %w", err)
	}
	eng, err := policy.Compile(parsed)
	if err != nil {
		return fmt.Errorf("kms: key-use policy: %w", err)
	}
	a.cur.Store(&compiledAccess{seq: p.Seq, eng: eng})
	return nil
}

// Decide says whether caller may perform op with key; without a key-use
// policy the answer is no, at version "none".
func (a *Access) Decide(caller spiffeid.ID, key, op string) policy.Decision {
	p := a.cur.Load()
	if p == nil {
		return policy.Decision{Version: "none"}
	}
	return p.eng.Decide(&policy.Request{Caller: caller, Method: http.MethodPost, Path: "/keys/" + key + "/" + op})
}
