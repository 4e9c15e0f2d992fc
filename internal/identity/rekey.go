package identity

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/rampartsec/rampart/internal/store"
)

// Burn-down (package rekey drives these): after a compromise every key the
// CA holds is suspect, so the schedule's patience (a sixth of a root's life
// between publishing and signing) is replaced by an operator's deadline:
//
//  1. RekeyPrepareRoot publishes a fresh root beside the old ones (every
//     root prepared before is dropped: it was made on a compromised host);
//  2. after agents have had time to fetch that bundle, RekeyActivate makes
//     it the signing root, signs a fresh intermediate with it and replaces
//     the JWT-SVID key; the old roots and JWT keys stay published (retired)
//     so that SVIDs not yet re-issued keep verifying;
//  3. once every SVID is re-issued (or the deadline passes), DropKeys takes
//     the old roots and JWT keys out of every bundle at once, long before
//     they expire.

// ErrUpstreamRekey: the root is supplied from outside and cannot be
// replaced by the CA.
var ErrUpstreamRekey = errors.New("identity: the root is upstream (--upstream-ca); a burn-down needs a new upstream root: supply it, then rekey the intermediate")

// Rekeyed says what RekeyActivate replaced.
type Rekeyed struct {
	NewRoot         string   `json:"new_root"`
	RetiredRoots    []string `json:"retired_roots,omitempty"`
	OldIntermediate string   `json:"old_intermediate,omitempty"`
	NewIntermediate string   `json:"new_intermediate"`
	OldJWTKeys      []string `json:"old_jwt_keys,omitempty"`
	NewJWTKey       string   `json:"new_jwt_key"`
}

// RekeyPrepareRoot creates a new root and publishes it in the bundle, not
// yet signing. Roots prepared before are dropped. It returns the new root's
// ID.
func (ca *CA) RekeyPrepareRoot(ctx context.Context) (string, error) {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	if ca.cfg.Upstream != nil {
		return "", ErrUpstreamRekey
	}
	if err := ca.reload(ctx); err != nil {
		return "", err
	}
	for _, r := range ca.roots {
		if r.state == store.StatePrepared {
			if err := ca.cfg.Store.SetCAKeyState(ctx, r.id, store.StateDropped); err != nil {
				return "", fmt.Errorf("identity: drop prepared root %s: %w", r.id, err)
			}
		}
	}
	cert, err := ca.newRoot(ctx, ca.cfg.Now(), store.StatePrepared)
	if err != nil {
		return "", err
	}
	return keyID(cert), ca.reload(ctx)
}

// RekeyActivate makes root (prepared by RekeyPrepareRoot) the signing root,
// retires every other root (still published), signs a new intermediate
// with it and replaces the JWT-SVID signing key. Run again after a crash it
// finishes what is missing: an active root that already signed the active
// intermediate is left as it is; the JWT key is replaced again (harmless:
// the one made before the crash is retired with the others).
func (ca *CA) RekeyActivate(ctx context.Context, root string) (Rekeyed, error) {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	if ca.cfg.Upstream != nil {
		return Rekeyed{}, ErrUpstreamRekey
	}
	if err := ca.reload(ctx); err != nil {
		return Rekeyed{}, err
	}
	var next *signingCert
	for i := range ca.roots {
		if ca.roots[i].id == root {
			next = &ca.roots[i]
		}
	}
	if next == nil {
		return Rekeyed{}, fmt.Errorf("identity: root %s is not in the bundle (dropped or expired?); prepare a new one", root)
	}
	if next.state != store.StatePrepared && next.state != store.StateActive {
		return Rekeyed{}, fmt.Errorf("identity: root %s is %s, not prepared", root, next.state)
	}
	out := Rekeyed{NewRoot: root}
	if ca.inter != nil {
		out.OldIntermediate = ca.inter.id
	}
	if next.state != store.StateActive {
		if err := ca.cfg.Store.SetCAKeyState(ctx, root, store.StateActive); err != nil {
			return Rekeyed{}, err
		}
	}
	for _, r := range ca.roots {
		if r.id != root && r.state != store.StateRetired {
			if err := ca.cfg.Store.SetCAKeyState(ctx, r.id, store.StateRetired); err != nil {
				return Rekeyed{}, err
			}
		}
		if r.id != root {
			out.RetiredRoots = append(out.RetiredRoots, r.id)
		}
	}
	if err := ca.reload(ctx); err != nil {
		return Rekeyed{}, err
	}
	if ca.inter == nil || ca.inter.cert.CheckSignatureFrom(next.cert) != nil {
		if err := ca.rotateIntermediate(ctx, ca.cfg.Now()); err != nil {
			return Rekeyed{}, err
		}
	}
	// The JWT-SVID key: a new active one at once; every other one retired
	// (published, not signing) until DropKeys.
	for _, k := range ca.jwt {
		out.OldJWTKeys = append(out.OldJWTKeys, k.kid)
		if k.state != store.StateRetired {
			if err := ca.cfg.Store.SetCAKeyState(ctx, k.kid, store.StateRetired); err != nil {
				return Rekeyed{}, err
			}
		}
	}
	if err := ca.newJWTKey(ctx, ca.cfg.Now(), store.StateActive); err != nil {
		return Rekeyed{}, err
	}
	if err := ca.reload(ctx); err != nil {
		return Rekeyed{}, err
	}
	if ca.inter == nil {
		return Rekeyed{}, ErrNoSigner
	}
	out.NewIntermediate, out.NewJWTKey = ca.inter.id, ca.jwtKID
	return out, nil
}

