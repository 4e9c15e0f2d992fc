package auditentry

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	if got := Clip("/short"); got != "/short" {
		t.Fatalf("short value changed: %q", got)
	}
	long := "/" + strings.Repeat("é", 30000) // 60,001 bytes, two-byte runes
	got := Clip(long)
	if len(got) > MaxField || !utf8.ValidString(got) || !strings.HasPrefix(got, "/éé") ||
		!strings.Contains(got, "…[clipped 60001 bytes sha256:") || !strings.HasSuffix(got, "]") {
		t.Fatalf("clipped to %d bytes: %q", len(got), got)
	}
	if Clip(long) != got || Clip(long+"x") == got {
		t.Fatal("the marker must identify the original value")
	}
}

// Issue 26 item 4: a 60 KB path added 60 KB to the log and a 900 KB one
// made the write fail. A clipped entry is bounded and always encodes.
func TestClipEntryBoundsEveryEntry(t *testing.T) {
	for _, size := range []int{60_000, 900_000} {
		big := strings.Repeat("a", size)
		e := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{User: big}, Action: "admin.auth", Outcome: OutcomeDenied,
			Target: big, Reason: big, Details: map[string]string{"path": big, big: "key"}}
		for i := range 100 {
			e.Details["z"+strings.Repeat("x", i)] = "v"
		}
		if !ClipFields(e) {
			t.Fatal("nothing clipped")
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if len(b) > 20_000 {
			t.Fatalf("%d-byte input: entry of %d bytes", size, len(b))
		}
		for _, f := range []string{"actor.user", "target", "reason", "details.path", "details"} {
			if !strings.Contains(e.Details[DetailClipped], f) {
				t.Fatalf("details.clipped %q lacks %s", e.Details[DetailClipped], f)
			}
		}
		if _, err := Parse(b); err != nil {
			t.Fatal(err)
		}
	}
	small := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{User: "u"}, Action: "a.b", Outcome: OutcomeSuccess, Details: map[string]string{"path": "/x"}}
	if ClipFields(small) || small.Details[DetailClipped] != "" {
		t.Fatal("a small entry was changed")
	}
}

