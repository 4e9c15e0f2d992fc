// Package nodeattest proves to the server which host an agent runs on,
// other than by a join token: by X.509 proof of possession (x509pop: a
// certificate from a CA the server trusts, and a signature by its key
// over a nonce the server issued).
//
// The protocol is a challenge and a response, over server-authenticated
// TLS:
//
//  1. the agent sends its certificate chain; the server verifies it
//     (chains to a configured CA, valid now, client-auth usage, a
//     digital-signature key) and issues a 32-byte nonce, stored as its
//     SHA-256 for 60 seconds with the agent ID it would attest, in the
//     store every replica shares;
//  2. the agent signs Message(nonce, leaf) with the certificate's key and
//     sends chain, nonce and signature with the CSR for its SVID; the
//     server consumes the nonce (once, whichever replica: a second answer
//     finds nothing), checks the chain again, that the nonce was issued
//     to this very certificate, and the signature.
//
// The signed message is domain-separated ("rampart x509pop v1") and binds
// the leaf's hash, so a signature made for anything else (a TLS handshake,
// another protocol that signs nonces) is no answer here, and an answer
// for one certificate is none for another.
//
// The agent's SPIFFE ID is spiffe://TD/rampart/agent/x509pop-<first 40 hex
// digits of the leaf's SHA-256>: stable for one certificate, new when the
// certificate is renewed (as SPIRE's /spire/agent/x509pop/<sha1>).
package nodeattest
