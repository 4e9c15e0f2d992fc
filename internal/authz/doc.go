// Package authz is the inbound guard shared by rampart proxy and the Go SDK:
// one implementation, so a sidecar and an in-process service decide alike.
//
// For every request it:
//
//  1. takes the caller's SPIFFE ID from the verified TLS peer certificate,
//     never from a header;
//  2. strips identity headers the caller may have forged: its own
//     (X-Forwarded-Client-Cert, X-Rampart-*), those other proxies and
//     platforms set for the apps behind them (X-Spiffe-Id, X-Client-Cert,
//     X-Remote-User...: identity.go) and any the operator names;
//  3. normalises the path (policy.NormalizePath) and refuses ambiguous ones
//     (encoded slashes, ".." above the root) with 400, then forwards the
//     normalised path, so the app serves exactly what the policy judged;
//  4. asks the policy engine; without a policy every call is denied;
//  5. answers a denial with 403 and a problem+json body naming only the
//     policy version, never its rules; the operator's log and the decision
//     event say which rule and why;
//  6. hands the verified identity to the app: X-Rampart-Caller and
//     X-Forwarded-Client-Cert headers (proxy), and the request context
//     (SDK: CallerID);
//  7. records a decision.Event (caller, target, method, path, rule,
//     outcome, dry-run, latency; the types are in the public package
//     sdk/decision, so an SDK user can name them) to a decision.Sink:
//     LogSink writes a structured log line, AuditSink an authz.decision
//     entry into a spool that ships it to the
//     server's audit log (ShipDecisions sets both up). The sink never
//     waits on the request, and counts identical decisions within 5 s into
//     one entry with details.count (bounded per caller), so a flood is a
//     bounded number of entries and every decision is counted.
//
// Syncer keeps the guard's policy and the revocation list current by long
// polling the server with the workload's own SVID, and caches the last answer
// on disk so a restart works while the server is down.
package authz
