// Package server wires the control plane together: it opens the store, loads
// the CA, and serves the versioned JSON API over HTTPS (TLS 1.3 only).
//
// It owns no domain logic of its own: it constructs the parts, runs their
// loops (Serve's list, loops), checks who is calling (the route table's
// Auth and permission) and routes requests. The rules live in the packages
// that own the data: identity (the CA, its schedule, callers' SVIDs, the
// API's own certificate), registration (entries, join tokens, what an
// agent may have signed, eviction), audit (the log's upkeep: Keeper,
// Refusals) and audit/intake (what shippers may put in the log), detect
// (rules, alerts), kms (keys, the key-use policy, schedules), oauth (the
// authorization server, clients and users), backup (backups, drills).
// Handlers that only translate HTTP for those packages stay here; a
// package whose endpoints are its own serves them (kms.API,
// oauth.Accounts, detect.AlertAPI, inventory.API, backup.Runner,
// oauth.Provider.Routes, acme.Server)
// with the helpers of package api, and the server routes them.
//
// A new capability is a package plus a few lines here: construct it in
// New, add its loop to loops if it has one, and one line per endpoint to
// the route table (routes.go), with the permission an admin endpoint
// needs.
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
//   - ACME clients (/acme/...) sign every request with an account's key (a
//     JWS, RFC 8555), or register a new key with an EAB key; package acme
//     checks them. Its operator calls (/v1/acme/...) are admin routes.
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
