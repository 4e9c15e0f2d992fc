// Package federation lets workloads of this trust domain and of others
// authenticate each other (SPIFFE Federation; SPIFFE Trust Domain and
// Bundle §4).
//
// Three parts:
//
//   - The bundle endpoint (endpoint.go) serves this trust domain's
//     bundle, as a SPIFFE bundle document (a JWK set with x509-svid and
//     jwt-svid keys, spiffe_sequence and spiffe_refresh_hint), to the
//     trust domains that federate with this one. Its listener speaks one
//     of the two profiles of the spec: https_spiffe (the server presents
//     its own SVID, spiffe://TD/rampart/server, which the other side
//     checks against the bundle it already holds) or https_web (a
//     certificate from the Web PKI, given as files).
//
//   - Relationships (in the store, managed by operators) name each
//     federated trust domain, its bundle endpoint's URL and profile, and
//     for https_spiffe the SPIFFE ID the endpoint must present and the
//     first bundle, obtained out of band, that authenticates it.
//
//   - The Refresher fetches each relationship's bundle when it is due:
//     at the endpoint's spiffe_refresh_hint, bounded by MinRefresh and
//     MaxRefresh. An https_spiffe endpoint must present an X.509-SVID
//     that chains to the last bundle accepted for the endpoint's trust
//     domain and carries exactly the configured SPIFFE ID; an https_web
//     endpoint a certificate the system roots (or WebRoots) trust for the
//     URL's host. The document must parse, hold at least one X.509
//     authority, and every authority must be a CA certificate that names
//     no other trust domain. Any failure keeps the bundle held and is
//     reported (OnRefresh: an audit entry and a metric in the server);
//     a new bundle replaces the old one in the store, which moves the
//     revision so agents and proxies learn it.
//
// What it guarantees: a bundle of trust domain B is only ever replaced by
// one that an endpoint authenticated as configured for B served. What it
// does not: an https_web endpoint is as trustworthy as the Web PKI and the
// endpoint's operator; whoever holds B's endpoint key (or, for https_web,
// a certificate for its host) decides B's bundle here.
package federation
