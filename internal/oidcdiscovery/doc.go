// Package oidcdiscovery publishes the JWT-SVID signing keys the way OpenID
// Connect relying parties look for them: a discovery document (OpenID
// Connect Discovery 1.0, section 4) and a JWK set (RFC 7517). Cloud
// providers' workload identity federation (AWS IAM OIDC providers, GCP
// workload identity pools, Azure federated credentials), Vault's JWT auth
// method and libraries such as go-oidc then verify JWT-SVIDs with nothing
// SPIFFE-specific, as they do with SPIRE's OIDC discovery provider.
//
// # The issuer
//
// The server is configured with an issuer URL (rampart server
// --jwt-issuer): HTTPS, with a path, since the root's
// /.well-known/openid-configuration belongs to the OAuth server, whose
// tokens are another matter. Every JWT-SVID then carries that iss, the
// document is served at ISSUER/.well-known/openid-configuration (where
// OIDC Discovery says a client finds it) and the keys at ISSUER/keys.
// Keeping the two issuers apart means a relying party that trusts one
// never accepts the other's tokens: different iss, different keys.
//
// # What is published
//
// Only public keys and metadata, to anyone (no authentication): the same
// keys as GET /v1/jwt-bundle, re-labelled "use": "sig" as relying parties
// expect (a SPIFFE JWT bundle says "jwt-svid"). Every published key is in
// the set, including one prepared for the next rotation, so a relying party
// that caches the set for its max-age still knows the key of a JWT-SVID
// signed right after a rotation.
package oidcdiscovery
