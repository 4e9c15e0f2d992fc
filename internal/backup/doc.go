// Package backup makes encrypted, signed backups of a Rampart server's
// whole state, keeps them in several places, restores them, and proves on
// a schedule that they restore (drills).
//
// # What a backup holds
//
// A consistent snapshot of the store (SQLite: VACUUM INTO; PostgreSQL: a
// dump from one REPEATABLE READ transaction, see store.Snapshotter), the
// data directory's own files (trust domain, public keys, and the secrets
// under keys/ and *.token sealed by the key-encryption key inside the
// backup), and the audit log through audit.Log.Backup: its sealed segments
// (stored once and listed again by later backups: incremental), the tail of
// entries.log at its offset, a checkpoint signed for the backup, the older
// checkpoints and the quarantine. The KEK file itself is left out unless
// asked (Config.IncludeKEK): restoring then needs the copy the operator
// keeps elsewhere, or the passphrase or HSM that opens keys/kek.sealed.
//
// # How it is stored
//
// Every file is compressed (zstd, unless it already is) and encrypted with
// age to the configured recipients (X25519 or SSH keys; or a deployment
// identity sealed by a passphrase, see keys.go), and the age file is cut
// into parts of at most 16 MiB, each an object objects/HH/SHA256 named by
// its own hash. The manifest (manifest.go: every file with its size,
// SHA-256 and parts; the store's row counts; the audit tree size and root;
// the sequence number and the previous manifest's hash) is a signed note
// written last, as manifests/SEQ, to every destination (Destination: a
// directory or an S3 bucket). A backup counts as made when every
// destination lists every object at its size and returns the manifest as
// signed.
//
// # Restore, verify, drill
//
// Restore, Verify and Drill are given the backup public key from outside
// the destinations (DATA/backup.pub, kept by the operator): whoever
// controls a destination can delete or replace what is there, not make it
// pass. Each object is checked against its hash before it is decrypted,
// each file against its size and hash after, the audit log's tree against
// the manifest's root, the store's rows against its counts. A backup older
// than the newest any destination holds, or than the highest the operator's
// seen file records, is refused as a rollback unless allowed (and the
// allowance is recorded in the backup.restore entry).
//
// Runner runs backups, retention and drills on a schedule with an injected
// clock, records backup.create, backup.drill, backup.prune and the absence
// entries backup.overdue and backup.drill_overdue in the audit log, and
// exports metrics; the default detection rules turn failures and absences
// into alerts. It also serves the backup API (HandleCreate, HandleDrill,
// HandleList), which the server routes behind backup.run, backup.drill and
// backup.read. What a drill checks of the restored server is ProbeAPI,
// VerifyRestoredLog and identity's CA.SelfTest. See docs/backup.md.
package backup
