package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// SchemaVersion is the version of Entry's encoding.
const SchemaVersion = 1

// MaxEntrySize bounds an encoded entry: C2SP entry bundles length-prefix
// entries with 16 bits.
const MaxEntrySize = 1<<16 - 1

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
	Source    string    `json:"source,omitempty"` // the component that recorded it
	// Stream and Seq identify an entry shipped by an agent or proxy: its
	// spool's random stream ID and the entry's position in it. The server
	// uses them to drop retried duplicates and to notice lost entries.
	Stream  string            `json:"stream,omitempty"`
	Seq     uint64            `json:"seq,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

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
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("audit: entry: %d bytes encoded, at most %d", len(b), MaxEntrySize)
	}
	return b, nil
}

// ParseEntry decodes an entry strictly (unknown fields, trailing data and a
// non-canonical encoding are errors), so that what is stored is exactly what
// Marshal produces.
func ParseEntry(b []byte) (*Entry, error) {
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("audit: entry: %d bytes, at most %d", len(b), MaxEntrySize)
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
	canon, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, errors.New("audit: entry: not in canonical form")
	}
	return &e, nil
}
