// Package auditentry is the audit log's record: the Entry type, its canonical
// encoding (Marshal, Parse) and the clipping that bounds what a caller can
// put in it (Clip, ClipFields).
//
// It is apart from package audit, which writes and verifies the log, so
// that what only produces entries (the agent, rampart proxy and the SDK,
// through the spool) compiles none of the log's writer, its segments or its
// archive. Package audit re-exports these names (audit.Entry is this
// Entry), so the server's code reads audit.Entry as before.
//
// # Encoding
//
// An entry is stored and shipped as its canonical JSON: fields in
// declaration order, detail keys sorted, the time in UTC with nanoseconds,
// no trailing newline, at most MaxSize bytes (C2SP entry bundles
// length-prefix entries with 16 bits):
//
//	{"v":1,"time":"2026-01-01T00:00:00.000000007Z","actor":{"spiffe_id":"spiffe://example.org/orders"},"action":"authz.decision","target":"spiffe://example.org/payments","outcome":"success","details":{"n":"7"}}
//
// Parse accepts only that form (an unknown field, trailing data or any
// other spelling is an error), so what the log stores is exactly what
// Marshal produces; Decode is as strict about fields but not about the
// spelling, for a receiver that re-encodes what it stores.
//
// The package imports only the standard library (internal/deptest keeps it
// so).
package auditentry
