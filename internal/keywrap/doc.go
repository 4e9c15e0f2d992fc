// Package keywrap seals private keys before they are written to the store.
//
// A Wrapper holds one 256-bit key-encryption key (KEK) that lives outside the
// database (by default DATA/keys/kek, mode 0600; or a file the operator keeps
// elsewhere). Keys are sealed with AES-256-GCM; the key's ID is bound as
// associated data, so a wrapped key copied onto another row does not unwrap.
//
// Wire format of a wrapped key (version 1):
//
//	"rwk1" | nonce (12 bytes) | AES-256-GCM(KEK, nonce, PKCS#8 DER, aad = id)
//
// The key store issue (kms) will add passphrase and PKCS#11 sources for the
// KEK; the wrapped format stays the same.
package keywrap
