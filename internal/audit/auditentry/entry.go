package auditentry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	c.toValidUTF8()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("audit: entry: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("audit: entry: %d bytes encoded, at most %d", len(b), MaxSize)
	}
	return b, nil
}

// toValidUTF8 replaces invalid UTF-8 in e's strings with U+FFFD (details
// in a copy of the map). encoding/json writes an invalid byte as \ufffd,
// which reads back as U+FFFD and re-encodes as its three bytes: an entry
// with one (a request path with %FF) was written in a form Parse refuses.
// U+FFFD is what every reader saw anyway.
func (e *Entry) toValidUTF8() {
	for _, p := range []*string{&e.Actor.SpiffeID, &e.Actor.User, &e.Action, &e.Target, &e.Outcome, &e.Reason, &e.RequestID, &e.Source, &e.Stream} {
		*p = validUTF8(*p)
	}
	for k, v := range e.Details {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			// In name order, the first of names that become one wins:
			// the encoding must not depend on the map's order.
			keys := slices.Sorted(maps.Keys(e.Details))
			d := make(map[string]string, len(keys))
			for _, k := range keys {
				if vk := validUTF8(k); !hasKey(d, vk) {
					d[vk] = validUTF8(e.Details[k])
				}
			}
			e.Details = d
			return
		}
	}
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
// permanent. Every bound is on the encoded size, what the field takes in
// the canonical JSON, not on its bytes: escaping grows a byte up to six
// times ("<" is written \u003c, a control character \u0001, an invalid
// UTF-8 byte \ufffd), so a bound on bytes alone let a 400-byte field take
// 2,400 bytes and 16 KB of "<" take 96 KB, past MaxSize. A clipped entry
// encodes to at most MaxClippedSize bytes whatever its content.
const (
	// MaxField is the most a field takes encoded (its clip marker
	// included), quotes not counted.
	MaxField = 400
	// MaxDetails is the most details an entry keeps.
	MaxDetails = 32
	// MaxDetailsSize is the most all details together take encoded
	// (names, values, quotes and separators); details past it are
	// dropped and counted in "details_dropped", in name order.
	MaxDetailsSize = 8 << 10
	// maxDetailKey is the most a detail's name takes encoded.
	maxDetailKey = 64
	// maxAction is the longest action kept. An action is dotted
	// lower-case words, so it never needs escaping.
	maxAction = 128
	// MaxClippedSize bounds the encoding of an entry ClipFields has
	// clipped: 7 clipped fields, the action, the details budget, the
	// clipped and details_dropped details, and the fixed fields, with
	// room to spare. It is well under MaxSize.
	MaxClippedSize = 12 << 10
	// DetailClipped lists the fields ClipFields clipped, comma-separated.
	DetailClipped = "clipped"
	// DetailsDropped counts the details ClipFields dropped.
	DetailsDropped = "details_dropped"
	clipPrefix     = "…[clipped "
)

// EncodedLen is how many bytes s takes in the canonical encoding, between
// its quotes: what encoding/json writes (it escapes <, > and &, control
// characters, U+2028 and U+2029, and writes an invalid UTF-8 byte as
// \ufffd). FuzzEncodedLen holds it to encoding/json.
func EncodedLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		w, size := encodedRune(s, i)
		n += w
		i += size
	}
	return n
}

// encodedRune returns what the rune (or invalid byte) at s[i] takes
// encoded, and its size in s.
func encodedRune(s string, i int) (encoded, size int) {
	if b := s[i]; b < utf8.RuneSelf {
		switch {
		case b == '\\' || b == '"' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
			return 2, 1
		case b < 0x20 || b == '<' || b == '>' || b == '&':
			return 6, 1 // \u00XX
		}
		return 1, 1
	}
	c, size := utf8.DecodeRuneInString(s[i:])
	if c == utf8.RuneError && size == 1 || c == '\u2028' || c == '\u2029' {
		return 6, size // \ufffd, \u2028, \u2029
	}
	return size, size
}

// Clip returns s if it takes at most MaxField bytes encoded. Otherwise it
// returns the start of s, cut at a rune boundary, and a marker giving the
// original length in bytes and the first 8 bytes of its SHA-256 (to match
// it against another copy, such as a web server's access log):
//
//	/aaaaaaaa…[clipped 60000 bytes sha256:1f2e3d4c5b6a7988]
func Clip(s string) string { return clipTo(s, MaxField) }

func clipTo(s string, limit int) string {
	if len(s) <= limit/6 || EncodedLen(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	marker := clipPrefix + strconv.Itoa(len(s)) + " bytes sha256:" + hex.EncodeToString(sum[:8]) + "]"
	budget := limit - len(marker) // the marker needs no escaping
	cut, used := 0, 0
	for cut < len(s) {
		w, size := encodedRune(s, cut)
		if used+w > budget {
			break
		}
		used += w
		cut += size
	}
	return s[:cut] + marker
}

// clipAction shortens an action longer than maxAction, keeping it an
// action (dotted lower-case words). It reports whether it did.
func clipAction(a string) (string, bool) {
	if len(a) <= maxAction {
		return a, false
	}
	a = strings.TrimRight(a[:maxAction-len(".clipped")], ".")
	return a + ".clipped", true
}

// ClipFields clips every string field of e that a caller may have chosen
// (actor, target, reason, request ID, source, stream, action, details: at
// most MaxDetails details in at most MaxDetailsSize, the rest counted in
// "details_dropped"), replaces invalid UTF-8 with U+FFFD (what a reader
// would see anyway), and names the clipped fields in details["clipped"], so
// a reader can tell a clipped value from one that merely ends like a
// marker. It reports whether anything was clipped. A clipped entry encodes
// to at most MaxClippedSize bytes.
func ClipFields(e *Entry) bool {
	var clipped []string
	field := func(name string, v *string) {
		*v = validUTF8(*v)
		if c := Clip(*v); c != *v {
			*v = c
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
	var ok bool
	if e.Action, ok = clipAction(e.Action); ok {
		clipped = append(clipped, "action")
	}
	if detailsNeedClipping(e.Details) {
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make(map[string]string, min(len(keys), MaxDetails)+2)
		size := 0
		for i, k := range keys {
			v := validUTF8(e.Details[k])
			vk := validUTF8(k)
			ck := clipTo(vk, maxDetailKey)
			cv := Clip(v)
			cost := EncodedLen(ck) + EncodedLen(cv) + 6 // quotes, colon, comma
			if i >= MaxDetails || size+cost > MaxDetailsSize {
				out[DetailsDropped] = strconv.Itoa(len(keys) - i)
				clipped = append(clipped, "details")
				break
			}
			if _, dup := out[ck]; dup {
				continue // names that differed only in invalid UTF-8: the first wins
			}
			size += cost
			if ck != vk {
				clipped = append(clipped, "details key "+ck)
			}
			if cv != v {
				clipped = append(clipped, "details."+ck)
			}
			out[ck] = cv
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

// detailsNeedClipping reports whether ClipFields must rebuild details.
func detailsNeedClipping(d map[string]string) bool {
	if len(d) > MaxDetails {
		return true
	}
	size := 0
	for k, v := range d {
		kl, vl := EncodedLen(k), EncodedLen(v)
		if kl > maxDetailKey || vl > MaxField || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return true
		}
		size += kl + vl + 6
	}
	return size > MaxDetailsSize
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// validUTF8 replaces each invalid byte of s with U+FFFD, as encoding/json
// would; encoded as \ufffd it would not read back as it was written.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
