// Package spool ships audit entries from agents and proxies to the server so
// that none is lost while the server is away and none is stored twice.
//
// Record hands an entry to the spool and returns at once (the data plane does
// not wait for the audit log). A writer goroutine gives each entry its place
// in the spool's stream (a random stream ID kept in the spool directory and a
// sequence number) and appends it to a segment file on disk, with one fsync
// per batch. A sender goroutine reads the segments in order and delivers them
// to the server in batches; the server answers with the highest sequence
// number it holds durably for the stream, which the spool records in its
// cursor file before deleting the segments that are fully acknowledged.
//
// A retried batch is harmless: the server drops entries of a stream whose
// sequence number it already holds. A gap (entries deleted from the spool by
// hand) shows in the server's log as an audit.ingest.gap entry.
//
// Damage never cuts off intact entries (recover.go). On Open, a torn write
// at the end of the last segment (an append the crash interrupted before
// its fsync) is trimmed and logged. Any other damaged record, found on
// Open or while sending, is resynchronised past: the intact records after
// it are kept and shipped, a copy of the damaged segment is kept in
// damaged/, the loss is logged as an error and recorded as an
// audit.entry_lost entry, and the lost sequence numbers are never reused,
// so the server records the gap too.
//
// Record never waits on its caller (a cancelled request must not take its
// record with it): when the in-memory queue is full, Record writes the queue
// and its entry to disk itself. Memory and disk are bounded: when the spool
// directory holds MaxBytes of unacknowledged entries, Record drops entries
// and counts them, and the count is written as an audit.entries_dropped
// entry as soon as there is room (and rampart_audit_spool_dropped_total).
// Entries still in the queue, not yet on disk, are lost if the process
// itself crashes; everything on disk survives restarts.
//
// WriteLinger and Linger trade latency for cost: the writer gathers entries
// for one fsync, the sender waits for a batch to fill. Batches travel in the
// version 2 wire format (wire.go), version 1 (JSON) for older servers.
//
// # Layout (one directory)
//
//	stream        the stream ID (random, 128 bits, hex)
//	acked         the highest acknowledged sequence number (decimal)
//	SEQ.seg       segments, named by their first sequence number; records
//	              are a 4-byte length, a 4-byte CRC-32C and the canonical
//	              JSON of the entry (which carries its stream and sequence);
//	              numbers increase, with gaps where damage lost entries
//	damaged/      copies of damaged segments (SEQ.seg.TIME), never deleted
//	              by the spool
//
// The directory must be one only this process's user (and root) can
// change (see package safedir): Open refuses any other, since whoever
// controls it could read the entries or put their own in the stream.
package spool
