package kms

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/rampartsec/rampart/internal/store"
)

// DataKeySize is the size of a generated data key (AES-256).
const DataKeySize = 32

const nonceSize = 12

// get returns the key, reading it from the store if this replica has not
// seen it (created on another replica a moment ago, say).
func (s *Service) get(ctx context.Context, name string) (*key, error) {
	if k := s.lookup(name); k != nil {
		return k, nil
	}
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s.load(ctx, name)
}

// versionOf returns version n of name if it is enabled.
func (s *Service) versionOf(ctx context.Context, name string, n int) (*key, *version, error) {
	k, err := s.get(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	v, ok := k.versions[n]
	if !ok && n > k.meta.Latest {
		// Rotated on another replica since we last looked.
		if k, err = s.load(ctx, name); err != nil {
			return nil, nil, err
		}
		v, ok = k.versions[n]
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, n)
	}
	if v.state != store.KMSEnabled {
		return nil, nil, fmt.Errorf("%w: version %d of key %q is %s", ErrDisabled, n, name, v.state)
	}
	return k, v, nil
}

func (s *Service) latest(ctx context.Context, name, typ string) (*version, Header, error) {
	k, err := s.get(ctx, name)
	if err != nil {
		return nil, Header{}, err
	}
	if err := wantType(k, typ); err != nil {
		return nil, Header{}, err
	}
	_, v, err := s.versionOf(ctx, name, k.meta.Latest)
	if err != nil {
		return nil, Header{}, err
	}
	return v, Header{Name: name, Version: v.n}, nil
}

func wantType(k *key, typ string) error {
	if k.meta.Type != typ {
		return fmt.Errorf("%w: key %q is %s, this operation needs %s", ErrWrongType, k.meta.Name, k.meta.Type, typ)
	}
	return nil
}

