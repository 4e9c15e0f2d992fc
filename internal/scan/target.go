package scan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/image"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/pkgs"
)

// Kinds of artifact.
const (
	KindGoBinary = "go-binary"
	KindSBOM     = "sbom"
	KindImage    = "image"
)

// BinaryInfo is a Go binary found in an artifact.
type BinaryInfo struct {
	Path      string         `json:"path"`
	GoVersion string         `json:"go_version"`
	Main      gobin.Module   `json:"main"`
	Modules   []gobin.Module `json:"modules,omitempty"`
	Symbols   bool           `json:"symbols"` // whether its functions could be read
}

// Report is the result of scanning one artifact.
type Report struct {
	Target    string         `json:"target"`
	Kind      string         `json:"kind"`
	Format    string         `json:"format,omitempty"` // SBOM format, image OS
	ScannedAt time.Time      `json:"scanned_at"`
	Database  osv.Meta       `json:"database"`
	Binaries  []BinaryInfo   `json:"binaries,omitempty"`
	Packages  []pkgs.Package `json:"packages,omitempty"`
	Findings  []Finding      `json:"findings"`
	Warnings  []string       `json:"warnings,omitempty"`
}

// Scanner scans artifacts against a database.
type Scanner struct {
	DB     osv.Source
	Now    func() time.Time
	TmpDir string // for executables copied out of images
}

// ScanFile scans a file: a Go binary, a JSON SBOM or an image tarball,
// told apart by their content.
func (s *Scanner) ScanFile(file string) (*Report, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("scan: %s is not a regular file", file)
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case isExecutable(head):
		return s.ScanBinary(f, file)
	case looksJSON(head):
		b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, st.Size()), pkgs.MaxDocument+1))
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		return s.ScanSBOM(b, file)
	case isTar(head):
		return s.ScanImage(f, st.Size(), file)
	}
	return nil, fmt.Errorf("scan: %s is neither a Go binary, a JSON SBOM nor an image tarball", file)
}

func (s *Scanner) report(target, kind string) *Report {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return &Report{Target: target, Kind: kind, ScannedAt: now().UTC(), Database: s.DB.Meta(), Findings: []Finding{}}
}

func isExecutable(h []byte) bool {
	for _, m := range [][]byte{{0x7f, 'E', 'L', 'F'}, {0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf}, {0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe}, {'M', 'Z'}} {
		if bytes.HasPrefix(h, m) {
			return true
		}
	}
	return false
}

func looksJSON(h []byte) bool {
	t := bytes.TrimLeft(h, " \t\r\n\xef\xbb\xbf")
	return len(t) > 0 && t[0] == '{'
}

func isTar(h []byte) bool {
	return len(h) >= 262 && (string(h[257:262]) == "ustar")
}

// ScanBinary scans one Go binary.
func (s *Scanner) ScanBinary(r io.ReaderAt, name string) (*Report, error) {
	b, err := gobin.Read(r)
	if err != nil {
		if errors.Is(err, gobin.ErrNotGo) {
			return nil, fmt.Errorf("scan: %s: %w", name, err)
		}
		return nil, fmt.Errorf("scan: %s: %w", name, err)
	}
	rep := s.report(name, KindGoBinary)
	rep.Binaries = []BinaryInfo{info(name, b)}
	if b.SymbolsErr != "" {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %s: reachability cannot be told; every finding counts as called", name, b.SymbolsErr))
	}
	fs, err := MatchGo(s.DB, b, name)
	if err != nil {
		return nil, err
	}
	rep.Findings = append(rep.Findings, fs...)
	return rep, nil
}

func info(p string, b *gobin.Binary) BinaryInfo {
	return BinaryInfo{Path: p, GoVersion: b.GoVersion, Main: b.Main, Modules: b.Modules, Symbols: b.Symbols != nil}
}

