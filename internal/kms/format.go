package kms

import "github.com/rampartsec/rampart/internal/kms/envelope"

// The output format lives in package envelope (shared with sdk/kms);
// these names keep the key store's code short.
type Header = envelope.Header

const (
	KindCiphertext = envelope.KindCiphertext
	KindDataKey    = envelope.KindDataKey
	KindSignature  = envelope.KindSignature
	KindMAC        = envelope.KindMAC
	MaxNameLen     = envelope.MaxNameLen
)

// ErrMalformed is returned for input that is not a well-formed output of
// this package.
var ErrMalformed = envelope.ErrMalformed

// CheckName reports whether name is a valid key name.
func CheckName(name string) error { return envelope.CheckName(name) }

// ParseHeader splits an output into its header, the header's bytes and
// the body. It checks the form only; nothing is verified.
func ParseHeader(b []byte) (Header, []byte, []byte, error) { return envelope.Parse(b) }

func appendHeader(b []byte, h Header) []byte { return h.Append(b) }
