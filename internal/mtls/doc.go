// Package mtls builds the TLS configurations of Rampart's data plane: TLS 1.3
// only, the local SVID presented from a rotating source (go-spiffe's
// x509svid.Source, so a rotation applies to the next handshake without
// dropping open connections), the peer's SVID verified against the trust
// bundle, checked against the revocation list, and authorised by SPIFFE ID.
//
// The proxy and the Go SDK both use it, so a sidecar and an in-process
// service refuse exactly the same peers. Every refusal is reported to an
// OnFail callback with a short reason (untrusted, revoked, unauthorized) for
// metrics; the TLS peer only learns that its certificate was bad.
//
// Connections between the proxies of a pair (and SDK clients and servers)
// resume TLS 1.3 sessions: ServerConfig issues tickets, ClientConfig caches
// them, and Dialer retries a refused resumption in full. A resumed session
// carries the peer certificate of its first handshake and is verified
// again like a new one (bundle, expiry, revocation, authorizer); the server
// declines a ticket whose client certificate is past RecycleAt or revoked,
// so a rotated SVID is presented in a full handshake before the old one
// expires, and no session outlives its certificate.
package mtls
