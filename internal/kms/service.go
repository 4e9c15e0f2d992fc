package kms

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/store"
)

// Key types.
const (
	TypeAES        = "aes256-gcm"
	TypeECDSA      = "ecdsa-p256"
	TypeEd25519    = "ed25519"
	TypeHMAC       = "hmac-sha256"
	DefaultType    = TypeAES
	DefaultGrace   = 7 * 24 * time.Hour // between scheduling a destruction and doing it
	MinGrace       = time.Hour
	MinRotateEvery = time.Hour
)

// Types lists the key types.
var Types = []string{TypeAES, TypeECDSA, TypeEd25519, TypeHMAC}

// Errors, for callers to map onto responses; returned wrapped with detail.
var (
	ErrNotFound  = errors.New("kms: no such key or version")
	ErrExists    = errors.New("kms: a key with this name exists")
	ErrWrongType = errors.New("kms: the key's type does not do this operation")
	ErrDisabled  = errors.New("kms: key version not usable")
	ErrInvalid   = errors.New("kms: invalid request")
	// ErrDecrypt covers every ciphertext that does not open: damaged,
	// truncated, for another version, or with other associated data.
	// One error, so nothing is learned from which check failed.
	ErrDecrypt = errors.New("kms: ciphertext does not decrypt (damaged, truncated, or other associated data)")
	// ErrOtherKey: the input names a key other than the one asked for.
	ErrOtherKey = errors.New("kms: input belongs to another key")
)

// Store is what the key store keeps in the server's store.
type Store interface {
	CreateKMSKey(ctx context.Context, k store.KMSKey, v store.KMSKeyVersion) error
	GetKMSKey(ctx context.Context, name string) (store.KMSKey, []store.KMSKeyVersion, error)
	ListKMSKeys(ctx context.Context) ([]store.KMSKey, error)
	RotateKMSKey(ctx context.Context, v store.KMSKeyVersion) error
	SetKMSVersionState(ctx context.Context, name string, version int, from []string, state string, destroyAt time.Time) error
	DestroyDueKMSVersions(ctx context.Context, now time.Time) ([]store.KMSKeyVersion, error)
}

// Config configures a Service.
type Config struct {
	Store   Store
	Wrapper *keywrap.Wrapper
	Now     func() time.Time
}

// Service holds the keys, unwrapped, and does the operations. It is safe
// for concurrent use; reads take no lock beyond a map lookup.
type Service struct {
	st   Store
	wrap *keywrap.Wrapper
	now  func() time.Time

	mu   sync.RWMutex
	keys map[string]*key // immutable snapshots, replaced on change
}

// key is an immutable snapshot of a key and its versions.
type key struct {
	meta     store.KMSKey
	versions map[int]*version
}

type version struct {
	n         int
	state     string
	createdAt time.Time
	destroyAt time.Time
	aead      cipher.AEAD // aes256-gcm
	signer    crypto.Signer
	public    crypto.PublicKey
	macKey    []byte // hmac-sha256
}

