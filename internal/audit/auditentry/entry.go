package auditentry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SchemaVersion is the version of Entry's encoding.
const SchemaVersion = 1

// MaxSize bounds an encoded entry: C2SP entry bundles length-prefix
// entries with 16 bits.
const MaxSize = 1<<16 - 1

// Outcome of an audited action.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Actor is who acted: a workload (SPIFFE ID), an end user, or both.
type Actor struct {
	SpiffeID string `json:"spiffe_id,omitempty"`
	User     string `json:"user,omitempty"`
}

// Entry is one audit record. Field order is the canonical encoding order.
type Entry struct {
	V         int       `json:"v"`
	Time      time.Time `json:"time"`
	Actor     Actor     `json:"actor"`
	Action    string    `json:"action"` // e.g. "svid.issue", "authz.decision"
	Target    string    `json:"target,omitempty"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	// Source is who wrote the entry: "server" or "oauth" for the server
	// itself; for an entry shipped by an agent, proxy or SDK service, its
	// SPIFFE ID, set by the server on receipt whatever the shipper said.
	Source string `json:"source,omitempty"`
	// Stream and Seq identify an entry shipped by an agent or proxy: its
	// spool's random stream ID and the entry's position in it. The server
	// uses them to drop retried duplicates and to notice lost entries.
	Stream  string            `json:"stream,omitempty"`
	Seq     uint64            `json:"seq,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

// ServerWritten reports whether the server wrote e itself (source "server",
// or "oauth" for its authorization server), rather than an agent, proxy or
// SDK service shipping it (source: the shipper's SPIFFE ID, set by the
// server on receipt). Only such entries can say what an admin or the
// server did.
func (e *Entry) ServerWritten() bool { return e.Source == "server" || e.Source == "oauth" }

var actionRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)

// Validate checks the entry's fields.
func (e *Entry) Validate() error {
	switch {
	case e.V != SchemaVersion:
		return fmt.Errorf("audit: entry: v = %d, want %d", e.V, SchemaVersion)
	case e.Time.IsZero():
		return errors.New("audit: entry: time is required")
	case !actionRE.MatchString(e.Action):
		return fmt.Errorf("audit: entry: action %q: want dotted lower-case words, e.g. svid.issue", e.Action)
	case e.Outcome != OutcomeSuccess && e.Outcome != OutcomeFailure && e.Outcome != OutcomeDenied:
		return fmt.Errorf("audit: entry: outcome %q: want success, failure or denied", e.Outcome)
	case e.Actor.SpiffeID == "" && e.Actor.User == "":
		return errors.New("audit: entry: actor needs a SPIFFE ID or a user")
	}
	return nil
}

// Marshal returns the canonical encoding: JSON with fields in declaration
// order, map keys sorted, time in UTC with nanoseconds, no trailing newline.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	c := *e
	c.Time = c.Time.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("audit: entry: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("audit: entry: %d bytes encoded, at most %d", len(b), MaxSize)
	}
	return b, nil
}

// Decode decodes an entry strictly (unknown fields and trailing data
// are errors) and validates it, but does not require the canonical
// encoding: for a receiver that re-encodes what it stores (the server's
// ingestion), which saves an encoding per entry.
func Decode(b []byte) (*Entry, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("audit: entry: %d bytes, at most %d", len(b), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("audit: entry: %w", err)
	}
	if dec.More() {
		return nil, errors.New("audit: entry: data after the object")
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Parse decodes an entry strictly (unknown fields, trailing data and a
// non-canonical encoding are errors), so that what is stored is exactly what
// Marshal produces.
func Parse(b []byte) (*Entry, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, err
	}
	canon, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, errors.New("audit: entry: not in canonical form")
	}
	return e, nil
}

// Clipping. Much of an entry comes from whoever made the request (a path, a
// header, a claimed identity, an error quoting the input), and the log is
// permanent: a field never keeps more than MaxField bytes, so an entry's
// size does not depend on its input and never reaches MaxSize.
const (
	// MaxField is the most bytes a field keeps (its clip marker included).
	MaxField = 400
	// MaxDetails is the most details an entry keeps.
	MaxDetails = 32
	// maxDetailKey is the most bytes a detail's name keeps.
	maxDetailKey = 64
	// DetailClipped lists the fields ClipFields clipped, comma-separated.
	DetailClipped = "clipped"
	clipPrefix    = "…[clipped "
)

// Clip returns s if it is at most MaxField bytes. Otherwise it returns the
// start of s, cut at a UTF-8 boundary, and a marker giving the original
// length and the first 8 bytes of its SHA-256 (to match it against another
// copy, such as a web server's access log):
//
//	/aaaaaaaa…[clipped 60000 bytes sha256:1f2e3d4c5b6a7988]
func Clip(s string) string { return clipTo(s, MaxField) }

func clipTo(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	marker := clipPrefix + strconv.Itoa(len(s)) + " bytes sha256:" + hex.EncodeToString(sum[:8]) + "]"
	cut := max(limit-len(marker), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + marker
}

// ClipFields clips every string field of e that a caller may have chosen
// (actor, target, reason, request ID, details; at most MaxDetails details,
// the rest counted in "details_dropped") and names the clipped ones in
// details["clipped"], so a reader can tell a clipped value from one that
// merely ends like a marker. It reports whether anything was clipped.
func ClipFields(e *Entry) bool {
	var clipped []string
	field := func(name string, v *string) {
		if len(*v) > MaxField {
			*v = Clip(*v)
			clipped = append(clipped, name)
		}
	}
	field("actor.spiffe_id", &e.Actor.SpiffeID)
	field("actor.user", &e.Actor.User)
	field("target", &e.Target)
	field("reason", &e.Reason)
	field("request_id", &e.RequestID)
	field("source", &e.Source)
	field("stream", &e.Stream)
	big := len(e.Details) > MaxDetails
	if !big {
		for k, v := range e.Details {
			if len(k) > maxDetailKey || len(v) > MaxField {
				big = true
				break
			}
		}
	}
	if big {
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make(map[string]string, min(len(keys), MaxDetails)+2)
		for i, k := range keys {
			v := e.Details[k]
			if i >= MaxDetails {
				out["details_dropped"] = strconv.Itoa(len(keys) - MaxDetails)
				clipped = append(clipped, "details")
				break
			}
			ck := k
			if len(k) > maxDetailKey {
				ck = clipTo(k, maxDetailKey)
				clipped = append(clipped, "details key "+ck)
			}
			if len(v) > MaxField {
				v = Clip(v)
				clipped = append(clipped, "details."+ck)
			}
			out[ck] = v
		}
		e.Details = out
	}
	if len(clipped) == 0 {
		return false
	}
	if e.Details == nil {
		e.Details = map[string]string{}
	}
	e.Details[DetailClipped] = Clip(strings.Join(clipped, ","))
	return true
}
