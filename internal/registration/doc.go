// Package registration is SPIRE's registration model as the control plane
// applies it: which workload gets which SPIFFE ID (entries), how an agent
// joins (one-time join tokens), and what an agent may have signed.
//
//   - An entry names a workload SPIFFE ID, the agent it is parented by,
//     selectors (at least one unix:uid or unix:gid, package selector),
//     TTLs no longer than the intermediate's life and lower-case DNS names.
//     Two entries giving the same ID to the same selectors under one agent
//     are one too many. A hint (at most MaxHintLen, printable) reaches the
//     workload with its SVID; after ExpiresAt no SVID is signed for the
//     entry, none is signed to outlive it, and it is no longer synced to
//     its agent. Admin and Downstream are SPIRE's flags and grant what
//     SPIRE's do, by SPIFFE ID, while the entry stands unexpired: the admin
//     API's admin role (package operator) and downstream CAs (the
//     server's POST /v1/ca/downstream); the server lets only callers
//     holding the admin role write such entries or their SPIFFE IDs.
//   - Batches (NewEntries, UpdateEntries, DeleteEntries, at most MaxBatch)
//     apply every entry or none, in one store transaction; the first
//     refused one is a BatchError naming its index ("entries[3]:
//     selectors: ..."). Duplicates are refused within the batch and against
//     the store. Entry files (JSON or YAML, ours or SPIRE's field names)
//     are read by ParseEntryFile, strictly: unknown and repeated fields
//     name their line.
//   - A join token is a 256-bit bearer secret, stored as its SHA-256, for
//     one agent name, living at most MaxJoinTokenTTL; a name whose agent is
//     attested and not evicted is refused.
//   - An agent has its own SVID signed from a CSR that asks for nothing but
//     its ID (svid.CheckCSR); it has workload SVIDs signed only for the
//     entries it parents, and "no such entry" and "not yours" are one
//     answer, so an agent cannot probe another's entries. Every X.509-SVID
//     is recorded before it is handed out: one the store does not know
//     could not be revoked by SPIFFE ID or eviction.
//
// Errors a caller caused wrap ErrInvalid, ErrConflict or ErrNotEntitled
// and read as the message to show it; the others are the store's or the
// CA's.
package registration
