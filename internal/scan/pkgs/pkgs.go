package pkgs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/rampartsec/rampart/internal/scan/osv"
)

// Package is one installed package, named for OSV.
type Package struct {
	Ecosystem string `json:"ecosystem"`        // "Go", "Debian:12", "Alpine:v3.20", "npm", ...
	Name      string `json:"name"`             // what OSV records name (the source package for Debian and Alpine)
	Version   string `json:"version"`          // as the ecosystem writes it
	Binary    string `json:"binary,omitempty"` // the installed (binary) package, when it differs from Name
	PURL      string `json:"purl,omitempty"`
}

// MaxDocument bounds an SBOM or package database.
const MaxDocument = 256 << 20

// PURL is a parsed package URL (github.com/package-url/purl-spec).
type PURL struct {
	Type, Namespace, Name, Version string
	Qualifiers                     map[string]string
}

// ParsePURL parses a package URL.
func ParsePURL(s string) (PURL, error) {
	var p PURL
	rest, ok := strings.CutPrefix(s, "pkg:")
	if !ok {
		return p, fmt.Errorf("pkgs: package URL %q does not start with \"pkg:\"", s)
	}
	rest, _, _ = strings.Cut(rest, "#")
	rest, q, hasQ := strings.Cut(rest, "?")
	if hasQ {
		p.Qualifiers = map[string]string{}
		for _, kv := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(kv, "=")
			uv, err := url.PathUnescape(v)
			if err != nil {
				return p, fmt.Errorf("pkgs: package URL %q: qualifier %s: %w", s, k, err)
			}
			p.Qualifiers[strings.ToLower(k)] = uv
		}
	}
	rest = strings.TrimLeft(rest, "/")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		v, err := url.PathUnescape(rest[i+1:])
		if err != nil {
			return p, fmt.Errorf("pkgs: package URL %q: version: %w", s, err)
		}
		p.Version, rest = v, rest[:i]
	}
	typ, path, ok := strings.Cut(rest, "/")
	if !ok || typ == "" || path == "" {
		return p, fmt.Errorf("pkgs: package URL %q has no type and name", s)
	}
	p.Type = strings.ToLower(typ)
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return p, fmt.Errorf("pkgs: package URL %q: %w", s, err)
		}
		segs[i] = u
	}
	p.Name = segs[len(segs)-1]
	p.Namespace = strings.Join(segs[:len(segs)-1], "/")
	if p.Name == "" {
		return p, fmt.Errorf("pkgs: package URL %q has an empty name", s)
	}
	return p, nil
}

// FromPURL names a package URL's package for OSV. ok is false for a type
// OSV has no ecosystem for.
func FromPURL(s string) (Package, bool, error) {
	p, err := ParsePURL(s)
	if err != nil {
		return Package{}, false, err
	}
	pkg := Package{Name: p.Name, Version: p.Version, PURL: s}
	switch p.Type {
	case "golang":
		pkg.Ecosystem = osv.Go
		if p.Namespace != "" {
			pkg.Name = p.Namespace + "/" + p.Name
		}
		if pkg.Name == osv.GoStdlib {
			if v := osv.GoVersionToSemver("go" + strings.TrimPrefix(strings.TrimPrefix(p.Version, "go"), "v")); v != "" {
				pkg.Version = "v" + v
			}
		}
	case "deb":
		distro := p.Qualifiers["distro"]
		switch strings.ToLower(p.Namespace) {
		case "debian":
			pkg.Ecosystem = debianEcosystem(distro)
		case "ubuntu":
			pkg.Ecosystem = ubuntuEcosystem(distro)
		default:
			return pkg, false, nil
		}
		if up := p.Qualifiers["upstream"]; up != "" {
			// Syft writes the source package here, as "name" or "name@version".
			pkg.Binary = p.Name
			pkg.Name, _, _ = strings.Cut(up, "@")
		}
	case "apk":
		if strings.ToLower(p.Namespace) != "alpine" {
			return pkg, false, nil
		}
		pkg.Ecosystem = alpineEcosystem(strings.TrimPrefix(p.Qualifiers["distro"], "alpine-"))
		if up := p.Qualifiers["upstream"]; up != "" {
			pkg.Binary = p.Name
			pkg.Name, _, _ = strings.Cut(up, "@")
		}
	case "npm":
		pkg.Ecosystem = "npm"
		if p.Namespace != "" {
			pkg.Name = p.Namespace + "/" + p.Name
		}
	case "pypi":
		pkg.Ecosystem = "PyPI"
	case "maven":
		pkg.Ecosystem = "Maven"
		pkg.Name = p.Namespace + ":" + p.Name
	case "cargo":
		pkg.Ecosystem = "crates.io"
	case "gem":
		pkg.Ecosystem = "RubyGems"
	case "nuget":
		pkg.Ecosystem = "NuGet"
	case "composer":
		pkg.Ecosystem = "Packagist"
		pkg.Name = p.Namespace + "/" + p.Name
	default:
		return pkg, false, nil
	}
	return pkg, pkg.Ecosystem != "", nil
}

