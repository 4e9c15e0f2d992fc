// Package deptest holds the tests that keep Rampart's layering: what the
// data plane (the SDK, rampart proxy, the agent) may compile, which packages
// stay leaves, and which exported SDK types may come from where. It has no
// code of its own; its tests run `go list` on the module, as tailscale's
// tstest/deptest does, and fail naming the chain of imports that broke a
// rule.
//
// The rules (deptest_test.go):
//
//   - sdk/... and internal/proxy reach no store, SQL driver (database/sql,
//     modernc.org/sqlite, pgx), PKCS#11 binding, server, CA (internal/identity
//     itself; its leaf identity/ids is fine), key store (internal/kms; its
//     leaf kms/envelope is fine), key wrapping, object store or audit log
//     writer (internal/audit itself; audit/auditentry and audit/spool are
//     fine). A service that imports the SDK compiles none of them.
//   - internal/agent reaches none of these either.
//   - The leaf packages the SDK and the proxy share with the server
//     (identity/ids, audit/auditentry, kms/envelope, sdk/decision) import
//     only the standard library, golang.org/x/crypto and go-spiffe (not its
//     Workload API client, which brings gRPC).
//   - Packages that make keys, tokens or serial numbers never import
//     math/rand: their randomness is crypto/rand.
//   - No exported identifier of sdk/... has a type, field, parameter or
//     result defined under internal/: a user must be able to name every
//     type of the SDK's API (api_test.go).
//
// A rule broken on purpose says so in its message; extend the lists here,
// with the reason, rather than working around them.
package deptest
