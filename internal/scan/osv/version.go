package osv

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// Ecosystem names, as OSV spells them.
const (
	Go     = "Go"
	Debian = "Debian"
	Ubuntu = "Ubuntu"
	Alpine = "Alpine"
)

// Go's standard library and command, as the Go database names them.
const (
	GoStdlib    = "stdlib"
	GoToolchain = "toolchain"
)

// ErrUnordered says an ECOSYSTEM range was not evaluated: this package
// does not know how that ecosystem orders its versions.
var ErrUnordered = errors.New("osv: the versions of this ecosystem cannot be ordered here")

// BaseEcosystem strips the release from an ecosystem ("Debian:12" is
// "Debian").
func BaseEcosystem(eco string) string {
	base, _, _ := strings.Cut(eco, ":")
	return base
}

// compareFunc orders two versions of one ecosystem.
type compareFunc func(a, b string) (int, error)

// comparator returns the ordering for an ecosystem's ranges of a type, or
// nil when it is unknown.
func comparator(eco, rangeType string) compareFunc {
	if rangeType == "SEMVER" {
		return compareSemver
	}
	switch BaseEcosystem(eco) {
	case Go:
		return compareSemver
	case Debian, Ubuntu:
		return CompareDpkg
	case Alpine:
		return CompareApk
	}
	return nil
}

func checkVersion(eco, rangeType, v string) error {
	cmp := comparator(eco, rangeType)
	if cmp == nil {
		return nil // kept, evaluated only through "versions"
	}
	_, err := cmp(v, v)
	return err
}

// compareSemver orders OSV SEMVER versions, which have no "v" prefix.
func compareSemver(a, b string) (int, error) {
	va, vb := "v"+strings.TrimPrefix(a, "v"), "v"+strings.TrimPrefix(b, "v")
	if !semver.IsValid(va) {
		return 0, fmt.Errorf("osv: %q is not a semantic version", a)
	}
	if !semver.IsValid(vb) {
		return 0, fmt.Errorf("osv: %q is not a semantic version", b)
	}
	return semver.Compare(va, vb), nil
}

// GoVersionToSemver turns a Go release name ("go1.21.3", "go1.22rc1",
// "go1.21", "go1.26.8 X:nodwarf5") into the semantic version the Go
// database uses for stdlib ("1.21.3", "1.22.0-rc.1", "1.21.0"). It returns
// "" for a development build or anything else it cannot read.
func GoVersionToSemver(v string) string {
	v, _, _ = strings.Cut(v, " ")
	v, _, _ = strings.Cut(v, "+")
	if !strings.HasPrefix(v, "go1") {
		return ""
	}
	v = strings.TrimPrefix(v, "go")
	pre := ""
	for _, p := range []string{"rc", "beta", "alpha"} {
		if i := strings.Index(v, p); i > 0 {
			pre = "-" + p + "." + v[i+len(p):]
			v = v[:i]
			break
		}
	}
	parts := strings.Split(v, ".")
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	if len(parts) != 3 {
		return ""
	}
	out := strings.Join(parts, ".") + pre
	if !semver.IsValid("v" + out) {
		return ""
	}
	return out
}

// CompareDpkg orders two Debian versions as dpkg does
// (deb-version(7), lib/dpkg/version.c).
func CompareDpkg(a, b string) (int, error) {
	pa, err := parseDpkg(a)
	if err != nil {
		return 0, err
	}
	pb, err := parseDpkg(b)
	if err != nil {
		return 0, err
	}
	if pa.epoch != pb.epoch {
		if pa.epoch < pb.epoch {
			return -1, nil
		}
		return 1, nil
	}
	if c := verrevcmp(pa.upstream, pb.upstream); c != 0 {
		return sign(c), nil
	}
	return sign(verrevcmp(pa.revision, pb.revision)), nil
}

type dpkgVersion struct {
	epoch              uint64
	upstream, revision string
}

