package audit

import "github.com/rampartsec/rampart/internal/audit/auditentry"

// The entry type and its encoding live in package auditentry, so that the
// agent, the proxy and the SDK produce entries without compiling the log;
// these names keep the log's code and its users reading audit.Entry (a type
// alias: the same type, not a copy, so no call site changes).

type (
	// Entry is one audit record (auditentry.Entry).
	Entry = auditentry.Entry
	// Actor is who acted (auditentry.Actor).
	Actor = auditentry.Actor
)

// SchemaVersion is the version of Entry's encoding.
const SchemaVersion = auditentry.SchemaVersion

// MaxEntrySize bounds an encoded entry (auditentry.MaxSize).
const MaxEntrySize = auditentry.MaxSize

// Outcome of an audited action.
const (
	OutcomeSuccess = auditentry.OutcomeSuccess
	OutcomeFailure = auditentry.OutcomeFailure
	OutcomeDenied  = auditentry.OutcomeDenied
)

// Clipping bounds (see auditentry.Clip).
const (
	MaxField      = auditentry.MaxField
	MaxDetails    = auditentry.MaxDetails
	DetailClipped = auditentry.DetailClipped
)

// DecodeEntry decodes an entry strictly, without requiring the canonical
// encoding (auditentry.Decode).
func DecodeEntry(b []byte) (*Entry, error) { return auditentry.Decode(b) }

// ParseEntry decodes an entry in its canonical encoding only (auditentry.Parse).
func ParseEntry(b []byte) (*Entry, error) { return auditentry.Parse(b) }

// Clip bounds a field to MaxField bytes (auditentry.Clip).
func Clip(s string) string { return auditentry.Clip(s) }

// ClipEntry clips every field of e a caller may have chosen (auditentry.ClipFields).
func ClipEntry(e *Entry) bool { return auditentry.ClipFields(e) }