// debianEcosystem turns "debian-12", "12" or "12.5" into "Debian:12"; ""
// when the release is unknown.
func debianEcosystem(release string) string {
	release = strings.TrimPrefix(strings.ToLower(release), "debian-")
	major, _, _ := strings.Cut(release, ".")
	if major == "" || strings.Trim(major, "0123456789") != "" {
		return ""
	}
	return osv.Debian + ":" + major
}

func ubuntuEcosystem(release string) string {
	release = strings.TrimPrefix(strings.ToLower(release), "ubuntu-")
	if release == "" || strings.Trim(release, "0123456789.") != "" {
		return ""
	}
	return osv.Ubuntu + ":" + release
}

func alpineEcosystem(release string) string {
	parts := strings.Split(strings.TrimPrefix(release, "v"), ".")
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return ""
	}
	return osv.Alpine + ":v" + parts[0] + "." + parts[1]
}

// OSRelease is what /etc/os-release says.
type OSRelease struct {
	ID, VersionID, Name string
}

// ParseOSRelease reads os-release(5).
func ParseOSRelease(b []byte) OSRelease {
	var r OSRelease
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			r.ID = strings.ToLower(v)
		case "VERSION_ID":
			r.VersionID = v
		case "PRETTY_NAME":
			r.Name = v
		}
	}
	return r
}

// Ecosystem is the OSV ecosystem of the distribution's packages, or "" if
// the distribution or its release is not one OSV covers here.
func (r OSRelease) Ecosystem() string {
	switch r.ID {
	case "debian":
		return debianEcosystem(r.VersionID)
	case "ubuntu":
		return ubuntuEcosystem(r.VersionID)
	case "alpine":
		return alpineEcosystem(r.VersionID)
	}
	return ""
}