// adversarial are the characters that grow most when encoded: escaped as
// \u00XX (HTML characters, control characters), \ufffd (invalid UTF-8),
// \u2028, or two bytes (quote, backslash, newline).
var adversarial = []string{"<", ">", "&", "\x01", "\x1f", "\xff", "\u2028", `"`, `\`, "\n", "é", "a"}

// Red team finding 1: fields were clipped to 400 bytes, but "<" is
// written \u003c, so a clipped field of "<" took 2,400 bytes in the log.
// Every field is now bounded by what it takes encoded.
func TestClipBoundsTheEncodedSize(t *testing.T) {
	for _, c := range adversarial {
		for _, n := range []int{MaxField/6 + 1, MaxField, 10_000} {
			s := strings.Repeat(c, n)
			got := Clip(s)
			if enc := encodedJSONLen(t, got); enc > MaxField {
				t.Errorf("Clip(%d × %q) takes %d bytes encoded, at most %d", n, c, enc, MaxField)
			}
			if EncodedLen(s) > MaxField && !strings.Contains(got, "…[clipped "+strconv.Itoa(len(s))+" bytes sha256:") {
				t.Errorf("Clip(%d × %q) = %q: no marker", n, c, got)
			}
		}
	}
}

// Red team finding 10: an enforcer shipped an entry of 16.5 KB of "<"
// (every field and detail under 400 bytes, so nothing was clipped); the
// server re-encoded it to 96,283 bytes, past MaxSize, and the whole batch
// failed to append. Clipped, any entry fits in MaxClippedSize.
func TestClipEntryOfEscapedCharactersFits(t *testing.T) {
	for _, c := range adversarial {
		lt := strings.Repeat(c, 399)
		e := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{SpiffeID: lt, User: lt}, Action: "authz.decision",
			Target: lt, Outcome: OutcomeDenied, Reason: lt, RequestID: lt, Source: lt, Stream: lt, Seq: 1<<64 - 1, Details: map[string]string{}}
		for i := range MaxDetails {
			e.Details[fmt.Sprintf("%02d%s", i, strings.Repeat(c, 62))] = lt
		}
		ClipFields(e)
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("%q: %v", c, err)
		}
		if len(b) > MaxClippedSize {
			t.Errorf("%q: clipped entry of %d bytes encoded, at most %d", c, len(b), MaxClippedSize)
		}
		if _, err := Parse(b); err != nil {
			t.Errorf("%q: the clipped entry does not parse back: %v", c, err)
		}
		if c != "a" && c != "é" && !strings.Contains(e.Details[DetailClipped], "details") {
			t.Errorf("%q: details.clipped = %q, want the details named", c, e.Details[DetailClipped])
		}
	}
}

// An entry with invalid UTF-8 (a request path with %FF) was written as
// \ufffd, which reads back as U+FFFD and re-encodes differently: Parse
// refused the server's own entry. Invalid bytes are written as U+FFFD.
func TestInvalidUTF8IsWrittenAsItReadsBack(t *testing.T) {
	e := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{User: "anonymous\xfe"}, Action: "admin.auth", Outcome: OutcomeDenied,
		Details: map[string]string{"path": "/v1/\xff", "b\xff": "1", "b\xfe": "2"}}
	for range 20 { // the map's order must not change the encoding
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if back.Details["path"] != "/v1/\uFFFD" || back.Details["b\uFFFD"] != "2" || back.Actor.User != "anonymous\uFFFD" {
			t.Fatalf("read back %+v", back)
		}
	}
	if e.Details["path"] != "/v1/\xff" {
		t.Fatal("Marshal changed the caller's entry")
	}
}

// An action is dotted lower-case words and is not escaped, but its length
// was not bounded: clipped, it stays an action.
func TestClipAction(t *testing.T) {
	for _, a := range []string{"a." + strings.Repeat("b", 60_000), strings.Repeat("ab.", 20_000) + "c", "x" + strings.Repeat(".y", 100)} {
		e := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{User: "u"}, Action: a, Outcome: OutcomeSuccess}
		if !ClipFields(e) || len(e.Action) > maxAction || !strings.Contains(e.Details[DetailClipped], "action") {
			t.Fatalf("action of %d bytes clipped to %d: %q", len(a), len(e.Action), e.Action)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("clipped action %q: %v", e.Action, err)
		}
	}
}

func encodedJSONLen(t testing.TB, s string) int {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return len(b) - 2
}

func FuzzEncodedLen(f *testing.F) {
	for _, c := range adversarial {
		f.Add(strings.Repeat(c, 3) + "x")
	}
	f.Add("\xf0\x9f\x98")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := EncodedLen(s), encodedJSONLen(t, s); got != want {
			t.Fatalf("EncodedLen(%q) = %d, encoding/json writes %d", s, got, want)
		}
		c := clipTo(s, 100)
		if n := encodedJSONLen(t, c); n > 100 && EncodedLen(s) > 100 {
			t.Fatalf("clipTo(%q, 100) = %q takes %d", s, c, n)
		}
	})
}

// Whatever a caller puts in an entry, clipped it encodes to at most
// MaxClippedSize, and reads back as written.
func FuzzClipFields(f *testing.F) {
	for _, c := range adversarial {
		f.Add(c, 500, 40)
	}
	f.Add("\xff<\x00\u2028", 100_000, 3)
	f.Fuzz(func(t *testing.T, unit string, n, details int) {
		if unit == "" || n < 0 || details < 0 || n*len(unit) > 1<<20 || details > 200 {
			t.Skip()
		}
		s := strings.Repeat(unit, n)
		e := &Entry{V: SchemaVersion, Time: time.Unix(1, 0), Actor: Actor{SpiffeID: s, User: s}, Action: "a.b",
			Target: s, Outcome: OutcomeDenied, Reason: s, RequestID: s, Source: s, Stream: s, Details: map[string]string{}}
		for i := range details {
			e.Details[strconv.Itoa(i)+s] = s
		}
		ClipFields(e)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxClippedSize {
			t.Fatalf("%d bytes encoded, at most %d", len(b), MaxClippedSize)
		}
		if _, err := Parse(b); err != nil {
			t.Fatal(err)
		}
	})
}
