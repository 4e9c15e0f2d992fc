package backup

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

var update = flag.Bool("update", false, "rewrite testdata/manifest-v1.txt")

// The known-answer vector's key: a test key, used nowhere else.
const (
	vectorSigner   = "PRIVATE+KEY+example.org/backup+f379438d+AQih/iGnWzpGxCFSgA69dNy+TKvUmtxJm86OxyX2GurD"
	vectorVerifier = "example.org/backup+f379438d+AbHVrjCYkmLEmJfjRf7H6YM5m5Ptjl6xm//z4PeMKbRo"
)

func vectorManifest() *Manifest {
	sha := func(c string) string { return strings.Repeat(c, 64) }
	return &Manifest{Format: ManifestFormat, Version: ManifestVersion, TrustDomain: "example.org", Seq: 7, Prev: sha("a"),
		Created:    time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC),
		Recipients: []string{"age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"},
		Store:      StoreInfo{Backend: "sqlite", SchemaVersion: 5, Tables: map[string]int64{"ca_keys": 4, "revision": 1, "policies": 2}},
		Audit:      AuditInfo{Origin: "example.org/audit", Size: 70000, Root: sha("b"), Sealed: 65536},
		KEK:        KEKInfo{Source: "file", InDataDir: true},
		Files: []File{
			{Path: "admin.token", Kind: KindSealed, Mode: "0600", Size: 60, SHA256: sha("c"), Compression: "none", Parts: []Part{{SHA256: sha("d"), Size: 300}}},
			{Path: "audit/entries.log", Kind: KindTail, Mode: "0600", Offset: 4096, Size: 1000, SHA256: sha("e"), Compression: "zstd", Parts: []Part{{SHA256: sha("f"), Size: 500}}},
			{Path: "rampart.db", Kind: KindStore, Mode: "0600", Size: 1 << 20, SHA256: sha("1"), Compression: "zstd", Parts: []Part{{SHA256: sha("2"), Size: 16 << 20}, {SHA256: sha("3"), Size: 12}}},
		}}
}

// TestManifestVector pins the manifest format: the fixed manifest encodes
// and signs to exactly testdata/manifest-v1.txt, and the file parses back
// to it. A change to the format fails here; a deliberate one needs a new
// version and a new vector (go test -run Vector -update).
func TestManifestVector(t *testing.T) {
	s, err := note.NewSigner(vectorSigner)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vectorVerifier)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := vectorManifest().Sign(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "manifest-v1.txt")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, signed, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signed, want) {
		t.Fatalf("the manifest encoding changed:\n%s\nwant:\n%s", signed, want)
	}
	m, err := ParseManifest(want, v)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, vectorManifest()) {
		t.Fatalf("parsed %+v\nwant %+v", m, vectorManifest())
	}
}

func TestParseManifestRefuses(t *testing.T) {
	s, _ := note.NewSigner(vectorSigner)
	v, _ := note.NewVerifier(vectorVerifier)
	sign := func(text string) []byte {
		b, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good, _ := vectorManifest().Encode()
	for _, tc := range []struct {
		name string
		text string
		want string
	}{
		{"not canonical", strings.Replace(string(good), "  \"seq\": 7", "  \"seq\":  7", 1), "not in canonical form"},
		{"unknown field", strings.Replace(string(good), "\"seq\": 7,", "\"seq\": 7,\n  \"extra\": 1,", 1), "unknown field"},
		{"path escapes", strings.Replace(string(good), "\"path\": \"admin.token\"", "\"path\": \"../../etc/cron.d/x\"", 1), "not a clean path inside the data directory"},
		{"absolute path", strings.Replace(string(good), "\"path\": \"admin.token\"", "\"path\": \"/etc/passwd\"", 1), "not a relative path"},
		{"no store", strings.Replace(string(good), "\"kind\": \"store\"", "\"kind\": \"file\"", 1), "0 store snapshots"},
		{"other format", strings.Replace(string(good), "rampart-backup v1", "rampart-backup v2", 1), "does not start"},
		{"bad mode", strings.Replace(string(good), "\"mode\": \"0600\"", "\"mode\": \"4777\"", 1), "mode \"4777\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseManifest(sign(tc.text), v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	vec, err := os.ReadFile(filepath.Join("testdata", "manifest-v1.txt"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(vec)
	f.Add(vec[:len(vec)/2])
	f.Add([]byte("rampart-backup v1\n{}\n\n— example.org/backup AAAA\n"))
	v, _ := note.NewVerifier(vectorVerifier)
	s, _ := note.NewSigner(vectorSigner)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b, v)
		if err != nil {
			return
		}
		// What parses re-encodes to the same signed bytes.
		again, err := m.Sign(s)
		if err != nil {
			t.Fatalf("a parsed manifest does not sign: %v", err)
		}
		if _, err := ParseManifest(again, v); err != nil {
			t.Fatalf("re-signed manifest does not parse: %v", err)
		}
		for _, f := range m.Files {
			if checkPath(f.Path) != nil {
				t.Fatalf("a path outside the data dir parsed: %q", f.Path)
			}
		}
	})
}
