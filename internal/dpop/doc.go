// Package dpop creates and checks DPoP proofs (RFC 9449): a client proves
// with each request that it holds the private key an access token is
// bound to (cnf.jkt), so a stolen token is useless without that key.
//
// A proof is a JWT signed with the client's key, the public half in its
// "jwk" header, typ "dpop+jwt", naming the request's method (htm) and URL
// (htu), when it was made (iat), a unique ID (jti) and, sent with an access
// token, the token's SHA-256 (ath); where the server asks for one, its
// latest nonce (RFC 9449 §8: a use_dpop_nonce answer carries it in the
// DPoP-Nonce header, and the client makes the proof again with it).
//
// Checker.Verify checks all of that without remembering anything;
// Checker.Use then records the proof's (key thumbprint, jti) in a
// ReplayCache, so a captured proof is accepted once. The cache is keyed by
// key as well as jti and holds at most a quota of live proofs per key, so
// one key cannot crowd out the others; a resource server calls Use only
// after the token the proof comes with verified and is bound to that key,
// so that nobody without such a token adds anything. MemoryReplay is the
// in-process cache of proxies and the SDK; the authorization server keeps
// its proofs in the store, shared by its replicas.
package dpop
