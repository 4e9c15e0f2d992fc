package osv

import (
	"strings"
	"testing"
)

func TestCompareDpkg(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0", "1.0-0", 0},
		{"1.0", "1.0-1", -1},
		{"1.0~rc1", "1.0", -1},
		{"1.0~~", "1.0~", -1},
		{"1:0.1", "2.0", 1},
		{"0:2.0", "2.0", 0},
		{"1.0a", "1.0", 1},
		{"1.0+b1", "1.0", 1},
		{"1.0.0", "1.0", 1},
		{"1.10", "1.9", 1},
		{"1.010", "1.10", 0},
		{"2.36-9", "2.36-9+deb12u4", -1},
		{"3.0.11-1~deb12u1", "3.0.11-1", -1},
		{"3.0.11-1~deb12u1", "3.0.13-1~deb12u1", -1},
		{"1:1.2.13.dfsg-1", "1:1.2.13.dfsg-2", -1},
		{"1:1.3.dfsg-1", "1:1.2.13.dfsg-2", 1},
	} {
		got, err := CompareDpkg(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("CompareDpkg(%q, %q) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
		if back, _ := CompareDpkg(tc.b, tc.a); back != -tc.want {
			t.Errorf("CompareDpkg(%q, %q) = %d; want %d", tc.b, tc.a, back, -tc.want)
		}
	}
	for _, bad := range []string{"", "x1.0", "a:1.0", "1.0-", "1.0 beta", "1.0/2"} {
		if _, err := CompareDpkg(bad, "1.0"); err == nil {
			t.Errorf("CompareDpkg(%q) accepted", bad)
		}
	}
}

func TestCompareApk(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.36.1-r2", "1.36.1-r5", -1},
		{"1.36.1-r2", "1.36.1-r2", 0},
		{"1.36.1", "1.36.1-r0", 0},
		{"1.2.4_rc1", "1.2.4", -1},
		{"1.2.4_alpha", "1.2.4_beta", -1},
		{"1.2.4_p1", "1.2.4", 1},
		{"1.2.4_git20230101", "1.2.4_p1", -1},
		{"1.2.4a", "1.2.4", 1},
		{"1.2.10", "1.2.9", 1},
		{"1.2", "1.2.1", -1},
		{"1.02", "1.1", -1},
		{"2.0_rc1-r3", "2.0-r0", -1},
		{"1.0~abc123", "1.0", 0},
	} {
		got, err := CompareApk(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("CompareApk(%q, %q) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
		if back, _ := CompareApk(tc.b, tc.a); back != -tc.want {
			t.Errorf("CompareApk(%q, %q) = %d; want %d", tc.b, tc.a, back, -tc.want)
		}
	}
	for _, bad := range []string{"", "a1", "1.0_zeta", "1.0-rX", "1..2"} {
		if _, err := CompareApk(bad, "1.0"); err == nil {
			t.Errorf("CompareApk(%q) accepted", bad)
		}
	}
}

func TestGoVersionToSemver(t *testing.T) {
	for in, want := range map[string]string{
		"go1.21.3": "1.21.3", "go1.21": "1.21.0", "go1.22rc1": "1.22.0-rc.1", "go1.21beta2": "1.21.0-beta.2",
		"go1.26.8 X:nodwarf5": "1.26.8", "devel go1.23-abc": "", "1.21": "", "go2": "",
	} {
		if got := GoVersionToSemver(in); got != want {
			t.Errorf("GoVersionToSemver(%q) = %q, want %q", in, got, want)
		}
	}
}

const stdlibRecord = `{"schema_version":"1.3.1","id":"GO-2026-6599","modified":"0001-01-01T00:00:00Z",
 "affected":[{"package":{"name":"stdlib","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[
   {"introduced":"0"},{"fixed":"1.25.13"},{"introduced":"1.26.0-0"},{"fixed":"1.26.9"},{"introduced":"1.27.0-0"},{"fixed":"1.27.2"}]}]}]}`

func TestAffectsRanges(t *testing.T) {
	r, err := Parse([]byte(stdlibRecord))
	if err != nil {
		t.Fatal(err)
	}
	a := &r.Affected[0]
	for v, want := range map[string]bool{
		"1.20.0": true, "1.25.12": true, "1.25.13": false, "1.25.99": false, "1.26.0-rc.1": true,
		"1.26.0": true, "1.26.8": true, "1.26.9": false, "1.27.0-rc.3": true, "1.27.2": false, "1.28.0": false,
	} {
		got, err := a.Affects(v)
		if err != nil || got != want {
			t.Errorf("Affects(%s) = %v, %v; want %v", v, got, err, want)
		}
	}
	if got := a.FixedVersions("1.26.8"); len(got) != 2 || got[0] != "1.26.9" || got[1] != "1.27.2" {
		t.Errorf("FixedVersions(1.26.8) = %v", got)
	}
	la := &Affected{Package: Package{Ecosystem: "Debian:12", Name: "x"}, Ranges: []Range{{Type: "ECOSYSTEM",
		Events: []Event{{Introduced: "1.0-1"}, {LastAffected: "1.2-1"}}}}, Versions: []string{"0.9-1"}}
	for v, want := range map[string]bool{"0.8-1": false, "0.9-1": true, "1.0-1": true, "1.2-1": true, "1.2-1+b1": false} {
		if got, err := la.Affects(v); err != nil || got != want {
			t.Errorf("last_affected: Affects(%s) = %v, %v; want %v", v, got, err, want)
		}
	}
	pypi := &Affected{Package: Package{Ecosystem: "PyPI", Name: "x"}, Ranges: []Range{{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}}}}}
	if _, err := pypi.Affects("1.0"); err != ErrUnordered {
		t.Errorf("PyPI range: %v, want ErrUnordered (never guessed)", err)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"not json", `{"id":`, "not an OSV record"},
		{"trailing", `{"id":"A-1","schema_version":"1"} {}`, "data after"},
		{"no id", `{"schema_version":"1.6.0"}`, "no id"},
		{"path id", `{"id":"../etc/passwd","schema_version":"1"}`, "not a plain identifier"},
		{"no date", `{"id":"A-1"}`, "no modified time"},
		{"two keys", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}`, "exactly one"},
		{"no introduced", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1.0.0"}]}]}]}`, "no introduced"},
		{"bad semver", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"one"}]}]}]}`, "not a semantic version"},
		{"bad debian", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Debian:12","name":"m"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"x:1"}]}]}]}`, "epoch"},
		{"range type", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"CALVER","events":[{"introduced":"0"}]}]}]}`, "unknown range type"},
		{"no ecosystem", `{"id":"A-1","schema_version":"1","affected":[{"package":{"name":"m"}}]}`, "no ecosystem"},
		{"imports", `{"id":"A-1","schema_version":"1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ecosystem_specific":{"imports":"x"}}]}`, "ecosystem_specific"},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestCVSS3(t *testing.T) {
	for v, want := range map[string]float64{
		"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H": 9.8,
		"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H": 7.5,
		"CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N": 6.4,
		"CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H": 7.8,
		"CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N": 3.1,
		"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N": 0,
	} {
		got, err := CVSS3BaseScore(v)
		if err != nil || got != want {
			t.Errorf("CVSS3BaseScore(%s) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, bad := range []string{"CVSS:2.0/AV:N", "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H"} {
		if _, err := CVSS3BaseScore(bad); err == nil {
			t.Errorf("CVSS3BaseScore(%s) accepted", bad)
		}
	}
	r := &Record{DatabaseSpecific: []byte(`{"severity":"MODERATE"}`)}
	if got := r.Rate().Level; got != Medium {
		t.Errorf("GitHub MODERATE rated %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(stdlibRecord))
	f.Add([]byte(`{"id":"DSA-1","schema_version":"1","affected":[{"package":{"ecosystem":"Debian:12","name":"m"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.0-1~deb12u1"}]}],"versions":["0.9-1"]}]}`))
	f.Add([]byte(`{"id":"ALPINE-1","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Alpine:v3.20","name":"m"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"1.0_rc1-r2"}]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		r.Rate()
		for i := range r.Affected {
			for _, v := range []string{"0.1", "1.0-1", "1.0_rc1-r2", "1.26.8"} {
				r.Affected[i].Affects(v)
				r.Affected[i].FixedVersions(v)
			}
		}
	})
}

// FuzzCompare: whatever two versions parse, the order is antisymmetric.
func FuzzCompare(f *testing.F) {
	f.Add("1:2.36-9+deb12u4", "2.36-9~bpo1")
	f.Add("1.36.1_rc2_p3-r2", "1.36.1a-r10")
	f.Fuzz(func(t *testing.T, a, b string) {
		for name, cmp := range map[string]func(a, b string) (int, error){"dpkg": CompareDpkg, "apk": CompareApk} {
			x, err1 := cmp(a, b)
			y, err2 := cmp(b, a)
			if err1 == nil && err2 == nil && x != -y {
				t.Errorf("%s: cmp(%q,%q)=%d but cmp(%q,%q)=%d", name, a, b, x, b, a, y)
			}
		}
	})
}
