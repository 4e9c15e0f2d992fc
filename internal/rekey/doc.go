// Package rekey is the burn-down: after a compromise, one operation
// replaces every key the control plane holds and every credential issued
// under them, without an outage.
//
// # Steps
//
// A burn-down is a list of steps, each recorded (in DATA/rekey/state.json
// and in the audit log) as it completes:
//
//	ca.prepare-root      a new root, published in the trust bundle beside the old ones
//	ca.activate-root     after Propagation (agents fetch the bundle first): the new
//	                     root signs a new intermediate; a new JWT-SVID key signs
//	server.certificate   the API's own certificate re-issued under the new root
//	oauth.signing-key    a new OAuth signing key; the old ones verify until the
//	                     finish (or are withdrawn now, and every client's refresh
//	                     tokens and codes revoked: RevokeTokens)
//	kms.rotate           a new version of every key store key
//	svids.reissue        wait: agents re-issue every SVID not under the new root
//	                     (the sync response names the root); done when no SVID
//	                     from before is left without a successor and every
//	                     connection opened with one has been asked to reconnect
//	                     (three quarters into its life), or at Deadline, or on
//	                     Finish
//	svids.revoke-old     every unexpired X.509-SVID issued before activation revoked
//	ca.drop-old          the old roots and JWT-SVID keys out of every bundle
//	oauth.drop-old       the old OAuth signing keys out of the JWKS
//	kms.retire-old       every older key store version scheduled for destruction
//	                     (refused at once, destroyed after KMSGrace)
//
// Until svids.revoke-old, the bundle carries the old and the new roots, so
// a service holding a new SVID and one still holding an old one keep
// talking; after it, what the old chain signed is refused everywhere.
//
// # Interruption
//
// Each step is idempotent and the state file is written after each one, so
// a burn-down interrupted (a crash, a failed step) resumes where it
// stopped: Run again, or let the server's loop (Step) continue it. The
// state always says which steps are done, which failed and why.
//
// # Report
//
// The finished state is the report: old and new key IDs, key store
// versions, counts of SVIDs re-issued and revoked, and the hosts (agents)
// still holding SVIDs from before when the deadline forced the finish:
// evict them (rampart agent evict) and re-join them with a new join
// token. Report.Markdown renders it for people; the JSON is for tools.
package rekey
