// Package dpop creates and checks DPoP proofs (RFC 9449): a client proves
// with each request that it holds the private key an access token is
// bound to (cnf.jkt), so a stolen token is useless without that key.
//
// A proof is a JWT signed with the client's key, the public half in its
// "jwk" header, typ "dpop+jwt", naming the request's method (htm) and URL
// (htu), when it was made (iat), a unique ID (jti) and, sent with an access
// token, the token's SHA-256 (ath). Checker verifies all of it and refuses
// a jti it has seen within its window, so a captured proof cannot be
// replayed. Both the authorization server (token endpoint) and the
// resource side (proxy and SDK) use it.
package dpop
