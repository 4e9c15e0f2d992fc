package scan_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/scan"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/scantest"
)

const dpkgStatus = `Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u1

Package: zlib1g
Status: install ok installed
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0-1
`

// The second layer upgrades zlib past its fix.
const dpkgStatusUpgraded = `Package: libssl3
Status: install ok installed
Source: openssl
Version: 3.0.11-1~deb12u1

Package: zlib1g
Status: install ok installed
Source: zlib (1:1.3.dfsg-1)
Version: 1:1.3.dfsg-1
`

const apkInstalled = `C:Q1abc=
P:busybox-binsh
V:1.36.1-r2
A:x86_64
o:busybox

P:musl
V:1.2.4-r2
o:musl
`

// testDB is a database with the Go records the binaries meet and
// distribution records written for the images.
func testDB(t *testing.T) osv.Source {
	t.Helper()
	need(t)
	dir := t.TempDir()
	if err := scantest.CopyRecords(vulnDir, dir, "GO-2022-1059"); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"DSA-0001-1": scantest.Record("DSA-0001-1", "Debian:12", "openssl", "3.0.13-1~deb12u1"), // affects 3.0.11-1~deb12u1
		"DSA-0002-1": scantest.Record("DSA-0002-1", "Debian:12", "zlib", "1:1.2.13.dfsg-2"),     // fixed by layer 2
		"DSA-0003-1": scantest.Record("DSA-0003-1", "Debian:11", "openssl", "3.0.99-1"),         // another release
		"ALPINE-1":   scantest.Record("ALPINE-1", "Alpine:v3.20", "busybox", "1.36.1-r5"),
		"ALPINE-2":   scantest.Record("ALPINE-2", "Alpine:v3.20", "musl", "1.2.4-r1"), // already fixed
	} {
		if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	es, err := osv.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*osv.Record
	for _, e := range es {
		recs = append(recs, e.Record)
	}
	return osv.NewIndex(osv.Meta{Source: "test"}, recs)
}

