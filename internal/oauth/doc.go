// Package oauth is the system's OAuth 2.0 authorization server and OpenID
// Connect provider, served by "rampart server".
//
// Grants: authorization code with PKCE (S256 only; required of every
// client), client credentials, refresh tokens with rotation and reuse
// detection (a reused refresh token or code revokes every token of its
// family), and token exchange (RFC 8693) so a service can trade a user's
// token for one addressed to the next service, with an act claim naming
// itself (at most MaxActDepth hops, no service twice).
//
// Every access token's sid names a grant family recorded in the store: a
// login, a client-credentials token, or an exchange (a child of the
// exchanged token's family). Revoking a family revokes its descendants;
// disabling a user or a client (RevokeUser, RevokeClient) revokes all of
// theirs, and proxies learn of it with the revocation list. Clients authenticate with a secret (basic or post), a signed
// assertion (private_key_jwt, RFC 7523) or their SVID (tls_client_auth, RFC
// 8705); tokens issued to an SVID-authenticated client are bound to that
// certificate (cnf.x5t#S256).
//
// Access tokens are JWTs (RFC 9068, typ at+jwt) signed ES256 (EdDSA
// optional) with a key from a keyring that publishes each successor in the
// JWKS long before it signs (package keysched). Revocation (RFC 7009) puts a
// token's jti, or a whole grant family (the sid claim), on a list that the
// server hands to proxies. Introspection (RFC 7662), discovery (RFC 8414 and
// OIDC Discovery), ID tokens and userinfo complete the set.
//
// Users live in the built-in store: argon2id password hashes (bounded in
// number at once), progressive back-off after repeated failures, optional
// TOTP (RFC 6238). Every failed login costs the same and reads the same.
// The login page is plain HTML with labels, no script.
//
// The issuer allows no clock skew on the tokens it verifies. DPoP proofs
// at the token and userinfo endpoints carry a server nonce and are kept
// against replay in the store, shared by replicas. Every endpoint that
// hashes, signs or writes is rate limited per source address and in all
// (package ratelimit).
//
// Accounts registers, changes and deletes clients and users (validation,
// secrets generated and hashed, TOTP sealed, and what a disabled or
// deleted client or user was issued revoked after the change), and serves
// them to operators through the admin API; Routes gives the server the
// provider's own endpoints, and Run its maintenance loop.
//
// Everything a security engineer would want to see later is an audit entry:
// logins and their failures, every token issued, refreshed, exchanged or
// revoked, and every reuse detected. Refusals are counted with their
// repeats (Config.Refusals), and what an unauthenticated caller claims is
// recorded as a claim (claimed_client_id), never as the actor.
package oauth
