// Package workload serves the SPIFFE Workload API (the spec's gRPC service,
// spiffe/workload/workload.proto) on a unix socket, so that unmodified
// go-spiffe, java-spiffe or Envoy SDS clients get their SVIDs from Rampart.
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
