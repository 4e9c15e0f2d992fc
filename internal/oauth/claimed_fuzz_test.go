package oauth

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzClaimed: whatever a caller sends as its client ID, what the audit
// log records of it is one quoted, escaped line of bounded length that
// begins with the caller's first bytes.
func FuzzClaimed(f *testing.F) {
	for _, s := range []string{"", "web", "web\nrevoked", `"quoted"`, strings.Repeat("revoked ", 2000), "\xff\xfe\x00", "ü" + strings.Repeat("é", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := claimed(s)
		if !strings.HasPrefix(c, `"`) {
			t.Fatalf("claimed(%q) = %q: not quoted", s, c)
		}
		if len(c) > 4*maxClaimedLen+40 {
			t.Fatalf("claimed(%d bytes) is %d bytes", len(s), len(c))
		}
		for _, r := range c {
			if unicode.IsControl(r) {
				t.Fatalf("claimed(%q) = %q: carries control character %U", s, c, r)
			}
		}
	})
}
