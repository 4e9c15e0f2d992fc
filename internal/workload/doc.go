// Package workload serves the SPIFFE Workload API (the spec's gRPC service,
// spiffe/workload/workload.proto) on a unix socket, so that unmodified
// go-spiffe or java-spiffe clients get their SVIDs from Rampart (Envoy's SDS is
// a different API, not served yet).
//
// # Attestation
//
// The caller is identified by the kernel, not by anything it says: the
// socket's peer credentials (SO_PEERCRED) give its pid, uid and gid at
// connect time; /proc/PID gives its supplementary groups, executable path and,
// only if some entry asks for it, the executable's SHA-256. These become
// selectors (unix:uid:N, unix:gid:N, unix:path:P, unix:sha256:H); the caller
// gets the SVIDs of every entry whose selectors it all has.
//
// A PID is only a name, so the caller is pinned when its connection is
// accepted (pin.go): a pidfd from SO_PEERPIDFD, its /proc/PID directory
// opened and checked against the pidfd, its start time and the identity of
// its executable. Every attestation reads through that directory, between
// two checks that the same process is alive with the same start time, and
// refuses a caller that exited (its PID may be anyone's now), changed its
// effective uid or gid, or runs another executable than at accept.
//
// What this cannot prove: which executable ran at the instant of connect.
// A process can connect and exec another binary before the agent accepts
// (the connection waits in the listen backlog), and then the agent sees
// only the new binary. Path and hash selectors therefore tell programs of
// one account apart; they are no boundary between hostile programs under
// the same uid (which can ptrace each other anyway). That is why every
// entry must carry a unix:uid or unix:gid selector (selector.CheckEntry):
// those come from SO_PEERCRED, fixed at connect, and exec cannot change
// them without the change being seen. Entries stored before that rule are
// not served, with a log line naming them.
//
// # The socket
//
// Listen creates the socket in a directory only the agent can change
// (safedir): a directory another local user created first, or one under a
// parent they control, is refused, since its owner could later put a fake
// Workload API in the socket's place. Clients check who serves the socket
// (package endpoint).
//
// # Serving
//
// The agent supplies a Source: an immutable Snapshot of what it holds and a
// channel closed when a newer one exists. Streaming calls resend only when
// what that caller is entitled to changed (rotation, bundle change, entry
// added or removed). A caller entitled to nothing gets PermissionDenied, as
// the spec requires; a stream whose last identity disappears ends with it.
//
// Every call must carry the metadata header "workload.spiffe.io: true"
// (the spec's guard against server-side request forgery through proxies).
package workload
