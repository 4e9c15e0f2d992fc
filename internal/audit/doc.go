// Package audit is Rampart's tamper-evident audit log: an append-only
// Merkle tree log in the style of RFC 6962 and the C2SP transparency-log
// specifications, so that an edited, deleted, inserted or reordered entry is
// detected, and a rewrite of the whole log shows against checkpoints kept
// elsewhere.
//
// # Layout (one directory)
//
//	entries.log      entries, each a uvarint length and the canonical JSON
//	offsets.bin      8-byte big-endian offset of every entry in entries.log
//	hashes.bin       the tree's stored hashes (golang.org/x/mod/sumdb/tlog
//	                 layout: 32 bytes each, in storage-index order)
//	checkpoint       the latest signed checkpoint (C2SP signed note)
//	checkpoints/N    every checkpoint published, by tree size
//	tile/L/N[.p/W]   C2SP tlog-tiles hash tiles (height 8), and
//	tile/entries/N   entry bundles, so tlog tools can read and verify the log
//	segments/F.zst   sealed segments: entries from F on, zstd-compressed, one
//	                 frame per entry bundle (see Seal); their range of
//	                 entries.log is freed and their bundles leave tile/entries
//	index/time.bin   derived: time range of each block of 4,096 entries
//	quarantine/NAME/ what Open or Repair moved out of the log, kept (see
//	                 Quarantine); nothing in Rampart deletes it
//	lock             flock'd by the one process that writes the log
//
// An archive copy (Archiver, Fetch) in S3-compatible storage holds the
// segments and checkpoints; Verify and Scan read a fetched copy like a log.
//
// # Guarantees
//
// Append returns only after the entries and their hashes are on disk
// (fsync): concurrent callers are batched into one write and one fsync
// (group commit), so durability costs one fsync per batch, not per entry.
// A crash can leave at most a torn, never-acknowledged record at the end,
// and hashes missing for written entries, which Open recomputes. Hashing
// follows RFC 6962: leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 ||
// left || right).
//
// Open never cuts the log below what was acknowledged: an entry a signed
// checkpoint covers, or that offsets.bin records (written only after the
// entry was synced). A damaged record there makes Open refuse with a
// *DamageError naming the file, the offset and the entries at stake, and
// change nothing; Repair then moves the damaged tail into quarantine/,
// records the move as an entry and signs a checkpoint. Only a torn write
// (bytes past every checkpoint and every recorded offset) is cut by Open
// itself, and that too is kept in quarantine/, logged and recorded as an
// audit.recover entry.
//
// Checkpoints are signed notes ("origin\nsize\nroot\n" + Ed25519 signature)
// as defined by C2SP signed-note and tlog-checkpoint, one at a time.
// CloseWithCheckpoint makes a final checkpoint the log's last write, so no
// entry follows the newest checkpoint of a log that was closed cleanly.
// Verify re-derives the tree from entries.log and the segments and
// reports every index whose entry no longer hashes to the stored leaf,
// every checkpoint the entries no longer produce, every tile under tile/
// that disagrees with them (or is missing for the newest checkpoint), the
// entries past the newest checkpoint, which no signature vouches for yet,
// and what the quarantine holds.
//
// # Upkeep
//
// Keeper is the upkeep of the log by its writer, run on a timer: a signed
// checkpoint whenever the log grew, sealing what it completed, copies to
// the archive, each recorded in the log; Close makes a final checkpoint
// the last write. Refusals aggregates refusal entries (what an attacker
// produces at will) per kind and interval, so that a flood of them costs
// the log one entry per kind and 10 s. LoadSigner keeps the checkpoint
// key. Entries shipped by others come in through package audit/intake.
package audit