// New returns a Service with every key loaded.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Wrapper == nil {
		return nil, errors.New("kms: a store and a key wrapper are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{st: cfg.Store, wrap: cfg.Wrapper, now: cfg.Now, keys: map[string]*key{}}
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func sealID(name string, v int) string { return "kms/" + name + "/" + strconv.Itoa(v) }

// Reload reads keys whose generation changed (another replica rotated or
// disabled one, say) and drops keys that are gone.
func (s *Service) Reload(ctx context.Context) error {
	metas, err := s.st.ListKMSKeys(ctx)
	if err != nil {
		return fmt.Errorf("kms: %w", err)
	}
	seen := make(map[string]bool, len(metas))
	for _, m := range metas {
		seen[m.Name] = true
		if cur := s.lookup(m.Name); cur != nil && cur.meta.Generation == m.Generation {
			continue
		}
		if _, err := s.load(ctx, m.Name); err != nil {
			return err
		}
	}
	s.mu.Lock()
	for name := range s.keys {
		if !seen[name] {
			delete(s.keys, name)
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *Service) lookup(name string) *key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[name]
}

// load reads one key from the store and unwraps its usable versions.
func (s *Service) load(ctx context.Context, name string) (*key, error) {
	meta, vs, err := s.st.GetKMSKey(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	k := &key{meta: meta, versions: make(map[int]*version, len(vs))}
	for _, sv := range vs {
		v := &version{n: sv.Version, state: sv.State, createdAt: sv.CreatedAt, destroyAt: sv.DestroyAt}
		if sv.Material != nil {
			if err := v.unseal(s.wrap, meta.Type, sealID(name, sv.Version), sv.Material); err != nil {
				return nil, fmt.Errorf("kms: key %q version %d: %w", name, sv.Version, err)
			}
		}
		k.versions[sv.Version] = v
	}
	s.mu.Lock()
	if cur := s.keys[name]; cur == nil || cur.meta.Generation <= meta.Generation {
		s.keys[name] = k
	} else {
		k = cur
	}
	s.mu.Unlock()
	return k, nil
}

func (v *version) unseal(w *keywrap.Wrapper, typ, id string, material []byte) error {
	switch typ {
	case TypeAES, TypeHMAC:
		raw, err := w.Open(id, material)
		if err != nil {
			return err
		}
		if typ == TypeHMAC {
			v.macKey = raw
			return nil
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return err
		}
		v.aead, err = cipher.NewGCM(block)
		return err
	case TypeECDSA, TypeEd25519:
		signer, err := w.Unwrap(id, material)
		if err != nil {
			return err
		}
		v.signer, v.public = signer, signer.Public()
		return nil
	}
	return fmt.Errorf("unknown key type %q", typ)
}

// newMaterial generates a version's key and returns it sealed, with its
// public key for signing types.
func (s *Service) newMaterial(typ, name string, n int) (sealed, public []byte, err error) {
	id := sealID(name, n)
	switch typ {
	case TypeAES, TypeHMAC:
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, nil, err
		}
		sealed, err = s.wrap.Seal(id, raw)
		return sealed, nil, err
	case TypeECDSA, TypeEd25519:
		var signer crypto.Signer
		if typ == TypeECDSA {
			signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		} else {
			_, signer, err = ed25519.GenerateKey(rand.Reader)
		}
		if err != nil {
			return nil, nil, err
		}
		if public, err = x509.MarshalPKIXPublicKey(signer.Public()); err != nil {
			return nil, nil, err
		}
		sealed, err = s.wrap.Wrap(id, signer)
		return sealed, public, err
	}
	return nil, nil, fmt.Errorf("%w: key type %q: want one of %v", ErrInvalid, typ, Types)
}

// Create makes a key with its first version. rotateEvery 0 means manual
// rotation only.
func (s *Service) Create(ctx context.Context, name, typ string, rotateEvery time.Duration) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if typ == "" {
		typ = DefaultType
	}
	if !slices.Contains(Types, typ) {
		return Info{}, fmt.Errorf("%w: key type %q: want one of %v", ErrInvalid, typ, Types)
	}
	if rotateEvery != 0 && rotateEvery < MinRotateEvery {
		return Info{}, fmt.Errorf("%w: rotation period %v is shorter than %v", ErrInvalid, rotateEvery, MinRotateEvery)
	}
	sealed, public, err := s.newMaterial(typ, name, 1)
	if err != nil {
		return Info{}, fmt.Errorf("kms: %w", err)
	}
	now := s.now()
	err = s.st.CreateKMSKey(ctx, store.KMSKey{Name: name, Type: typ, RotateEvery: rotateEvery, CreatedAt: now, RotatedAt: now},
		store.KMSKeyVersion{Name: name, Version: 1, State: store.KMSEnabled, Material: sealed, Public: public, CreatedAt: now})
	if errors.Is(err, store.ErrConflict) {
		return Info{}, fmt.Errorf("%w: %q", ErrExists, name)
	}
	if err != nil {
		return Info{}, fmt.Errorf("kms: %w", err)
	}
	return s.Get(ctx, name)
}

// Rotate adds a version and makes it the latest.
func (s *Service) Rotate(ctx context.Context, name string) (Info, error) {
	k, err := s.load(ctx, name)
	if err != nil {
		return Info{}, err
	}
	n := k.meta.Latest + 1
	sealed, public, err := s.newMaterial(k.meta.Type, name, n)
	if err != nil {
		return Info{}, fmt.Errorf("kms: %w", err)
	}
	err = s.st.RotateKMSKey(ctx, store.KMSKeyVersion{Name: name, Version: n, State: store.KMSEnabled, Material: sealed, Public: public, CreatedAt: s.now()})
	if err != nil {
		return Info{}, fmt.Errorf("kms: rotate %q: %w", name, err)
	}
	return s.Get(ctx, name)
}

// Version state changes.
const (
	ActionDisable = "disable"
	ActionEnable  = "enable"
	ActionDestroy = "destroy" // schedule destruction after a grace period
	ActionRestore = "restore" // cancel a scheduled destruction; the version is then disabled
)

// SetState applies a state change to a version. grace is used by
// ActionDestroy (0: DefaultGrace).
func (s *Service) SetState(ctx context.Context, name string, n int, action string, grace time.Duration) (Info, error) {
	k, err := s.load(ctx, name)
	if err != nil {
		return Info{}, err
	}
	if _, ok := k.versions[n]; !ok {
		return Info{}, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, n)
	}
	var from []string
	var to string
	var at time.Time
	switch action {
	case ActionDisable:
		from, to = []string{store.KMSEnabled}, store.KMSDisabled
	case ActionEnable:
		from, to = []string{store.KMSDisabled}, store.KMSEnabled
	case ActionRestore:
		from, to = []string{store.KMSDestroyScheduled}, store.KMSDisabled
	case ActionDestroy:
		if n == k.meta.Latest {
			return Info{}, fmt.Errorf("%w: version %d is the latest of %q; rotate before destroying it", ErrInvalid, n, name)
		}
		if grace == 0 {
			grace = DefaultGrace
		}
		if grace < MinGrace {
			return Info{}, fmt.Errorf("%w: grace period %v is shorter than %v", ErrInvalid, grace, MinGrace)
		}
		from, to, at = []string{store.KMSEnabled, store.KMSDisabled}, store.KMSDestroyScheduled, s.now().Add(grace)
	default:
		return Info{}, fmt.Errorf("%w: action %q: want disable, enable, destroy or restore", ErrInvalid, action)
	}
	if err := s.st.SetKMSVersionState(ctx, name, n, from, to, at); err != nil {
		if errors.Is(err, store.ErrStateConflict) {
			return Info{}, fmt.Errorf("%w: %s version %d of %q: %v", ErrInvalid, action, n, name, err)
		}
		return Info{}, fmt.Errorf("kms: %w", err)
	}
	return s.Get(ctx, name)
}

