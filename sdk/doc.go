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
// Middleware removes identity headers a caller could forge (X-Spiffe-Id,
// X-Client-Cert, X-Remote-User and the others other proxies set: the list
// is in docs/dataplane.md; WithStripHeaders adds names). HTTPClient resumes
// TLS sessions and bounds its connections (ClientLimits): a request that
// finds all of them busy waits at most a second, then fails with
// ErrOverloaded instead of opening yet another connection.
//
// The SVID and bundle come from the agent's SPIFFE Workload API and follow
// rotations without restarting anything. WithX509Source takes them from any
// go-spiffe x509svid.Source and x509bundle.Source instead: a fixed SVID and
// bundle run a service in a test without an agent (package sdktest makes
// them), as the examples in this package do. With a server configured
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
// Decisions are decision.Event values (package decision), sent to the
// logger or to WithDecisionSink.
//
// This package and its subpackages (decision, kms, sdktest) are the only
// API Rampart promises to keep stable. They depend on nothing of the server
// (no store, SQL driver, PKCS#11 or audit log writer: internal/deptest
// fails the build otherwise), and two complete services using them are in
// examples/. Most of what they add to a binary is cel-go, which evaluates
// the policies' `when` conditions: built with -tags rampart_omit_cel, a
// service leaves it out, and every condition then fails closed (an allow
// rule with one never matches, a deny rule with one always does; an error
// is logged when such a policy is installed). See docs/dataplane.md.
package sdk
