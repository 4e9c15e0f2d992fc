package auditentry

import (
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