// ScanSBOM scans a CycloneDX or SPDX JSON document.
func (s *Scanner) ScanSBOM(doc []byte, name string) (*Report, error) {
	sb, err := pkgs.ParseSBOM(doc)
	if err != nil {
		return nil, fmt.Errorf("scan: %s: %w", name, err)
	}
	rep := s.report(name, KindSBOM)
	rep.Format = sb.Format
	rep.Packages = sb.Packages
	var unknownRelease int
	var ps []pkgs.Package
	for _, p := range sb.Packages {
		if p.Ecosystem == "" || strings.HasSuffix(p.Ecosystem, ":") {
			unknownRelease++
			continue
		}
		ps = append(ps, p)
	}
	if unknownRelease > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d distribution packages name no release (purl qualifier distro); not matched", unknownRelease))
	}
	fs, warns, err := MatchPackages(s.DB, ps, name)
	if err != nil {
		return nil, err
	}
	rep.Findings = append(rep.Findings, fs...)
	rep.Warnings = append(rep.Warnings, warns...)
	SortFindings(rep.Findings)
	return rep, nil
}

// ScanImage scans an image tarball: its OS packages and its Go binaries.
func (s *Scanner) ScanImage(r io.ReaderAt, size int64, name string) (*Report, error) {
	img, err := image.Open(r, size, s.TmpDir)
	if err != nil {
		return nil, fmt.Errorf("scan: %s: %w", name, err)
	}
	defer img.Close()
	rep := s.report(name, KindImage)
	osr := pkgs.ParseOSRelease(firstOf(img.Meta, "/etc/os-release", "/usr/lib/os-release"))
	eco := osr.Ecosystem()
	rep.Format = strings.TrimSpace(osr.Name)
	var ps []pkgs.Package
	addDB := func(p string, parse func([]byte, string) ([]pkgs.Package, error)) error {
		b, ok := img.Meta[p]
		if !ok {
			return nil
		}
		got, err := parse(b, eco)
		if err != nil {
			return fmt.Errorf("scan: %s: %s: %w", name, p, err)
		}
		ps = append(ps, got...)
		return nil
	}
	if err := addDB("/var/lib/dpkg/status", pkgs.ParseDpkgStatus); err != nil {
		return nil, err
	}
	var statusD []string
	for p := range img.Meta {
		if strings.HasPrefix(p, "/var/lib/dpkg/status.d/") && !strings.HasSuffix(p, ".md5sums") {
			statusD = append(statusD, p)
		}
	}
	slices.Sort(statusD)
	for _, p := range statusD {
		if err := addDB(p, pkgs.ParseDpkgStatus); err != nil {
			return nil, err
		}
	}
	if _, ok := img.Meta["/lib/apk/db/installed"]; ok && osr.ID != "alpine" {
		// apk on another distribution: its release is in alpine-release.
		if ar := strings.TrimSpace(string(img.Meta["/etc/alpine-release"])); ar != "" {
			eco = pkgs.OSRelease{ID: "alpine", VersionID: ar}.Ecosystem()
		}
	}
	if err := addDB("/lib/apk/db/installed", pkgs.ParseApkInstalled); err != nil {
		return nil, err
	}
	rep.Packages = ps
	var known []pkgs.Package
	for _, p := range ps {
		if p.Ecosystem != "" {
			known = append(known, p)
		}
	}
	if len(known) < len(ps) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d OS packages, but os-release names no distribution release OSV covers (%q %q); not matched", len(ps)-len(known), osr.ID, osr.VersionID))
	}
	if len(known) > 0 {
		ps = known
		fs, warns, err := MatchPackages(s.DB, ps, name)
		if err != nil {
			return nil, err
		}
		rep.Findings = append(rep.Findings, fs...)
		rep.Warnings = append(rep.Warnings, warns...)
	}
	for _, e := range img.Executables {
		f, err := img.OpenExecutable(e.Path)
		if err != nil {
			return nil, fmt.Errorf("scan: %s: %w", name, err)
		}
		b, err := gobin.Read(f)
		f.Close()
		if errors.Is(err, gobin.ErrNotGo) {
			continue
		}
		if err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %v", e.Path, err))
			continue
		}
		art := name + ":" + path.Clean(e.Path)
		rep.Binaries = append(rep.Binaries, info(e.Path, b))
		if b.SymbolsErr != "" {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %s: reachability cannot be told; every finding counts as called", e.Path, b.SymbolsErr))
		}
		fs, err := MatchGo(s.DB, b, art)
		if err != nil {
			return nil, err
		}
		rep.Findings = append(rep.Findings, fs...)
	}
	SortFindings(rep.Findings)
	return rep, nil
}

func firstOf(m map[string][]byte, keys ...string) []byte {
	for _, k := range keys {
		if b, ok := m[k]; ok {
			return b
		}
	}
	return nil
}
