package scan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/pkgs"
)

// Reachability of a finding.
const (
	Called    = "called"     // a vulnerable function is in the binary
	NotCalled = "not-called" // the module or package is, no vulnerable function
	Unknown   = "unknown"    // no symbols to tell (a package database, an SBOM, a stripped binary)
)

// Finding levels, as govulncheck names them.
const (
	LevelSymbol  = "symbol"
	LevelPackage = "package"
	LevelModule  = "module"
)

// Finding is one vulnerability in one package of one artifact.
type Finding struct {
	ID           string     `json:"id"`
	Aliases      []string   `json:"aliases,omitempty"`
	Summary      string     `json:"summary,omitempty"`
	Severity     osv.Rating `json:"severity"`
	Ecosystem    string     `json:"ecosystem"`
	Package      string     `json:"package"` // module path, or source package
	Version      string     `json:"version"`
	Fixed        []string   `json:"fixed,omitempty"`
	Reachability string     `json:"reachability"`
	Level        string     `json:"level,omitempty"`   // Go: symbol, package or module
	Symbols      []string   `json:"symbols,omitempty"` // vulnerable functions found ("pkg.Func")
	Note         string     `json:"note,omitempty"`
	Artifact     string     `json:"artifact"` // the file, or the path inside an image
}

// Reachable says whether the finding counts where a threshold applies:
// called, or reachability unknown.
func (f Finding) Reachable() bool { return f.Reachability != NotCalled }

// Threshold selects findings: at or above Min, with an unrated finding
// counted as Unknown (High when zero).
type Threshold struct {
	Min        osv.Level
	Unknown    osv.Level
	NotCalled  bool // count not-called findings too
	Exceptions func(Finding) bool
}

// Level returns the severity f counts as.
func (t Threshold) Level(f Finding) osv.Level {
	if f.Severity.Level == osv.Unknown {
		if t.Unknown == osv.Unknown {
			return osv.High
		}
		return t.Unknown
	}
	return f.Severity.Level
}

// Failing returns the findings that meet t.
func (t Threshold) Failing(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if !t.NotCalled && !f.Reachable() {
			continue
		}
		if t.Level(f) < t.Min {
			continue
		}
		if t.Exceptions != nil && t.Exceptions(f) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// rate returns r's rating, or the highest of its aliases' in src.
func rate(src osv.Source, r *osv.Record) osv.Rating {
	rt := r.Rate()
	if rt.Level != osv.Unknown {
		return rt
	}
	byID, ok := src.(interface {
		Record(id string) (*osv.Record, error)
	})
	if !ok {
		return rt
	}
	for _, a := range r.Aliases {
		if ar, err := byID.Record(a); err == nil && ar != nil {
			if x := ar.Rate(); x.Level > rt.Level {
				rt = x
			}
		}
	}
	return rt
}

func withdrawn(r *osv.Record) bool { return r.Withdrawn != nil }

// MatchPackages matches packages (from an SBOM or a package database)
// against src. Their reachability is unknown.
func MatchPackages(src osv.Source, ps []pkgs.Package, artifact string) ([]Finding, []string, error) {
	var out []Finding
	var warnings []string
	for _, p := range ps {
		recs, err := src.Lookup(p.Ecosystem, p.Name)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range recs {
			if withdrawn(r) {
				continue
			}
			for i := range r.Affected {
				a := &r.Affected[i]
				if a.Package.Name != p.Name || osv.NormalizeEcosystem(a.Package.Ecosystem) != osv.NormalizeEcosystem(p.Ecosystem) {
					continue
				}
				v := p.Version
				if p.Ecosystem == osv.Go {
					v = strings.TrimPrefix(v, "v")
				}
				hit, err := a.Affects(v)
				if err != nil {
					warnings = append(warnings, fmt.Sprintf("%s %s@%s: %v", r.ID, p.Name, p.Version, err))
					continue
				}
				if !hit {
					continue
				}
				f := Finding{ID: r.ID, Aliases: r.Aliases, Summary: r.Summary, Severity: rate(src, r),
					Ecosystem: p.Ecosystem, Package: p.Name, Version: p.Version, Fixed: a.FixedVersions(v),
					Reachability: Unknown, Artifact: artifact}
				if p.Binary != "" {
					f.Note = "installed as " + p.Binary
				}
				out = append(out, f)
				break
			}
		}
	}
	return dedupe(out), warnings, nil
}

// dedupe keeps one finding per record, package and artifact, the most
// reachable.
func dedupe(fs []Finding) []Finding {
	rank := map[string]int{Called: 3, Unknown: 2, NotCalled: 1}
	type k struct{ id, pkg, ver, art string }
	best := map[k]int{}
	var out []Finding
	for _, f := range fs {
		key := k{f.ID, f.Package, f.Version, f.Artifact}
		if i, ok := best[key]; ok {
			if rank[f.Reachability] > rank[out[i].Reachability] {
				out[i] = f
			}
			continue
		}
		best[key] = len(out)
		out = append(out, f)
	}
	SortFindings(out)
	return out
}

// SortFindings orders findings: called first, then by severity, id and
// package.
func SortFindings(fs []Finding) {
	rank := map[string]int{Called: 0, Unknown: 1, NotCalled: 2}
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if c := rank[a.Reachability] - rank[b.Reachability]; c != 0 {
			return c
		}
		if c := int(b.Severity.Level) - int(a.Severity.Level); c != 0 {
			return c
		}
		if c := strings.Compare(a.Artifact, b.Artifact); c != 0 {
			return c
		}
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Package, b.Package)
	})
}