// DropKeys takes the named roots, intermediates and JWT-SVID keys out of
// every bundle now (StateDropped): what they signed no longer verifies.
// The active root, intermediate and JWT key cannot be dropped; unknown and
// already dropped IDs are skipped (so that a resumed burn-down can repeat
// it). It returns the IDs it dropped.
func (ca *CA) DropKeys(ctx context.Context, ids []string) ([]string, error) {
	ca.maintMu.Lock()
	defer ca.maintMu.Unlock()
	keys, err := ca.cfg.Store.ListCAKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := ca.reload(ctx); err != nil {
		return nil, err
	}
	active, _ := ca.rootsByState()
	var dropped []string
	for _, k := range keys {
		if !slices.Contains(ids, k.ID) || k.State == store.StateDropped {
			continue
		}
		switch k.Kind {
		case store.KindRoot, store.KindIntermediate, store.KindJWT:
		default:
			return dropped, fmt.Errorf("identity: key %s is a %s key, not the CA's", k.ID, k.Kind)
		}
		if (active != nil && k.ID == active.id) || (ca.inter != nil && k.ID == ca.inter.id) || k.ID == ca.jwtKID {
			return dropped, fmt.Errorf("identity: %s %s is the one signing now; it cannot be dropped", k.Kind, k.ID)
		}
		if err := ca.cfg.Store.SetCAKeyState(ctx, k.ID, store.StateDropped); err != nil {
			return dropped, fmt.Errorf("identity: drop %s %s: %w", k.Kind, k.ID, err)
		}
		dropped = append(dropped, k.ID)
	}
	return dropped, ca.reload(ctx)
}

// ActiveRootID is the ID of the root that signs intermediates now (empty
// with none). An SVID whose intermediate another root signed is due for
// re-issue during a burn-down (see IssuedUnder).
func (ca *CA) ActiveRootID() string {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	for _, r := range ca.roots {
		if r.state == store.StateActive && r.key != nil {
			return r.id
		}
	}
	return ""
}

// signingIntermediate is the intermediate that signs now (nil if none).
func (ca *CA) signingIntermediate() *x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	if ca.inter == nil {
		return nil
	}
	return ca.inter.cert
}

// IssuedUnder says whether chain (leaf first, with its intermediate, as
// SVIDs are served) descends from the root with ID root: the
// intermediate's authority key ID names it. Agents use the same test.
func IssuedUnder(chain []*x509.Certificate, root string) bool {
	if len(chain) < 2 || len(chain[1].AuthorityKeyId) == 0 {
		return false
	}
	return hex.EncodeToString(chain[1].AuthorityKeyId) == root
}
