// Package server wires the control plane together: it opens the store, loads
// the CA, and serves the versioned JSON API over HTTPS (TLS 1.3 only).
//
// It owns no domain logic of its own: it constructs the parts, runs their
// loops (Serve), checks who is calling and translates between HTTP and the
// packages that own the data. Identity rules live in identity and svid,
// selectors in selector, persistence in store, the audit log's upkeep in
// audit (Keeper, Refusals) and audit/intake, detection in detect, the key
// store's policy and schedules in kms, the authorization server in oauth.
//
// A new capability is a package plus a few lines here: construct it in
// New, add its loop to Serve's list if it has one, and its endpoints to
// the route table.
//
// # Who may call what
//
// Every endpoint is one line of the route table (routes.go): method, path,
// the kind of caller (Auth) and, for admin endpoints, the permission it
// needs (package permission). Handler builds the mux from that table
// alone, putting each route behind its check; docs/api.md is generated
// from it and TestRouteTable fails on an admin route without a permission.
//
//   - Admin calls need the bearer token written to DATA/admin.token (0600)
//     on first start, compared in constant time; it holds every permission.
//   - Agent calls (/v1/agent/...) need the agent's own X.509-SVID as a TLS
//     client certificate, verified against the current bundle at the
//     handshake and again per request; an evicted agent or a revoked
//     certificate is refused. /v1/agent/attest spends a join token instead.
//   - Workload calls need any SVID of the trust domain.
//   - /metrics needs the scrape-only bearer token written to DATA/metrics.token
//     (0600) on first start (or the admin token).
//
// Every audit entry names the caller the request proved (admin token,
// verified SVID), or the refused certificate's holder with its serial and
// SPIFFE ID, or "anonymous"; never a fallback to a privileged name.
// Refusals are aggregated per kind and 10 s (audit.Refusals).
//
// # Data directory
//
// First start creates DATA (0700) with the SQLite store (unless PostgreSQL is
// configured), keys/kek (the key-encryption key that wraps CA keys, 0600),
// admin.token and metrics.token (0600), trust_domain, and bundle.pem, which is rewritten
// whenever the bundle changes. A restart reuses all of it.
package server