func parseDpkg(v string) (dpkgVersion, error) {
	var d dpkgVersion
	s := strings.TrimSpace(v)
	if s == "" {
		return d, errors.New("osv: empty Debian version")
	}
	if e, rest, ok := strings.Cut(s, ":"); ok {
		n, err := strconv.ParseUint(e, 10, 32)
		if err != nil {
			return d, fmt.Errorf("osv: Debian version %q: epoch %q is not a number", v, e)
		}
		d.epoch, s = n, rest
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		d.upstream, d.revision = s[:i], s[i+1:]
		if d.revision == "" {
			return d, fmt.Errorf("osv: Debian version %q: empty revision", v)
		}
	} else {
		d.upstream = s
	}
	if d.upstream == "" || !isDigit(d.upstream[0]) {
		return d, fmt.Errorf("osv: Debian version %q: the upstream version must start with a digit", v)
	}
	for _, c := range []byte(d.upstream + d.revision) {
		if !isDigit(c) && !isAlpha(c) && !strings.ContainsRune(".+~-:", rune(c)) {
			return d, fmt.Errorf("osv: Debian version %q: invalid character %q", v, c)
		}
	}
	return d, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// order is dpkg's character weight: '~' before the end of the string,
// which is before letters, which are before everything else.
func order(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		firstDiff := 0
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := order(a, i), order(b, j)
			if ac != bc {
				return ac - bc
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		for i < len(a) && isDigit(a[i]) && j < len(b) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return firstDiff
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// apk suffixes in order; "" (none) sits between the pre-releases and the
// post-releases.
var apkSuffixes = map[string]int{"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "": 5, "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10}

type apkVersion struct {
	nums     []string // digit runs, leading zeros kept
	letter   byte
	suffixes [][2]uint64 // kind, number
	rev      uint64
}

func parseApk(v string) (apkVersion, error) {
	var p apkVersion
	s := v
	if s == "" {
		return p, errors.New("osv: empty Alpine version")
	}
	if i := strings.LastIndex(s, "-r"); i >= 0 {
		n, err := strconv.ParseUint(s[i+2:], 10, 64)
		if err != nil {
			return p, fmt.Errorf("osv: Alpine version %q: release %q is not a number", v, s[i+2:])
		}
		p.rev, s = n, s[:i]
	}
	if i := strings.IndexByte(s, '~'); i >= 0 {
		s = s[:i] // a commit hash orders nothing
	}
	for {
		j := 0
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == 0 {
			return p, fmt.Errorf("osv: Alpine version %q: expected a number", v)
		}
		p.nums = append(p.nums, s[:j])
		s = s[j:]
		if s == "" || s[0] != '.' {
			break
		}
		s = s[1:]
	}
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		p.letter, s = s[0], s[1:]
	}
	for s != "" {
		if s[0] != '_' {
			return p, fmt.Errorf("osv: Alpine version %q: unexpected %q", v, s)
		}
		s = s[1:]
		k := 0
		for k < len(s) && s[k] >= 'a' && s[k] <= 'z' {
			k++
		}
		kind, ok := apkSuffixes[s[:k]]
		if !ok || k == 0 {
			return p, fmt.Errorf("osv: Alpine version %q: unknown suffix %q", v, s[:k])
		}
		s = s[k:]
		d := 0
		for d < len(s) && isDigit(s[d]) {
			d++
		}
		var n uint64
		if d > 0 {
			var err error
			if n, err = strconv.ParseUint(s[:d], 10, 64); err != nil {
				return p, fmt.Errorf("osv: Alpine version %q: %w", v, err)
			}
		}
		s = s[d:]
		p.suffixes = append(p.suffixes, [2]uint64{uint64(kind), n})
	}
	return p, nil
}

// CompareApk orders two Alpine package versions as apk-tools does.
func CompareApk(a, b string) (int, error) {
	pa, err := parseApk(a)
	if err != nil {
		return 0, err
	}
	pb, err := parseApk(b)
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(pa.nums) && i < len(pb.nums); i++ {
		x, y := pa.nums[i], pb.nums[i]
		var c int
		if i > 0 && (x[0] == '0' || y[0] == '0') {
			// apk: a later component with a leading zero is a fraction,
			// compared as a string.
			c = strings.Compare(x, y)
		} else {
			c = compareDigits(x, y)
		}
		if c != 0 {
			return c, nil
		}
	}
	if len(pa.nums) != len(pb.nums) {
		if len(pa.nums) < len(pb.nums) {
			return -1, nil
		}
		return 1, nil
	}
	if pa.letter != pb.letter {
		if pa.letter < pb.letter {
			return -1, nil
		}
		return 1, nil
	}
	for i := 0; i < len(pa.suffixes) || i < len(pb.suffixes); i++ {
		x, y := [2]uint64{5, 0}, [2]uint64{5, 0}
		if i < len(pa.suffixes) {
			x = pa.suffixes[i]
		}
		if i < len(pb.suffixes) {
			y = pb.suffixes[i]
		}
		for k := range 2 {
			if x[k] != y[k] {
				if x[k] < y[k] {
					return -1, nil
				}
				return 1, nil
			}
		}
	}
	switch {
	case pa.rev < pb.rev:
		return -1, nil
	case pa.rev > pb.rev:
		return 1, nil
	}
	return 0, nil
}

// compareDigits orders two runs of digits as numbers of any length.
func compareDigits(x, y string) int {
	x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
	if len(x) != len(y) {
		if len(x) < len(y) {
			return -1
		}
		return 1
	}
	return strings.Compare(x, y)
}
