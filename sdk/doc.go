// Package sdk secures a Go service in-process, without a sidecar: the same
// mTLS and the same authorisation as rampart proxy, from the same code.
//
//	src, err := sdk.New(ctx)                        // SVID from the local agent
//	defer src.Close()
//	srv := &http.Server{
//		Handler:   src.Middleware(mux),              // policy, header hygiene, decisions
//		TLSConfig: src.ServerTLSConfig(),            // TLS 1.3, client SVID required
//	}
//	srv.ListenAndServeTLS("", "")
//
//	// calling another service, which must prove it is payments:
//	c := src.HTTPClient(spiffeid.RequireFromString("spiffe://example.org/payments"))
//
//	// in a handler:
//	caller, _ := sdk.CallerID(r.Context())
//
// The SVID and bundle come from the agent's SPIFFE Workload API and follow
// rotations without restarting anything. With a server configured
// (WithServer or RAMPART_SERVER), the policy protecting this service and the
// revocation list are kept current by a long poll authenticated with the
// service's own SVID; without one, SetPolicy installs a policy from YAML.
// No policy means every call is denied.
//
// The Workload API socket is trusted only when the agent's uid serves it:
// every connection is checked with SO_PEERCRED against WithAgentUID (or
// RAMPART_AGENT_UID; by default the owner of the socket's directory, when
// that is root or this process's uid), so a fake Workload API another local
// user put at the path is refused, whatever it hands out.
//
// This package is the only API Rampart promises to keep stable.
package sdk
