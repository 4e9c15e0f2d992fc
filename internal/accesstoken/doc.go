// Package accesstoken defines Rampart's OAuth access token (a JWT profiled
// by RFC 9068) and verifies one: the issuer that signs tokens (package
// oauth) and every service that receives them (proxy, SDK) use the same
// claims type and the same checks.
//
// Verification is strict by construction: the algorithm must be one the
// key set publishes (never "none", never an HMAC keyed with a public key),
// the key is found by kid in the issuer's own key set and nowhere else
// (headers naming other keys, jku, x5u, x5c or an embedded jwk, are refused),
// the type must be at+jwt (so an ID token is not an access token), and iss,
// aud, exp, nbf and revocation are checked.
package accesstoken
