// Package workload serves the SPIFFE Workload API (the spec's gRPC service,
// spiffe/workload/workload.proto) and Envoy's Secret Discovery Service (SDS
// v3, envoy.service.secret.v3) on one unix socket, so that unmodified
// go-spiffe or java-spiffe clients, and Envoy, get their SVIDs from Rampart.
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
// effective uid or gid, or runs another executable file than at accept
// (the same file renamed or replaced on disk is still the same file).
//
// A unix:path selector names a file in the agent's view, not a name the
// caller shows: it is attested only if stat(path) in the agent's own mount
// namespace leads to the file the caller runs (the device and inode of its
// /proc/PID/exe, pinned at accept). A caller in a mount namespace of its
// own can bind-mount anything over the path, and /proc/PID/exe would still
// show the path; a binary replaced on disk since the process started is no
// longer the file the path names.
//
// A caller in another user namespace than the agent's is attested no path
// and no hash at all: root in a user namespace of its own, which any user
// may create, a process holds CAP_CHECKPOINT_RESTORE there and can point
// its /proc/PID/exe at any file it can open (prctl PR_SET_MM_MAP) while it
// runs its own code. Its uid and gid, which the kernel maps into the
// agent's namespace, still count. The caller's user and mount namespaces
// are recorded at accept, logged and audited with a refusal, and a caller
// that enters another user namespace afterwards is refused.
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
// The socket is open to every local process, so the agent bounds the
// connections it holds (connlimit.go): in all, from its open-file limit
// (three descriptors each), and per uid an eighth of that, so that one
// local user holding connections cannot take the descriptors every other
// workload needs. One beyond is closed as it is accepted, and logged.
//
// # Serving
//
// The agent supplies a Source: an immutable Snapshot of what it holds and a
// channel closed when a newer one exists. Streaming calls resend only when
// what that caller is entitled to changed (rotation, bundle change, entry
// added or removed). A caller entitled to nothing gets PermissionDenied, as
// the spec requires; a stream whose last identity disappears ends with it.
//
// Every Workload API call must carry the metadata header
// "workload.spiffe.io: true" (the spec's guard against server-side request
// forgery through proxies). SDS calls need not: Envoy does not send it
// (SPIRE's agent does not ask for it either).
//
// # Envoy SDS (sds.go)
//
// The same attestation, snapshot and inspector as the Workload API; the
// resource names are SPIRE's defaults, so an Envoy configuration written
// for SPIRE works unchanged:
//
//   - a SPIFFE ID: that X.509-SVID of the caller, as a TlsCertificate
//     (PEM chain, PKCS#8 key);
//   - "default": the caller's first X.509-SVID (by entry ID);
//   - "ROOTCA" or the trust domain's ID ("spiffe://example.org"): the
//     bundle as a validation context: Envoy's SPIFFE certificate validator
//     for clients that say they are Envoy 1.18 or later, trusted CAs for
//     others;
//   - another trust domain's ID: its bundle, if one of the caller's
//     entries federates with it (federates_with), else our trust
//     domain's roots under that name (withdrawing the other's from an
//     Envoy that held them);
//   - "ALL": our bundle and those the caller federates with, as one SPIFFE
//     validator;
//   - no names (a wildcard): every X.509-SVID of the caller and the
//     bundles.
//
// A request that names an SVID the caller is not entitled to (another
// workload's, or none at all) is refused whole with PermissionDenied,
// logged and audited; the refusal does not say whether the SVID exists.
// Our own bundle is public, as FetchX509Bundles is, and needs no entry;
// federated bundles go only to callers whose entries federate with them.
//
// StreamSecrets speaks the state-of-the-world protocol: each response has
// a version and a nonce; an ACK or a NACK (error_detail, logged) of the
// last nonce is not answered until what the caller holds changes
// (rotation, bundle, entries), which is pushed as a new version; a request
// with an older nonce is stale and ignored; one naming other resources is
// answered at once. FetchSecrets answers once. DeltaSecrets (incremental
// xDS, api_type DELTA_GRPC; sds_delta.go) gives each secret a version of
// its own (a digest of its content) and sends only what the client lacks:
// a rotation sends the certificate, not the unchanged bundle, and a
// reconnecting client's initial_resource_versions are honoured.
package workload
