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
// # Where the KEK comes from
//
// Load takes the KEK from one of three sources (rampart server
// --master-key): a file holding it (the default); a passphrase, from which
// argon2id derives the key that seals a random KEK (the passphrase is asked
// at every start, the unseal step, and never stored); or a PKCS#11 token
// whose non-extractable AES key seals the KEK with AES-GCM inside the token.
// Sealed KEKs live in DATA/keys/kek.sealed (JSON, 0600). A data dir set up
// with one source refuses to start with another and names the one it needs.
package keywrap
