// Package server wires the control plane together: it opens the store, loads
// the CA, and serves the versioned JSON API over HTTPS (TLS 1.3 only).
//
// It owns no domain logic of its own. Identity rules live in identity and
// svid, selectors in selector, persistence in store; this package checks who
// is calling and translates between HTTP and those packages.
//
// # Who may call what
//
//   - Admin calls (/v1/entries, /v1/join-tokens, /v1/agents, /v1/svids, /v1/ca)
//     need the bearer token written to DATA/admin.token (0600) on first start,
//     compared in constant time.
//   - Agent calls (/v1/agent/...) need the agent's own X.509-SVID as a TLS
//     client certificate, verified against the current bundle at the
//     handshake; an evicted agent or a revoked certificate is refused.
//   - /v1/agent/attest is the one agent call without a certificate: it spends a
//     join token.
//   - /v1/bundle, /v1/jwt-bundle and /healthz are public.
//   - /metrics needs the scrape-only bearer token written to DATA/metrics.token
//     (0600) on first start (or the admin token): Prometheus reads it with
//     authorization.credentials_file.
//   - /v1/audit/ingest takes agents', proxies' and SDK services' spools, each
//     limited to what it witnesses (ingest.go, decision 0029).
//   - /acme/... is ACME (package acme): public, every request a JWS signed
//     by an account's key (or, to register, a new key with an EAB binding);
//     its operator calls (/v1/acme/...) are admin calls (acmeapi.go).
//
// Every audit entry names the caller the request proved (admin token,
// verified SVID), or the refused certificate's holder with its serial and
// SPIFFE ID, or "anonymous"; never a fallback to a privileged name.
// Refusals are aggregated per kind and 10 s (refusals.go).
//
// # Data directory
//
// First start creates DATA (0700) with the SQLite store (unless PostgreSQL is
// configured), keys/kek (the key-encryption key that wraps CA keys, 0600),
// admin.token and metrics.token (0600), trust_domain, and bundle.pem, which is rewritten
// whenever the bundle changes. A restart reuses all of it.
package server
