package pkgs

import (
	"strings"
	"testing"
)

func TestFromPURL(t *testing.T) {
	for in, want := range map[string]Package{
		"pkg:golang/golang.org/x/text@v0.3.7":                                       {Ecosystem: "Go", Name: "golang.org/x/text", Version: "v0.3.7"},
		"pkg:golang/stdlib@go1.21.3":                                                {Ecosystem: "Go", Name: "stdlib", Version: "v1.21.3"},
		"pkg:deb/debian/libssl3@3.0.11-1~deb12u1?upstream=openssl&distro=debian-12": {Ecosystem: "Debian:12", Name: "openssl", Binary: "libssl3", Version: "3.0.11-1~deb12u1"},
		"pkg:deb/ubuntu/bash@5.1-6ubuntu1?distro=ubuntu-22.04":                      {Ecosystem: "Ubuntu:22.04", Name: "bash", Version: "5.1-6ubuntu1"},
		"pkg:apk/alpine/busybox-binsh@1.36.1-r2?upstream=busybox&distro=3.20.3":     {Ecosystem: "Alpine:v3.20", Name: "busybox", Binary: "busybox-binsh", Version: "1.36.1-r2"},
		"pkg:npm/%40scope/name@1.0.0":                                               {Ecosystem: "npm", Name: "@scope/name", Version: "1.0.0"},
		"pkg:maven/org.apache/log4j-core@2.14.1":                                    {Ecosystem: "Maven", Name: "org.apache:log4j-core", Version: "2.14.1"},
	} {
		got, ok, err := FromPURL(in)
		got.PURL = ""
		if err != nil || !ok || got != want {
			t.Errorf("FromPURL(%s) = %+v, %v, %v; want %+v", in, got, ok, err, want)
		}
	}
	for _, bad := range []string{"golang/x@1", "pkg:", "pkg:golang", "pkg:npm/%zz@1"} {
		if _, _, err := FromPURL(bad); err == nil {
			t.Errorf("FromPURL(%q) accepted", bad)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"dpkg no version", func() error {
			_, err := ParseDpkgStatus([]byte("Package: a\nStatus: install ok installed\n"), "Debian:12")
			return err
		}, "no Package or Version"},
		{"dpkg bad version", func() error {
			_, err := ParseDpkgStatus([]byte("Package: a\nVersion: !!\n"), "Debian:12")
			return err
		}, "package a"},
		{"dpkg garbage", func() error { _, err := ParseDpkgStatus([]byte("\x00\x01 not a field\n"), ""); return err }, "line 1"},
		{"apk no version", func() error { _, err := ParseApkInstalled([]byte("P:busybox\n"), ""); return err }, "no P: or V:"},
		{"sbom not json", func() error { _, err := ParseSBOM([]byte("{bomFormat")); return err }, "not a JSON SBOM"},
		{"sbom unknown", func() error { _, err := ParseSBOM([]byte(`{"components":[]}`)); return err }, "not a CycloneDX"},
		{"cyclonedx bad purl", func() error {
			_, err := ParseSBOM([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":"x","purl":"pkg:"}]}`))
			return err
		}, "component 0 (x)"},
		{"cyclonedx no spec", func() error { _, err := ParseSBOM([]byte(`{"bomFormat":"CycloneDX"}`)); return err }, "specVersion"},
		{"spdx wrong type", func() error { _, err := ParseSBOM([]byte(`{"spdxVersion":"SPDX-2.3","packages":{}}`)); return err }, "SPDX"},
		{"cyclonedx deep", func() error {
			_, err := ParseSBOM([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","components":` + strings.Repeat(`[{"components":`, 70) + `[]` + strings.Repeat(`}]`, 70) + `}`))
			return err
		}, "nested"},
	} {
		if err := tc.run(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestOSRelease(t *testing.T) {
	for in, want := range map[string]string{
		"ID=debian\nVERSION_ID=\"12\"\n":    "Debian:12",
		"ID=ubuntu\nVERSION_ID=\"22.04\"\n": "Ubuntu:22.04",
		"ID=alpine\nVERSION_ID=3.20.3\n":    "Alpine:v3.20",
		"ID=debian\n":                       "", // testing/sid: no release
		"ID=fedora\nVERSION_ID=40\n":        "",
	} {
		if got := ParseOSRelease([]byte(in)).Ecosystem(); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func FuzzParseSBOM(f *testing.F) {
	f.Add([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":"x","purl":"pkg:golang/a.b/c@v1.0.0","components":[{"purl":"pkg:deb/debian/a@1.0-1?distro=debian-12"}]}]}`))
	f.Add([]byte(`{"spdxVersion":"SPDX-2.3","packages":[{"name":"b","externalRefs":[{"referenceType":"purl","referenceLocator":"pkg:apk/alpine/b@1.0-r1?distro=3.20.1"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseSBOM(b); err == nil && s == nil {
			t.Fatal("nil SBOM without error")
		}
	})
}

func FuzzParseDatabases(f *testing.F) {
	f.Add([]byte("Package: libssl3\nStatus: install ok installed\nSource: openssl (3.0.11-1)\nVersion: 3.0.11-1~deb12u1\n\nPackage: b\nVersion: 1:2.0\n"))
	f.Add([]byte("P:busybox\nV:1.36.1-r2\no:busybox\n\nP:musl\nV:1.2.4_rc1-r2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseDpkgStatus(b, "Debian:12")
		ParseApkInstalled(b, "Alpine:v3.20")
		ParseOSRelease(b).Ecosystem()
		FromPURL(string(b))
	})
}
