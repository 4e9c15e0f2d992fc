// Package operator says who is calling the admin API and what they may
// do: named people and workloads holding roles (package permission),
// instead of one shared admin token.
//
// An operator is either a person, the OAuth user of the same name on our
// own authorization server (package oauth), or a pattern of workloads
// (SPIFFE IDs, exact or ending in "/*", as SPIRE's admin IDs). Each holds
// roles; policy-author may be limited to services (SPIFFE ID patterns).
// Operators are kept in the store and read on every request, so disabling
// one, or taking a role away, takes effect at the next request on every
// replica.
//
// The Authenticator turns a request into a Caller:
//
//   - a person presents an access token of the authorization server
//     addressed to the admin API (Audience), sender-constrained with DPoP
//     (RFC 9449): "Authorization: DPoP <token>" and a proof whose htm,
//     htu and ath match this request, signed by the key the token's
//     cnf.jkt names, never seen before (proofs are recorded in the store,
//     shared by replicas). The operator must exist, be enabled, hold a
//     role; the OAuth user must exist, be enabled and not backing off
//     after failed logins; and, unless the operator is exempted, the
//     token must come from a login with a second factor (amr "otp").
//     A token without cnf.jkt, presented as Bearer, or with a proof by
//     another key is refused: a copied token file alone is useless.
//   - a workload presents its X.509-SVID as the TLS client certificate;
//     every enabled workload operator whose pattern matches its SPIFFE ID
//     lends it its roles, and an unexpired registration entry of exactly
//     its SPIFFE ID marked admin (SPIRE's admin entries) the admin role
//     (Caller.Via names it "entry:ID"). Both are read at every request.
//
// The break-glass admin token is the server's business (it may be turned
// off); a Caller made for it holds every permission.
//
// Caller.Actor is what audit entries name: the operator's subject (the
// username, stable: the two-person rule of package approval compares it)
// or the workload's SPIFFE ID; Caller.Name and Caller.Session go to the
// entry's details.
//
// API serves the operator management endpoints (add, list, show, grant,
// revoke, disable, enable) and whoami.
package operator
