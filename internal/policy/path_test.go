package policy

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "/", want: "/"},
		{in: "/payments/42", want: "/payments/42"},
		{in: "/a/../b", want: "/b"},
		{in: "/a/%2e%2e/b", want: "/b"},
		{in: "/a/%2E%2E/b", want: "/b"},
		{in: "/a/./b", want: "/a/b"},
		{in: "//admin", want: "/admin"},
		{in: "/a//b///c", want: "/a/b/c"},
		{in: "/a/b/", want: "/a/b/"},
		{in: "/a/b/.", want: "/a/b/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/%41dmin", want: "/Admin"},
		{in: "/%7e/x", want: "/~/x"},
		{in: "/a%20b", want: "/a%20b"},
		{in: "/a%3fb", want: "/a%3Fb"},
		{in: "/..", wantErr: "above the root"},
		{in: "/a/../..", wantErr: "above the root"},
		{in: "/%2e%2e/etc", wantErr: "above the root"},
		{in: "/a%2Fb", wantErr: `encoded "/"`},
		{in: "/a%2fb", wantErr: `encoded "/"`},
		{in: "/a%5Cb", wantErr: `encoded "\\"`},
		{in: "/a\\b", wantErr: "backslash"},
		{in: "/public/..;/admin", wantErr: "';' path parameters"},
		{in: "/admin;jsessionid=1", wantErr: "';' path parameters"},
		{in: "/a/%2e%2e;x/b", wantErr: "';' path parameters"},
		{in: "/a%3Bb", want: "/a%3Bb"}, // an encoded ';' is data, not a parameter
		{in: "/a%00b", wantErr: "control"},
		{in: "/a\x01b", wantErr: "control"},
		{in: "/a%zz", wantErr: "invalid percent-escape"},
		{in: "/a%4", wantErr: "truncated"},
		{in: "a/b", wantErr: "must start with /"},
		{in: "", wantErr: "must start with /"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizePath(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizePath(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/a/%2e%2e/b", "//admin", "/%41", "/a%2Fb", "/a/b/", "/.%2e/x", "/%25%32%66"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizePath(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.Contains(got, "//") {
			t.Fatalf("%q -> %q: not a clean absolute path", raw, got)
		}
		for seg := range strings.SplitSeq(got, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q: dot segment left", raw, got)
			}
		}
		again, err := NormalizePath(got)
		if err != nil || again != got {
			t.Fatalf("%q -> %q -> %q, %v: not a fixed point", raw, got, again, err)
		}
	})
}
