// Package identity is Rampart's certificate authority and the rules for the
// SPIFFE IDs it hands out.
//
// # Hierarchy
//
// A root CA signs an online intermediate; the intermediate signs X.509-SVIDs.
// Workloads and agents trust the root set (the trust bundle), and every SVID is
// served with its intermediate, so rotating the intermediate is invisible to
// relying parties. The root is either generated and kept (wrapped by keywrap)
// in the store, or supplied from outside with an upstream certificate and key
// file so that it never enters the database (the operator may keep it offline
// and mount it only when the intermediate must be re-signed).
//
// # Rotation
//
// Expired trust anchors are the most common outage of service meshes, so
// rotation is automatic, overlapping and observable. Maintain, called
// periodically with the current time, applies one schedule:
//
//   - intermediate: replaced at half of its life (never outliving the root);
//   - root (self-managed): at half of its life a successor is prepared and
//     published in the bundle; at two thirds it becomes active and the old root
//     is retired, staying in the bundle until it expires, so every SVID it
//     vouched for keeps verifying;
//   - JWT signing key: prepared and published in the JWT bundle at half life,
//     signing from two thirds, published until it expires. A key is therefore
//     in every relying party's JWKS long before it signs anything.
//
// Expiry of every root, intermediate and JWT key is exported by Status for
// metrics (ExpiryCollector) and warnings. Maintainer runs the schedule on
// a timer and warns about keys close to expiry.
//
// # Callers and the server's certificate
//
// Verifier checks the SVIDs callers present to the control plane (chain to
// the current bundle, expiry, the revocation list, evicted agents) with a
// cache of verified chains; ServerCert is the API's own SVID, renewed at
// half life.
//
// # IDs
//
// SPIFFE IDs use go-spiffe's spiffeid.ID type. Paths under /rampart/ are
// reserved: agents are spiffe://TD/rampart/agent/NAME and the server is
// spiffe://TD/rampart/server; workload entries may not use them. The rules
// live in the leaf package ids (identity forwards to it), so that the agent,
// the proxy and the SDK name the server without compiling the CA and its
// store. Likewise the certificate PEM helpers live in package svid.
package identity
