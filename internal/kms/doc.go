// Package kms is the key store: named keys with versions, used for
// encryption (AES-256-GCM, with associated data), data keys for envelope
// encryption, signatures (ECDSA P-256, Ed25519) and MACs (HMAC-SHA256).
//
// Key material never leaves the server except as a data key the caller
// asked for. It is stored sealed by the server's key-encryption key
// (internal/keywrap, whose KEK comes from a file, a passphrase or a PKCS#11
// token), bound to "kms/NAME/VERSION", and held unwrapped in memory only.
//
// # Versions
//
// Rotation adds a version; new ciphertexts, signatures and MACs use the
// latest, old ones stay readable because every output names its key and
// version. A version is enabled, disabled (refused until enabled again),
// destroy-scheduled (refused; destroyed at a set time unless restored) or
// destroyed (its material erased from the store: what it protected is
// gone). The latest version cannot be scheduled for destruction: rotate
// first. Keys with a rotation period rotate on schedule (Maintain).
//
// # Output format
//
// Every ciphertext, wrapped data key, signature and MAC starts with a
// header naming what it is:
//
//	"rk" | kind (1 byte) | format 0x01 | len(name) (1 byte) | name | version (uint32, big endian) | body
//
// kind is 'c' (ciphertext), 'd' (wrapped data key), 's' (signature) or 'm'
// (MAC). An AEAD body is nonce (12 bytes) | AES-256-GCM ciphertext and
// tag, sealed with the whole header followed by the caller's associated
// data as GCM's associated data: changing the key name, the version or the
// kind, or presenting other associated data, fails to decrypt. A wrapped
// data key is a ciphertext of kind 'd', so it cannot be passed off as an
// ordinary ciphertext (or the reverse).
//
// Who may use which key is the key-use policy's (Access): a policy
// (package policy) for the service spiffe://TD/rampart/kms (ServiceID),
// paths /keys/NAME/OPERATION; without one every use is denied. The server
// asks it before calling in, and records every use in the audit log.
// Maintainer applies the schedules and records what they did.
package kms