func readBin(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(bins[name])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestScanDockerSaveImage: three layers (gzip, gzip, plain): packages
// from dpkg's status as the top layer leaves it, a Go binary reached
// through the layers, one deleted by a whiteout, a directory emptied by an
// opaque whiteout, os-release through a symbolic link.
func TestScanDockerSaveImage(t *testing.T) {
	db := testDB(t)
	layers := []scantest.Layer{
		{Compress: "gzip", Entries: []scantest.Entry{
			{Name: "etc/", Dir: true},
			{Name: "etc/os-release", Link: "../usr/lib/os-release"},
			{Name: "usr/lib/os-release", Body: []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n")},
			{Name: "var/lib/dpkg/status", Body: []byte(dpkgStatus)},
			{Name: "usr/bin/called", Body: readBin(t, scantest.Called), Mode: 0o755},
			{Name: "usr/bin/notcalled", Body: readBin(t, scantest.NotCalled), Mode: 0o755},
			{Name: "opt/old/stale", Body: readBin(t, scantest.Called), Mode: 0o755},
			{Name: "usr/share/doc/readme", Body: []byte("not executable"), Mode: 0o644},
		}},
		{Compress: "gzip", Entries: []scantest.Entry{
			{Name: "usr/bin/.wh.notcalled"},
			{Name: "opt/old/.wh..wh..opq"},
			{Name: "var/lib/dpkg/status", Body: []byte(dpkgStatusUpgraded)},
		}},
		{Entries: []scantest.Entry{
			{Name: "./usr/local/bin/patched", Body: readBin(t, scantest.Patched), Mode: 0o755},
			{Name: "usr/local/bin/script.sh", Body: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755},
		}},
	}
	var buf bytes.Buffer
	if err := scantest.WriteDockerSave(&buf, "example/app:1", layers); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "app.tar")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &scan.Scanner{DB: db, TmpDir: t.TempDir()}
	rep, err := s.ScanFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kind != scan.KindImage || !strings.Contains(rep.Format, "Debian") {
		t.Errorf("kind %q format %q", rep.Kind, rep.Format)
	}
	var binPaths []string
	for _, b := range rep.Binaries {
		binPaths = append(binPaths, b.Path)
	}
	if want := []string{"/usr/bin/called", "/usr/local/bin/patched"}; !slices.Equal(binPaths, want) {
		t.Errorf("Go binaries %v, want %v (notcalled and /opt/old are whited out)", binPaths, want)
	}
	got := map[string]scan.Finding{}
	for _, f := range rep.Findings {
		got[f.ID+" "+f.Artifact] = f
	}
	want := map[string]string{
		"DSA-0001-1 " + file:                        scan.Unknown,
		"GO-2022-1059 " + file + ":/usr/bin/called": scan.Called,
	}
	if len(got) != len(want) {
		t.Errorf("findings %v, want %v", keys(got), want)
	}
	for k, reach := range want {
		if f, ok := got[k]; !ok || f.Reachability != reach {
			t.Errorf("finding %s: %+v, want reachability %s", k, f, reach)
		}
	}
	if f := got["DSA-0001-1 "+file]; f.Severity.Level != osv.Critical || f.Package != "openssl" || f.Version != "3.0.11-1~deb12u1" {
		t.Errorf("DSA-0001-1: %+v, want openssl 3.0.11-1~deb12u1 rated CRITICAL from its CVSS vector", f)
	}
}

// TestScanOCIImage: an OCI layout, zstd and gzip layers, Alpine packages
// named by their origin.
func TestScanOCIImage(t *testing.T) {
	db := testDB(t)
	layers := []scantest.Layer{
		{Compress: "zstd", Entries: []scantest.Entry{
			{Name: "etc/os-release", Body: []byte("ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n")},
			{Name: "lib/apk/db/installed", Body: []byte(apkInstalled)},
		}},
		{Compress: "gzip", Entries: []scantest.Entry{
			{Name: "app", Body: readBin(t, scantest.NotCalled), Mode: 0o755},
		}},
	}
	var buf bytes.Buffer
	if err := scantest.WriteOCI(&buf, layers); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "oci.tar")
	os.WriteFile(file, buf.Bytes(), 0o644)
	rep, err := (&scan.Scanner{DB: db, TmpDir: t.TempDir()}).ScanFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range rep.Findings {
		got[f.ID] = f.Reachability + " " + f.Package + " " + f.Version
	}
	want := map[string]string{"ALPINE-1": "unknown busybox 1.36.1-r2", "GO-2022-1059": "not-called golang.org/x/text v0.3.7"}
	if len(got) != len(want) || got["ALPINE-1"] != want["ALPINE-1"] || got["GO-2022-1059"] != want["GO-2022-1059"] {
		t.Errorf("findings %v, want %v", got, want)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestScanSBOMs: CycloneDX (nested components) and SPDX documents.
func TestScanSBOMs(t *testing.T) {
	db := testDB(t)
	cdx := `{"bomFormat":"CycloneDX","specVersion":"1.5","components":[
	  {"type":"library","name":"golang.org/x/text","version":"v0.3.7","purl":"pkg:golang/golang.org/x/text@v0.3.7",
	   "components":[{"type":"library","name":"openssl","purl":"pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&upstream=openssl&distro=debian-12"}]},
	  {"type":"library","name":"musl","purl":"pkg:apk/alpine/musl@1.2.4-r2?distro=3.20.3"},
	  {"type":"file","name":"no purl"}]}`
	spdx := `{"spdxVersion":"SPDX-2.3","packages":[
	  {"name":"busybox","externalRefs":[{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:apk/alpine/busybox@1.36.1-r2?distro=alpine-3.20.3"}]},
	  {"name":"text","externalRefs":[{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:golang/golang.org/x/text@v0.3.8"}]}]}`
	s := &scan.Scanner{DB: db}
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"cyclonedx", cdx, []string{"DSA-0001-1", "GO-2022-1059"}},
		{"spdx", spdx, []string{"ALPINE-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := s.ScanSBOM([]byte(tc.doc), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range rep.Findings {
				got = append(got, f.ID)
				if f.Reachability != scan.Unknown {
					t.Errorf("%s from an SBOM: reachability %s, want unknown", f.ID, f.Reachability)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("findings %v, want %v", got, tc.want)
			}
		})
	}
}
