package audit

import "testing"

func TestFilterSource(t *testing.T) {
	server := &Entry{Source: "server"}
	oauth := &Entry{Source: "oauth"}
	proxy := &Entry{Source: "spiffe://example.org/orders"}
	for _, tc := range []struct {
		source string
		want   [3]bool
	}{
		{"", [3]bool{true, true, true}},
		{SourceServer, [3]bool{true, true, false}},
		{SourceShipped, [3]bool{false, false, true}},
		{"spiffe://example.org/*", [3]bool{false, false, true}},
	} {
		f := Filter{Source: tc.source}
		if err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		for i, e := range []*Entry{server, oauth, proxy} {
			if f.Match(e) != tc.want[i] {
				t.Errorf("source filter %q on %q: %v", tc.source, e.Source, !tc.want[i])
			}
		}
	}
}
