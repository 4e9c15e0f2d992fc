// Package envelope is the header that starts every output of the key store
// (package kms on the server, sdk/kms in services): ciphertexts, wrapped data
// keys, signatures and MACs.
//
//	"rk" | kind (1 byte) | format 0x01 | len(name) (1 byte) | name | version (uint32, big endian) | body
//
// kind is 'c' (ciphertext), 'd' (wrapped data key), 's' (signature) or 'm'
// (MAC). The header names the key and version that made the output, so old
// outputs stay readable after a rotation, and it is bound into every AEAD
// seal as associated data, so it cannot be edited.
//
// It imports only the standard library: the SDK reads headers without
// compiling the server's key store. The known-answer vectors in testdata/
// pin the format; a test fails when it changes.
package envelope