// Event is a change Maintain made, for the audit log.
type Event struct {
	Action  string // "kms.rotate" or "kms.destroy"
	Key     string
	Version int
}

// Maintain rotates keys whose period has passed and destroys versions
// whose grace period has ended.
func (s *Service) Maintain(ctx context.Context) ([]Event, error) {
	metas, err := s.st.ListKMSKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	var events []Event
	var errs []error
	now := s.now()
	for _, m := range metas {
		if m.RotateEvery == 0 || now.Before(m.RotatedAt.Add(m.RotateEvery)) {
			continue
		}
		info, err := s.Rotate(ctx, m.Name)
		if errors.Is(err, store.ErrConflict) {
			continue // another replica rotated it
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		events = append(events, Event{Action: "kms.rotate", Key: m.Name, Version: info.Latest})
	}
	done, err := s.st.DestroyDueKMSVersions(ctx, now)
	if err != nil {
		errs = append(errs, err)
	}
	for _, v := range done {
		events = append(events, Event{Action: "kms.destroy", Key: v.Name, Version: v.Version})
	}
	if err := s.Reload(ctx); err != nil {
		errs = append(errs, err)
	}
	return events, errors.Join(errs...)
}

// Info describes a key (never its material).
type Info struct {
	Name        string
	Type        string
	Latest      int
	RotateEvery time.Duration
	CreatedAt   time.Time
	RotatedAt   time.Time
	Versions    []VersionInfo
}

// VersionInfo describes a version.
type VersionInfo struct {
	Version   int
	State     string
	CreatedAt time.Time
	DestroyAt time.Time
	PublicKey []byte // PKIX DER, signing keys
}

// Get describes a key as stored now.
func (s *Service) Get(ctx context.Context, name string) (Info, error) {
	k, err := s.load(ctx, name)
	if err != nil {
		return Info{}, err
	}
	return k.info(), nil
}

// List describes every key.
func (s *Service) List(ctx context.Context) ([]Info, error) {
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	out := make([]Info, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k.info())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Info) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

func (k *key) info() Info {
	in := Info{Name: k.meta.Name, Type: k.meta.Type, Latest: k.meta.Latest, RotateEvery: k.meta.RotateEvery,
		CreatedAt: k.meta.CreatedAt, RotatedAt: k.meta.RotatedAt}
	for n := 1; n <= k.meta.Latest; n++ {
		v, ok := k.versions[n]
		if !ok {
			continue
		}
		vi := VersionInfo{Version: n, State: v.state, CreatedAt: v.createdAt, DestroyAt: v.destroyAt}
		if v.public != nil {
			vi.PublicKey, _ = x509.MarshalPKIXPublicKey(v.public)
		}
		in.Versions = append(in.Versions, vi)
	}
	return in
}