// seal encrypts under v with the header h (kind set by the caller).
func seal(v *version, h Header, plaintext, aad []byte) ([]byte, error) {
	hs := h.Size()
	out := make([]byte, hs+nonceSize, hs+nonceSize+len(plaintext)+v.aead.Overhead())
	appendHeader(out[:0], h)
	nonce := out[hs : hs+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return v.aead.Seal(out, nonce, plaintext, additional(out[:hs], aad)), nil
}

// additional is GCM's associated data: the header, then the caller's.
func additional(header, aad []byte) []byte {
	if len(aad) == 0 {
		return header
	}
	return append(header[:len(header):len(header)], aad...)
}

// Encrypt seals plaintext with the latest version of the AES key name.
func (s *Service) Encrypt(ctx context.Context, name string, plaintext, aad []byte) ([]byte, int, error) {
	v, h, err := s.latest(ctx, name, TypeAES)
	if err != nil {
		return nil, 0, err
	}
	h.Kind = KindCiphertext
	ct, err := seal(v, h, plaintext, aad)
	return ct, h.Version, err
}

// input parses an output of this package presented to key name for an
// operation that takes kinds, and returns the enabled version that made
// it, which must be of type typ ("": any).
func (s *Service) input(ctx context.Context, name string, b []byte, typ, what string, kinds ...byte) (*version, Header, []byte, []byte, error) {
	h, raw, body, err := ParseHeader(b)
	if err != nil {
		return nil, Header{}, nil, nil, err
	}
	ok := false
	for _, k := range kinds {
		ok = ok || h.Kind == k
	}
	if !ok {
		return nil, Header{}, nil, nil, fmt.Errorf("%w: not a %s", ErrMalformed, what)
	}
	if h.Name != name {
		return nil, Header{}, nil, nil, fmt.Errorf("%w: the %s is for key %q, not %q", ErrOtherKey, what, h.Name, name)
	}
	k, v, err := s.versionOf(ctx, name, h.Version)
	if err != nil {
		return nil, Header{}, nil, nil, err
	}
	if typ != "" {
		if err := wantType(k, typ); err != nil {
			return nil, Header{}, nil, nil, err
		}
	}
	return v, h, raw, body, nil
}

// Decrypt opens a ciphertext (or a wrapped data key) made with key name.
// It returns the version that sealed it.
func (s *Service) Decrypt(ctx context.Context, name string, ciphertext, aad []byte) ([]byte, int, error) {
	v, h, raw, body, err := s.input(ctx, name, ciphertext, TypeAES, "ciphertext", KindCiphertext, KindDataKey)
	if err != nil {
		return nil, 0, err
	}
	pt, err := open(v.aead, raw, body, aad)
	if err != nil {
		return nil, 0, err
	}
	return pt, h.Version, nil
}

// open is seal's inverse: body is nonce | ciphertext and tag, raw the
// header it was sealed with.
func open(aead cipher.AEAD, raw, body, aad []byte) ([]byte, error) {
	if len(body) < nonceSize+aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, body[:nonceSize], body[nonceSize:], additional(raw, aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// DataKey generates a random AES-256 data key and returns it in plaintext
// and wrapped by the latest version of name (kind 'd'), for envelope
// encryption. The caller keeps only the wrapped form next to its data.
func (s *Service) DataKey(ctx context.Context, name string, aad []byte) (plaintext, wrapped []byte, version int, err error) {
	v, h, err := s.latest(ctx, name, TypeAES)
	if err != nil {
		return nil, nil, 0, err
	}
	plaintext = make([]byte, DataKeySize)
	if _, err := rand.Read(plaintext); err != nil {
		return nil, nil, 0, fmt.Errorf("kms: %w", err)
	}
	h.Kind = KindDataKey
	wrapped, err = seal(v, h, plaintext, aad)
	return plaintext, wrapped, h.Version, err
}

// Rewrap decrypts a ciphertext (or wrapped data key) and seals it again
// under the latest version, keeping its kind; the plaintext never leaves.
func (s *Service) Rewrap(ctx context.Context, name string, ciphertext, aad []byte) ([]byte, int, error) {
	h, _, _, err := ParseHeader(ciphertext)
	if err != nil {
		return nil, 0, err
	}
	pt, _, err := s.Decrypt(ctx, name, ciphertext, aad)
	if err != nil {
		return nil, 0, err
	}
	v, nh, err := s.latest(ctx, name, TypeAES)
	if err != nil {
		return nil, 0, err
	}
	nh.Kind = h.Kind
	out, err := seal(v, nh, pt, aad)
	clear(pt)
	return out, nh.Version, err
}

// signedDigest is what a signature covers: SHA-256 of the header and the
// message, so a signature cannot be moved to another key or version.
func signedDigest(header, message []byte) []byte {
	d := sha256.New()
	d.Write(header)
	d.Write(message)
	return d.Sum(nil)
}

// Sign signs message with the latest version of the signing key name
// (ECDSA P-256 with SHA-256, ASN.1; or Ed25519).
func (s *Service) Sign(ctx context.Context, name string, message []byte) ([]byte, int, error) {
	k, err := s.get(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	if k.meta.Type != TypeECDSA && k.meta.Type != TypeEd25519 {
		return nil, 0, fmt.Errorf("%w: key %q is %s, signing needs %s or %s", ErrWrongType, name, k.meta.Type, TypeECDSA, TypeEd25519)
	}
	v, h, err := s.latest(ctx, name, k.meta.Type)
	if err != nil {
		return nil, 0, err
	}
	h.Kind = KindSignature
	hdr := appendHeader(nil, h)
	var sig []byte
	if k.meta.Type == TypeECDSA {
		sig, err = v.signer.Sign(rand.Reader, signedDigest(hdr, message), crypto.SHA256)
	} else {
		sig, err = v.signer.Sign(rand.Reader, signedDigest(hdr, message), crypto.Hash(0))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("kms: sign: %w", err)
	}
	return append(hdr, sig...), h.Version, nil
}

// Verify checks a signature made by Sign with key name.
func (s *Service) Verify(ctx context.Context, name string, message, signature []byte) (bool, int, error) {
	v, h, raw, body, err := s.input(ctx, name, signature, "", "signature", KindSignature)
	if err != nil {
		return false, 0, err
	}
	d := signedDigest(raw, message)
	switch pub := v.public.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, d, body), h.Version, nil
	case ed25519.PublicKey:
		return ed25519.Verify(pub, d, body), h.Version, nil
	}
	return false, 0, fmt.Errorf("%w: key %q does not sign", ErrWrongType, name)
}

func mac(v *version, header, message []byte) []byte {
	m := hmac.New(sha256.New, v.macKey)
	m.Write(header)
	m.Write(message)
	return m.Sum(nil)
}

// MAC computes HMAC-SHA256 over message with the latest version of name.
func (s *Service) MAC(ctx context.Context, name string, message []byte) ([]byte, int, error) {
	v, h, err := s.latest(ctx, name, TypeHMAC)
	if err != nil {
		return nil, 0, err
	}
	h.Kind = KindMAC
	hdr := appendHeader(nil, h)
	return append(hdr, mac(v, hdr, message)...), h.Version, nil
}

// VerifyMAC checks a MAC made by MAC, in constant time.
func (s *Service) VerifyMAC(ctx context.Context, name string, message, tag []byte) (bool, int, error) {
	v, h, raw, body, err := s.input(ctx, name, tag, TypeHMAC, "MAC", KindMAC)
	if err != nil {
		return false, 0, err
	}
	return hmac.Equal(mac(v, raw, message), body), h.Version, nil
}
