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
package mtls