// goModule is a module as matching needs it.
type goModule struct {
	path, version string // the module as required, at the version in the binary
	importPrefix  string // where its packages live (the replacement's path)
}

// MatchGo matches a Go binary's modules and symbols against src.
func MatchGo(src osv.Source, b *gobin.Binary, artifact string) ([]Finding, error) {
	var mods []goModule
	for _, m := range b.Modules {
		e := m.Effective()
		mods = append(mods, goModule{path: m.Path, version: e.Version, importPrefix: e.Path})
	}
	if v := osv.GoVersionToSemver(b.GoVersion); v != "" {
		mods = append(mods, goModule{path: osv.GoStdlib, version: "v" + v})
	}
	if b.Main.Path != "" {
		mods = append(mods, goModule{path: b.Main.Path, version: b.Main.Version, importPrefix: b.Main.Path})
	}
	// Which module each package in the binary belongs to: the longest
	// module path that prefixes it; standard packages to stdlib.
	pkgModule := func(pkg string) string {
		if isStd(pkg) {
			return osv.GoStdlib
		}
		best := ""
		for _, m := range mods {
			if m.importPrefix != "" && (pkg == m.importPrefix || strings.HasPrefix(pkg, m.importPrefix+"/")) && len(m.importPrefix) > len(best) {
				best = m.importPrefix
			}
		}
		return best
	}
	stripped := b.Symbols == nil
	var out []Finding
	for _, m := range mods {
		if m.version == "" || m.version == "(devel)" {
			continue
		}
		recs, err := src.Lookup(osv.Go, m.path)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if withdrawn(r) {
				continue
			}
			f, ok, err := matchGoRecord(src, r, m, b, stripped, pkgModule)
			if err != nil {
				return nil, err
			}
			if ok {
				f.Artifact = artifact
				out = append(out, f)
			}
		}
	}
	return dedupe(out), nil
}

func matchGoRecord(src osv.Source, r *osv.Record, m goModule, b *gobin.Binary, stripped bool, pkgModule func(string) string) (Finding, bool, error) {
	v := strings.TrimPrefix(m.version, "v")
	f := Finding{ID: r.ID, Aliases: r.Aliases, Summary: r.Summary, Ecosystem: osv.Go, Package: m.path, Version: m.version}
	level := ""
	var symbols []string
	for i := range r.Affected {
		a := &r.Affected[i]
		if a.Package.Name != m.path || osv.BaseEcosystem(a.Package.Ecosystem) != osv.Go {
			continue
		}
		hit, err := a.Affects(v)
		if err != nil || !hit {
			continue
		}
		imports, err := a.GoImports()
		if err != nil {
			return f, false, err
		}
		var kept []osv.GoImport
		for _, im := range imports {
			if platform(b.GOOS, im.GOOS) && platform(b.GOARCH, im.GOARCH) {
				kept = append(kept, im)
			}
		}
		if len(imports) > 0 && len(kept) == 0 {
			continue // only other platforms are affected
		}
		for _, fx := range a.FixedVersions(v) {
			f.Fixed = appendNew(f.Fixed, "v"+fx)
		}
		level = higher(level, LevelModule)
		if stripped {
			level = LevelSymbol
			continue
		}
		if len(kept) == 0 {
			// No package named: every package of the module is affected.
			for pkg, syms := range b.Symbols {
				if pkgModule(pkg) == modulePrefix(m) {
					level = LevelSymbol
					symbols = appendNew(symbols, pkg+"."+syms[0])
				}
			}
			continue
		}
		for _, im := range kept {
			path := im.Path
			if m.path != osv.GoStdlib && m.importPrefix != m.path {
				path = m.importPrefix + strings.TrimPrefix(path, m.path) // a replaced module
			}
			syms, ok := b.Symbols[mainAlias(path, b)]
			if !ok {
				continue
			}
			level = higher(level, LevelPackage)
			if len(im.Symbols) == 0 {
				level = LevelSymbol
				symbols = appendNew(symbols, path)
				continue
			}
			for _, s := range im.Symbols {
				if _, found := slices.BinarySearch(syms, s); found {
					level = LevelSymbol
					symbols = appendNew(symbols, im.Path+"."+s)
				}
			}
		}
	}
	if level == "" {
		return f, false, nil
	}
	f.Level, f.Symbols = level, symbols
	f.Severity = rate(src, r)
	switch {
	case level == LevelSymbol && stripped:
		f.Reachability = Called
		f.Note = "symbols unreadable (" + b.SymbolsErr + "): every vulnerable function counts as present"
	case level == LevelSymbol:
		f.Reachability = Called
	default:
		f.Reachability = NotCalled
	}
	return f, true, nil
}

func modulePrefix(m goModule) string {
	if m.path == osv.GoStdlib {
		return osv.GoStdlib
	}
	return m.importPrefix
}

// mainAlias: functions of package main are listed under "main"; the
// database names the main package by its path.
func mainAlias(path string, b *gobin.Binary) string {
	if path == b.Path {
		if _, ok := b.Symbols[path]; !ok {
			return "main"
		}
	}
	return path
}

func platform(have string, want []string) bool {
	return have == "" || len(want) == 0 || slices.Contains(want, have)
}

func higher(a, b string) string {
	rank := map[string]int{"": 0, LevelModule: 1, LevelPackage: 2, LevelSymbol: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func appendNew(s []string, vs ...string) []string {
	for _, v := range vs {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

// isStd reports whether an import path is in the standard library: its
// first element has no dot.
func isStd(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}
