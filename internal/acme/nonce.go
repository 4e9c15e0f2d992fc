package acme

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/store"
)

// Nonces (RFC 8555 §6.5) and decision 0038: a nonce is
//
//	expiry (8 bytes, Unix seconds) | id (16 random bytes) | HMAC-SHA256(key, expiry|id)[:16]
//
// in base64url. Any replica holding the key checks one without state; a
// nonce is spent when a request carrying it is accepted, by recording its
// id until its expiry: in the store when replicas share one (PostgreSQL),
// so a nonce spent at one replica is refused at every other; in memory
// when the server is alone (SQLite), where the key is made at start so
// nonces from before a restart are refused too. Clients retry a badNonce
// with the fresh nonce every response carries.

// NonceTTL is how long a nonce may wait to be used.
const NonceTTL = 10 * time.Minute

// maxMemoryNonces bounds the spent nonces a lone server remembers; past
// it the key is replaced, which refuses every nonce handed out before
// (clients retry), and the memory is cleared.
const maxMemoryNonces = 1 << 20

const nonceLen = 8 + 16 + 16

var errNonceSpent = errors.New("acme: nonce already used")

// nonceBook records spent nonces.
type nonceBook interface {
	spend(ctx context.Context, id []byte, expires time.Time) error
}

type nonces struct {
	now  func() time.Time
	book nonceBook
	// rotate, when set, is asked after each spend whether the key must
	// be replaced (the memory book is full).
	rotate func() bool

	mu  sync.RWMutex
	key []byte
}

func (n *nonces) macOf(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)[:16]
}

// issue returns a fresh nonce.
func (n *nonces) issue() string {
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n.now().Add(NonceTTL).Unix()))
	rand.Read(b[8:24])
	n.mu.RLock()
	copy(b[24:], n.macOf(n.key, b[:24]))
	n.mu.RUnlock()
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check verifies a nonce's MAC and expiry and returns its id and expiry.
// It does not spend it.
func (n *nonces) check(nonce string) ([]byte, time.Time, *Problem) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(nonce)
	if err != nil || len(b) != nonceLen {
		return nil, time.Time{}, badNonce("the nonce is not one this server issued")
	}
	n.mu.RLock()
	ok := hmac.Equal(b[24:], n.macOf(n.key, b[:24]))
	n.mu.RUnlock()
	if !ok {
		return nil, time.Time{}, badNonce("the nonce is not one this server issued (or it was issued before the server restarted)")
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	if !n.now().Before(exp) {
		return nil, time.Time{}, badNonce("the nonce expired")
	}
	return b[8:24], exp, nil
}

// spend records a checked nonce as used; a second use is badNonce.
func (n *nonces) spend(ctx context.Context, id []byte, exp time.Time) *Problem {
	err := n.book.spend(ctx, id, exp)
	if n.rotate != nil && n.rotate() {
		k := make([]byte, 32)
		rand.Read(k)
		n.mu.Lock()
		n.key = k
		n.mu.Unlock()
	}
	switch {
	case errors.Is(err, errNonceSpent):
		return badNonce("the nonce was already used (a replayed request)")
	case err != nil:
		return internal("cannot record the nonce")
	}
	return nil
}

func badNonce(detail string) *Problem {
	return problem(400, errBadNonce, "%s; retry with the nonce in this response's Replay-Nonce header", detail)
}

// memoryBook remembers spent nonces in this process.
type memoryBook struct {
	now func() time.Time
	mu  sync.Mutex
	// used maps a spent nonce's id to its expiry.
	used   map[[16]byte]time.Time
	sweeps int // spends until the next sweep of expired ids
	full   bool
}

func newMemoryBook(now func() time.Time) *memoryBook {
	return &memoryBook{now: now, used: map[[16]byte]time.Time{}, sweeps: 4096}
}

func (m *memoryBook) spend(_ context.Context, id []byte, exp time.Time) error {
	var k [16]byte
	copy(k[:], id)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.used[k]; ok {
		return errNonceSpent
	}
	m.used[k] = exp
	if m.sweeps--; m.sweeps <= 0 {
		now := m.now()
		for id, e := range m.used {
			if !now.Before(e) {
				delete(m.used, id)
			}
		}
		m.sweeps = max(4096, len(m.used)/2)
	}
	if len(m.used) >= maxMemoryNonces {
		m.full = true
	}
	return nil
}

// rotateIfFull reports (once) that the book filled up, and empties it: the
// caller replaces the key, so none of the forgotten nonces verifies again.
func (m *memoryBook) rotateIfFull() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.full {
		return false
	}
	m.full = false
	m.used = map[[16]byte]time.Time{}
	return true
}

// storeBook records spent nonces in the store every replica shares.
type storeBook struct{ st store.ACMEStore }

func (s storeBook) spend(ctx context.Context, id []byte, exp time.Time) error {
	err := s.st.UseACMENonce(ctx, id, exp)
	if errors.Is(err, store.ErrConflict) {
		return errNonceSpent
	}
	return err
}

// keyStore holds the shared nonce key (as CA keys are held).
type keyStore interface {
	ListCAKeys(ctx context.Context) ([]store.CAKey, error)
	PutCAKey(ctx context.Context, k store.CAKey) error
}

// loadNonceKey reads the nonce MAC key replicas share, creating it on
// first start.
func loadNonceKey(ctx context.Context, ks keyStore, s Sealer, now time.Time) ([]byte, error) {
	const id = "acme-nonce"
	for range 2 {
		keys, err := ks.ListCAKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("acme: nonce key: %w", err)
		}
		for _, k := range keys {
			if k.Kind == store.KindACMENonce {
				key, err := s.Open(id, k.WrappedKey)
				if err != nil {
					return nil, fmt.Errorf("acme: nonce key: %w", err)
				}
				return key, nil
			}
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		sealed, err := s.Seal(id, key)
		if err != nil {
			return nil, fmt.Errorf("acme: nonce key: %w", err)
		}
		err = ks.PutCAKey(ctx, store.CAKey{ID: id, Kind: store.KindACMENonce, State: store.StateActive, CertDER: []byte{},
			WrappedKey: sealed, NotBefore: now, NotAfter: now.AddDate(100, 0, 0), CreatedAt: now})
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("acme: nonce key: %w", err)
		}
		// Another replica created it first: read theirs.
	}
	return nil, errors.New("acme: nonce key: could not create or read")
}