// paragraphs splits an RFC 822-style database into paragraphs of fields.
// Continuation lines (starting with a space) are dropped: no field read
// here spans lines.
func paragraphs(b []byte, sep byte, what string) ([]map[string]string, error) {
	if len(b) > MaxDocument {
		return nil, fmt.Errorf("pkgs: %s larger than %d bytes", what, MaxDocument)
	}
	var out []map[string]string
	cur := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if len(cur) > 0 {
				out = append(out, cur)
				cur = map[string]string{}
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(line, string(sep))
		if !ok {
			return nil, fmt.Errorf("pkgs: %s line %d: no %q in %q", what, n, sep, truncate(line))
		}
		cur[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("pkgs: %s line %d: %w", what, n+1, err)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, nil
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// ParseDpkgStatus reads /var/lib/dpkg/status (or one file of
// status.d): the installed packages, named by source package.
func ParseDpkgStatus(b []byte, ecosystem string) ([]Package, error) {
	ps, err := paragraphs(b, ':', "dpkg status")
	if err != nil {
		return nil, err
	}
	var out []Package
	for i, p := range ps {
		name, version := p["Package"], p["Version"]
		if name == "" || version == "" {
			return nil, fmt.Errorf("pkgs: dpkg status: paragraph %d has no Package or Version field", i+1)
		}
		if st, ok := p["Status"]; ok && !strings.HasSuffix(st, " installed") {
			continue // removed, config-files only, half-installed
		}
		if _, err := osv.CompareDpkg(version, version); err != nil {
			return nil, fmt.Errorf("pkgs: dpkg status: package %s: %w", name, err)
		}
		pkg := Package{Ecosystem: ecosystem, Name: name, Version: version}
		if src := p["Source"]; src != "" {
			// "Source: glibc" or "Source: glibc (2.36-9)": advisories
			// name the source package and its version.
			sname, sver, hasVer := strings.Cut(src, " ")
			pkg.Binary, pkg.Name = name, sname
			if hasVer {
				pkg.Version = strings.Trim(strings.TrimSpace(sver), "()")
			}
		}
		out = append(out, pkg)
	}
	return out, nil
}

// ParseApkInstalled reads /lib/apk/db/installed, named by origin package.
func ParseApkInstalled(b []byte, ecosystem string) ([]Package, error) {
	ps, err := paragraphs(b, ':', "apk installed database")
	if err != nil {
		return nil, err
	}
	var out []Package
	for i, p := range ps {
		name, version := p["P"], p["V"]
		if name == "" || version == "" {
			return nil, fmt.Errorf("pkgs: apk installed database: entry %d has no P: or V: line", i+1)
		}
		if _, err := osv.CompareApk(version, version); err != nil {
			return nil, fmt.Errorf("pkgs: apk installed database: package %s: %w", name, err)
		}
		pkg := Package{Ecosystem: ecosystem, Name: name, Version: version}
		if o := p["o"]; o != "" && o != name {
			pkg.Binary, pkg.Name = name, o
		}
		out = append(out, pkg)
	}
	return out, nil
}

// SBOM is what an SBOM lists.
type SBOM struct {
	Format   string    // "CycloneDX 1.5", "SPDX-2.3"
	Packages []Package // those with a package URL OSV covers
	Skipped  int       // components without a usable package URL
}

// ParseSBOM reads a CycloneDX or SPDX JSON document.
func ParseSBOM(b []byte) (*SBOM, error) {
	if len(b) > MaxDocument {
		return nil, fmt.Errorf("pkgs: SBOM larger than %d bytes", MaxDocument)
	}
	var probe struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		SPDXVersion string `json:"spdxVersion"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("pkgs: not a JSON SBOM: %w", err)
	}
	switch {
	case probe.BOMFormat == "CycloneDX":
		return parseCycloneDX(b, probe.SpecVersion)
	case strings.HasPrefix(probe.SPDXVersion, "SPDX-"):
		return parseSPDX(b, probe.SPDXVersion)
	}
	return nil, errors.New(`pkgs: not a CycloneDX ("bomFormat": "CycloneDX") or SPDX ("spdxVersion": "SPDX-2.x") JSON document`)
}

type cdxComponent struct {
	Type       string         `json:"type"`
	Name       string         `json:"name"`
	Version    string         `json:"version"`
	PURL       string         `json:"purl"`
	Components []cdxComponent `json:"components"`
}

func parseCycloneDX(b []byte, spec string) (*SBOM, error) {
	var doc struct {
		Metadata struct {
			Component *cdxComponent `json:"component"`
		} `json:"metadata"`
		Components []cdxComponent `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("pkgs: CycloneDX: %w", err)
	}
	if spec == "" {
		return nil, errors.New("pkgs: CycloneDX: no specVersion")
	}
	s := &SBOM{Format: "CycloneDX " + spec}
	var walk func(cs []cdxComponent, depth int) error
	walk = func(cs []cdxComponent, depth int) error {
		if depth > 64 {
			return errors.New("pkgs: CycloneDX: components nested more than 64 deep")
		}
		for i, c := range cs {
			if err := s.add(c.PURL); err != nil {
				return fmt.Errorf("pkgs: CycloneDX: component %d (%s): %w", i, c.Name, err)
			}
			if err := walk(c.Components, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(doc.Components, 0); err != nil {
		return nil, err
	}
	return s, nil
}

func parseSPDX(b []byte, spec string) (*SBOM, error) {
	var doc struct {
		Packages []struct {
			Name         string `json:"name"`
			ExternalRefs []struct {
				Category string `json:"referenceCategory"`
				Type     string `json:"referenceType"`
				Locator  string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("pkgs: SPDX: %w", err)
	}
	s := &SBOM{Format: spec}
	for i, p := range doc.Packages {
		purl := ""
		for _, r := range p.ExternalRefs {
			if r.Type == "purl" {
				purl = r.Locator
				break
			}
		}
		if err := s.add(purl); err != nil {
			return nil, fmt.Errorf("pkgs: SPDX: package %d (%s): %w", i, p.Name, err)
		}
	}
	return s, nil
}

func (s *SBOM) add(purl string) error {
	if purl == "" {
		s.Skipped++
		return nil
	}
	p, ok, err := FromPURL(purl)
	if err != nil {
		return err
	}
	if !ok || p.Version == "" {
		s.Skipped++
		return nil
	}
	s.Packages = append(s.Packages, p)
	return nil
}
