package registration

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseEntryFile(t *testing.T) {
	yamlDoc := `
entries:
  - spiffe_id: spiffe://example.org/orders
    parent_id: spiffe://example.org/rampart/agent/node-1
    selectors: [unix:uid:1001, "unix:path:/usr/bin/orders"]
    x509_ttl: 1h
    jwt_ttl: 5m
    dns_names: [orders.internal]
    hint: internal
    admin: true
    expires_at: 2027-01-31T00:00:00Z
    federates_with: [partner.example]
  - id: 0123abcd
    spiffe_id: spiffe://example.org/web
    parent_id: spiffe://example.org/rampart/agent/node-2
    selectors: [unix:gid:50]
`
	got, err := ParseEntryFile([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	want := []FileEntry{
		{Spec: EntrySpec{SpiffeID: "spiffe://example.org/orders", ParentID: "spiffe://example.org/rampart/agent/node-1",
			Selectors: []string{"unix:uid:1001", "unix:path:/usr/bin/orders"}, X509TTLSeconds: 3600, JWTTTLSeconds: 300,
			DNSNames: []string{"orders.internal"}, Hint: "internal", Admin: true, ExpiresAt: time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC),
			FederatesWith: []string{"partner.example"}}},
		{ID: "0123abcd", Spec: EntrySpec{SpiffeID: "spiffe://example.org/web", ParentID: "spiffe://example.org/rampart/agent/node-2",
			Selectors: []string{"unix:gid:50"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// SPIRE's export (spire-server entry show -output json / create -data).
	spire := `{"entries": [{"entry_id": "e1", "spiffe_id": "spiffe://example.org/orders", "parent_id": "spiffe://example.org/rampart/agent/node-1",
	  "selectors": [{"type": "unix", "value": "uid:1001"}], "x509_svid_ttl": 3600, "jwt_svid_ttl": 300, "downstream": true,
	  "expires_at": 1800000000, "dns_names": [], "hint": "", "federates_with": ["spiffe://partner.example"]}]}`
	got, err = ParseEntryFile([]byte(spire))
	if err != nil {
		t.Fatal(err)
	}
	if e := got[0]; e.ID != "e1" || e.Spec.Selectors[0] != "unix:uid:1001" || e.Spec.X509TTLSeconds != 3600 || !e.Spec.Downstream ||
		!e.Spec.ExpiresAt.Equal(time.Unix(1800000000, 0)) || len(e.Spec.FederatesWith) != 1 || e.Spec.FederatesWith[0] != "spiffe://partner.example" {
		t.Fatalf("SPIRE form: %+v", e)
	}
	// A bare list is a file too.
	if got, err := ParseEntryFile([]byte(`[{spiffe_id: spiffe://example.org/a}]`)); err != nil || len(got) != 1 {
		t.Fatalf("bare list: %v %v", got, err)
	}
}

// Each bad file is refused with the line and the entry's field.
func TestParseEntryFileErrors(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"entries:\n  - spiffe_id: a\n  - spife_id: b\n", `line 3: entries[1]: unknown field "spife_id"`},
		{"entries:\n  - spiffe_id: a\n    spiffe_id: b\n", `line 3: entries[0]: field "spiffe_id" given twice`},
		{"- selectors: unix:uid:1\n", "line 1: entries[0].selectors: want a list of selectors"},
		{"- selectors: [{type: unix}]\n", "entries[0].selectors[0]: a selector object needs type and value"},
		{"- admin: yes please\n", "entries[0].admin: want true or false"},
		{"- x509_ttl: 1500ms\n", "entries[0].x509_ttl: want a duration of whole seconds"},
		{"- x509_ttl: 1h\n  x509_svid_ttl: 60\n", "the X.509 TTL is given twice"},
		{"- x509_svid_ttl: -5\n", "entries[0].x509_svid_ttl: want whole seconds"},
		{"- expires_at: tomorrow\n", "entries[0].expires_at: want an RFC 3339 time"},
		{"- id: a\n  entry_id: b\n", "give id or entry_id, not both"},
		{"- spiffe_id: [a]\n", "entries[0].spiffe_id: want a string"},
		{"- spiffe_id: null\n", "entries[0].spiffe_id: want a string"},
		{"entries: 3\n", "want a list of entries"},
		{"other: []\n", `unknown field "other"`},
		{"", "want a list of entries"},
		{"- [1, 2]\n", "entries[0]"},
		{"{", "entry file"},
	}
	for _, tt := range tests {
		_, err := ParseEntryFile([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error containing %q", tt.doc, err, tt.want)
		}
	}
}

func FuzzParseEntryFile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/entries-*")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[{"spiffe_id": "spiffe://example.org/a", "selectors": [{"type": "unix", "value": "uid:1"}], "expires_at": 99}]`))
	f.Add([]byte("entries:\n  - &a {hint: x}\n  - *a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseEntryFile(b)
		if err != nil {
			return
		}
		if len(es) > MaxBatch {
			t.Fatalf("%d entries accepted", len(es))
		}
		for _, e := range es {
			if e.Spec.X509TTLSeconds < 0 || e.Spec.JWTTTLSeconds < 0 {
				t.Fatalf("negative TTL accepted: %+v", e)
			}
		}
	})
}
