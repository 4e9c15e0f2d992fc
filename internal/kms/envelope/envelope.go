package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
)

// Kinds of output.
const (
	KindCiphertext = 'c'
	KindDataKey    = 'd'
	KindSignature  = 's'
	KindMAC        = 'm'
)

// Version is the format version byte this package writes and accepts.
const Version = 0x01

// MaxNameLen bounds a key name.
const MaxNameLen = 64

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// CheckName reports whether name is a valid key name: 1-64 characters of
// a-z, 0-9, '.', '_' and '-', starting with a letter or digit.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("key name %q: want 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
	}
	return nil
}

// Header is the start of every output.
type Header struct {
	Kind    byte
	Name    string
	Version int
}

// ErrMalformed is returned for input that is not a well-formed output of
// the key store.
var ErrMalformed = errors.New("kms: not a Rampart ciphertext, data key, signature or MAC (malformed header)")

// Size is the length of h's encoding.
func (h Header) Size() int { return 5 + len(h.Name) + 4 }

// Append appends h's encoding to b.
func (h Header) Append(b []byte) []byte {
	b = append(b, 'r', 'k', h.Kind, Version, byte(len(h.Name)))
	b = append(b, h.Name...)
	return binary.BigEndian.AppendUint32(b, uint32(h.Version))
}

// Parse splits an output into its header, the header's bytes and the body.
// It checks the form only; nothing is verified.
func Parse(b []byte) (h Header, raw, body []byte, err error) {
	if len(b) < 5 || b[0] != 'r' || b[1] != 'k' || b[3] != Version {
		return Header{}, nil, nil, ErrMalformed
	}
	switch b[2] {
	case KindCiphertext, KindDataKey, KindSignature, KindMAC:
	default:
		return Header{}, nil, nil, ErrMalformed
	}
	n := int(b[4])
	if n == 0 || n > MaxNameLen || len(b) < 5+n+4 {
		return Header{}, nil, nil, ErrMalformed
	}
	h = Header{Kind: b[2], Name: string(b[5 : 5+n])}
	if CheckName(h.Name) != nil {
		return Header{}, nil, nil, ErrMalformed
	}
	v := binary.BigEndian.Uint32(b[5+n:])
	if v == 0 || v > 1<<31-1 {
		return Header{}, nil, nil, ErrMalformed
	}
	h.Version = int(v)
	return h, b[:5+n+4], b[5+n+4:], nil
}
