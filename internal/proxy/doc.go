// Package proxy is rampart proxy: a sidecar that puts mTLS and authorisation
// in front of a service and behind its outgoing calls, without changing the
// service.
//
//		app ──plain HTTP──► outbound listener ══mTLS══► peer's inbound listener ──► peer app
//
//	  - Identity comes from the agent's Workload API (go-spiffe X509Source):
//	    rotations apply to the next handshake; open connections are not dropped.
//	  - Inbound: TLS 1.3 with a required client SVID of the trust domain, not
//	    revoked; then the shared guard (package authz: header hygiene, path
//	    normalisation, policy decision, decision event); allowed requests go to
//	    the app on loopback (HTTP/1.1, or h2c for gRPC), streaming unbuffered.
//	  - Outbound: the app talks plain HTTP (or h2c) to a loopback listener per
//	    upstream; the proxy opens mTLS to the upstream and refuses it unless it
//	    presents the SPIFFE ID expected for that upstream.
//	  - Raw TCP mode for other protocols: identity-only policy per connection.
//
// Policies and the revocation list come from the server (package authz's
// Syncer), authenticated with the proxy's own SVID. Every stage has a
// timeout; SIGTERM drains open requests before exiting.
package proxy
