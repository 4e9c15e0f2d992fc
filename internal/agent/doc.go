// Package agent is the node agent: one per host, it proves itself to the
// server once with a join token, then holds an agent SVID that it renews over
// mTLS, and serves the SPIFFE Workload API to the workloads on its host.
//
// # What it keeps
//
// The agent's SVID and key, the trust bundle, the JWT bundle, its
// registration entries, the revocation list, and an X.509-SVID for each
// entry a workload on the host has asked for. All of it is cached in
// DATA/cache.json (0600, written atomically), so after a restart, or while
// the server is unreachable, workloads keep getting their SVIDs until those
// expire. Each entry is held once, parsed, and shared by every snapshot
// of the Workload API (entries.go); the sync and the cache are read and
// written one entry at a time, never whole in memory (docs/decisions/0056).
//
// # Minted on first request
//
// An agent may be parent to thousands of entries whose workloads run
// elsewhere or not yet. It mints an entry's SVID when a workload matching
// it first asks (Workload API or SDS; workload.Minter), so it holds keys
// only for workloads that are present: with 1,000 entries and none
// present it holds none (docs/benchmarks.md). The first request waits one
// round trip to the server; concurrent first requests for one entry share
// it. An open stream re-attests whenever the snapshot changes, so an entry
// added for a connected workload is minted and pushed at once. An SVID
// nobody asked for during its whole life (no stream woke on its last
// rotation, no fetch since) is dropped at renewal instead of renewed, and
// minted again if its workload comes back.
//
// # How it stays current
//
//   - Sync: a long poll (GET /v1/agent/sync?revision=N) returns as soon as
//     anything the agent must know changes: entries, bundle, revocations. A
//     failed poll is retried with exponential backoff and jitter (1 s to 30 s).
//   - Rotation: every SVID held is renewed between 40% and 50% of its life, the
//     point drawn at random for each SVID, so a fleet of agents started
//     together does not stampede the server. A revoked or re-configured SVID is
//     replaced at once. New workload SVIDs are pushed to open Workload API
//     streams without any restart of the workload.
//
// Private keys for workload SVIDs are generated on the agent and never leave
// the host; the server sees only CSRs.
//
// # What it trusts on the host
//
// Its data directory and its socket's directory must be its own, under
// parents only root or it can change (safedir): otherwise another local
// user could swap cache.json (the trust bundle, the keys) or the socket.
// It checks the socket before it spends its join token. The join token
// comes from RAMPART_JOIN_TOKEN or a 0600 file (Config.JoinTokenFile, read
// only when needed), never from the command line.
package agent
