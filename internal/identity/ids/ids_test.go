package ids

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestParseWorkloadID(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{in: "spiffe://example.org/orders"},
		{in: "spiffe://example.org/ns/prod/sa/orders"},
		{in: "spiffe://other.org/orders", wantErr: "is not this server's"},
		{in: "spiffe://example.org", wantErr: "needs a path"},
		{in: "spiffe://example.org/rampart", wantErr: "reserved"},
		{in: "spiffe://example.org/rampart/agent/a1", wantErr: "reserved"},
		{in: "spiffe://example.org/rampart/server", wantErr: "reserved"},
		{in: "spiffe://example.org/rampartish", wantErr: ""},
		{in: "spiffe://example.org/a/../b", wantErr: "dot segments"},
		{in: "spiffe://example.org/a//b", wantErr: "empty segments"},
		{in: "spiffe://example.org/a/", wantErr: "trailing slash"},
		{in: "spiffe://EXAMPLE.org/a", wantErr: "trust domain characters"},
		{in: "spiffe://example.org/a%2Fb", wantErr: "path segment characters"},
		{in: "https://example.org/a", wantErr: "scheme"},
		{in: "spiffe://user@example.org/a", wantErr: "trust domain characters"},
		{in: "spiffe://example.org:8080/a", wantErr: "trust domain characters"},
		{in: "spiffe://example.org/a?q=1", wantErr: "path segment characters"},
		{in: "", wantErr: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ParseWorkloadID(td, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseWorkloadID(%q) = %v, %v; want error containing %q", tt.in, id, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWorkloadID(%q): %v", tt.in, err)
			}
			if id.String() != tt.in {
				t.Fatalf("round trip %q -> %q", tt.in, id)
			}
		})
	}
}

func TestAgentID(t *testing.T) {
	id, err := AgentID(td, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://example.org/rampart/agent/node-1" || !IsAgentID(td, id) || AgentName(id) != "node-1" {
		t.Fatalf("AgentID = %v", id)
	}
	for _, bad := range []string{"", "-x", "a/b", "a b", strings.Repeat("a", 64)} {
		if _, err := AgentID(td, bad); err == nil {
			t.Errorf("AgentID(%q) accepted", bad)
		}
	}
	if IsAgentID(td, spiffeid.RequireFromString("spiffe://example.org/rampart/agent/x/y")) {
		t.Error("nested path accepted as agent")
	}
	if IsAgentID(td, spiffeid.RequireFromString("spiffe://other.org/rampart/agent/x")) {
		t.Error("foreign trust domain accepted as agent")
	}
	if _, err := ParseAgentID(td, "spiffe://example.org/orders"); err == nil {
		t.Error("workload ID accepted as agent ID")
	}
}

func FuzzParseWorkloadID(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/orders", "spiffe://example.org/rampart/agent/x", "spiffe://example.org", "spiffe://x/%41", "spiffe://example.org/a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseWorkloadID(td, s)
		if err != nil {
			return
		}
		// Anything accepted is canonical, in our domain, outside the reserved
		// namespace, and parses back to itself.
		if id.String() != s {
			t.Fatalf("accepted %q but canonical form is %q", s, id)
		}
		if id.TrustDomain() != td || IsAgentID(td, id) || strings.HasPrefix(id.Path(), "/rampart/") || id.Path() == "/rampart" {
			t.Fatalf("accepted %q outside the allowed namespace", s)
		}
		if strings.Contains(id.Path(), "//") || strings.Contains(id.Path(), "/./") || strings.Contains(id.Path(), "/../") {
			t.Fatalf("accepted non-normalised path %q", s)
		}
	})
}
