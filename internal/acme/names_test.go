package acme

import (
	"strings"
	"testing"
)

func TestPatterns(t *testing.T) {
	pats, err := ParsePatterns([]string{"*.internal.example.org", "api.example.org", "10.1.0.0/16", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(typ, v string) bool { return anyAllows(pats, identifier{typ, v}) }
	for _, tc := range []struct {
		typ, v string
		want   bool
	}{
		{"dns", "a.internal.example.org", true},
		{"dns", "a.b.internal.example.org", true},
		{"dns", "internal.example.org", false}, // *. is strictly below
		{"dns", "xinternal.example.org", false},
		{"dns", "*.internal.example.org", true},
		{"dns", "*.a.internal.example.org", true},
		{"dns", "*.example.org", false}, // covers names outside the subtree
		{"dns", "api.example.org", true},
		{"dns", "www.api.example.org", false}, // exact means exact
		{"dns", "*.api.example.org", false},
		{"ip", "10.1.255.255", true},
		{"ip", "10.2.0.1", false},
		{"ip", "192.0.2.7", true},
		{"ip", "192.0.2.8", false},
		{"ip", "2001:db8::1", true},
		{"dns", "10.1.0.1", false},
	} {
		if got := allowed(tc.typ, tc.v); got != tc.want {
			t.Errorf("%s %s: allowed %v, want %v", tc.typ, tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, err string }{
		{"", "empty"},
		{"*", "whole first label"},
		{"a.*.example.org", "whole first label"},
		{"**.example.org", "whole first label"},
		{"Ex ample.org", "letter-digit-hyphen"},
		{"10.1.2.3/16", "host bits set; did you mean 10.1.0.0/16"},
		{"10.1.0.0/33", "10.1.0.0/33"},
		{"example.org.", "no trailing dot"},
	} {
		_, err := ParsePatterns([]string{tc.in})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

// The server's own names are refused, also when a wildcard would cover
// them.
func TestDeniedNames(t *testing.T) {
	denied, _ := ParsePatterns([]string{"localhost", "rampart.corp.example", "127.0.0.0/8", "::1"})
	allow, _ := ParsePatterns([]string{"*.corp.example", "*.localhost", "127.0.0.0/8", "::/0"})
	pol := policy{server: allow, denied: denied}
	for _, tc := range []struct {
		typ, v string
		denied bool
	}{
		{"dns", "rampart.corp.example", true},
		{"dns", "*.corp.example", true},
		{"dns", "web.corp.example", false},
		{"dns", "*.web.corp.example", false},
		{"dns", "a.localhost", false},
		{"ip", "127.0.0.1", true},
		{"ip", "127.9.9.9", true},
		{"ip", "::1", true},
	} {
		r := pol.refuse(identifier{tc.typ, tc.v})
		if got := strings.Contains(r, "server's own name"); got != tc.denied {
			t.Errorf("%s: refusal %q, denied want %v", tc.v, r, tc.denied)
		}
	}
	if r := (policy{}).refuse(identifier{"dns", "a.example.org"}); !strings.Contains(r, "no names are allowed") {
		t.Errorf("no patterns at all: %q", r)
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in   identifier
		want string
		err  string
	}{
		{identifier{"dns", "Web.Example.ORG"}, "web.example.org", ""},
		{identifier{"dns", "*.Example.org"}, "*.example.org", ""},
		{identifier{"dns", "*.org"}, "", "two labels"},
		{identifier{"dns", "-a.example.org"}, "", "label"},
		{identifier{"dns", "a_b.example.org"}, "", "label"},
		{identifier{"dns", "example.123"}, "", "all digits"},
		{identifier{"dns", strings.Repeat("a.", 127) + "org"}, "", "1 to 253"},
		{identifier{"ip", "2001:DB8::1"}, "", "canonical"},
		{identifier{"ip", "2001:db8::1"}, "2001:db8::1", ""},
		{identifier{"ip", "fe80::1%eth0"}, "", "not an IP address"},
		{identifier{"ip", "1.2.3"}, "", "not an IP address"},
		{identifier{"DNS", "a.example.org"}, "", "not supported"},
	} {
		got, p := normalize(tc.in)
		switch {
		case tc.err == "" && (p != nil || got.Value != tc.want):
			t.Errorf("%+v: %+v %v, want %s", tc.in, got, p, tc.want)
		case tc.err != "" && (p == nil || !strings.Contains(p.Detail, tc.err)):
			t.Errorf("%+v: problem %v, want %q", tc.in, p, tc.err)
		}
	}
}
