package osv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Record is one OSV vulnerability record (the fields Rampart uses).
type Record struct {
	SchemaVersion    string          `json:"schema_version,omitempty"`
	ID               string          `json:"id"`
	Modified         time.Time       `json:"modified"`
	Published        *time.Time      `json:"published,omitempty"`
	Withdrawn        *time.Time      `json:"withdrawn,omitempty"`
	Aliases          []string        `json:"aliases,omitempty"`
	Related          []string        `json:"related,omitempty"`
	Summary          string          `json:"summary,omitempty"`
	Details          string          `json:"details,omitempty"`
	Severity         []Severity      `json:"severity,omitempty"`
	Affected         []Affected      `json:"affected,omitempty"`
	References       []Reference     `json:"references,omitempty"`
	DatabaseSpecific json.RawMessage `json:"database_specific,omitempty"`
}

// Severity is a rating: a CVSS vector, or another scheme's score.
type Severity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// Reference is a link about the vulnerability.
type Reference struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// Package names what is affected.
type Package struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	Purl      string `json:"purl,omitempty"`
}

// Affected is one affected package with its versions.
type Affected struct {
	Package           Package         `json:"package"`
	Severity          []Severity      `json:"severity,omitempty"`
	Ranges            []Range         `json:"ranges,omitempty"`
	Versions          []string        `json:"versions,omitempty"`
	EcosystemSpecific json.RawMessage `json:"ecosystem_specific,omitempty"`
	DatabaseSpecific  json.RawMessage `json:"database_specific,omitempty"`
}

// Range is one range of affected versions.
type Range struct {
	Type   string  `json:"type"` // SEMVER, ECOSYSTEM or GIT
	Repo   string  `json:"repo,omitempty"`
	Events []Event `json:"events"`
}

// Event opens or closes an affected interval; exactly one field is set.
type Event struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

// GoImport is the Go database's ecosystem_specific.imports element: the
// package and the symbols in it that hold the vulnerable code.
type GoImport struct {
	Path    string   `json:"path"`
	GOOS    []string `json:"goos,omitempty"`
	GOARCH  []string `json:"goarch,omitempty"`
	Symbols []string `json:"symbols,omitempty"`
}

// GoImports returns the Go-specific import list of a, if any.
func (a *Affected) GoImports() ([]GoImport, error) {
	if len(a.EcosystemSpecific) == 0 {
		return nil, nil
	}
	var es struct {
		Imports []GoImport `json:"imports"`
	}
	if err := json.Unmarshal(a.EcosystemSpecific, &es); err != nil {
		return nil, fmt.Errorf("osv: %s ecosystem_specific: %w", a.Package.Name, err)
	}
	return es.Imports, nil
}

// MaxRecordSize bounds one record; the largest in the public databases are
// well under 1 MiB.
const MaxRecordSize = 4 << 20

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Parse decodes and checks one OSV record.
func Parse(b []byte) (*Record, error) {
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("osv: record of %d bytes is larger than the %d allowed", len(b), MaxRecordSize)
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("osv: not an OSV record: %w", err)
	}
	if dec.More() {
		return nil, errors.New("osv: not an OSV record: data after the JSON object")
	}
	if err := r.Check(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Check validates r; the error names the record and field.
func (r *Record) Check() error {
	if r.ID == "" {
		return errors.New("osv: record has no id")
	}
	if !idRE.MatchString(r.ID) {
		return fmt.Errorf("osv: record id %q is not a plain identifier", r.ID)
	}
	if r.Modified.IsZero() && r.SchemaVersion == "" {
		// The Go module copy of vulndb writes 0001-01-01 (the date comes
		// from git); a record with neither date nor schema version is
		// not OSV.
		return fmt.Errorf("osv: %s: no modified time and no schema_version", r.ID)
	}
	for i := range r.Affected {
		a := &r.Affected[i]
		where := fmt.Sprintf("osv: %s: affected[%d]", r.ID, i)
		if a.Package.Name != "" && a.Package.Ecosystem == "" {
			return fmt.Errorf("%s: package %q has no ecosystem", where, a.Package.Name)
		}
		for j, rg := range a.Ranges {
			where := fmt.Sprintf("%s.ranges[%d]", where, j)
			switch rg.Type {
			case "SEMVER", "ECOSYSTEM", "GIT":
			default:
				return fmt.Errorf("%s: unknown range type %q", where, rg.Type)
			}
			if len(rg.Events) == 0 {
				return fmt.Errorf("%s: no events", where)
			}
			introduced := false
			for k, e := range rg.Events {
				n := 0
				for _, v := range []string{e.Introduced, e.Fixed, e.LastAffected, e.Limit} {
					if v != "" {
						n++
					}
				}
				if n != 1 {
					return fmt.Errorf("%s.events[%d]: an event has exactly one of introduced, fixed, last_affected, limit (has %d)", where, k, n)
				}
				if e.Introduced != "" {
					introduced = true
				}
				if rg.Type == "GIT" {
					continue
				}
				v := e.Introduced + e.Fixed + e.LastAffected + e.Limit
				if v == "0" && e.Introduced != "" {
					continue
				}
				if err := checkVersion(a.Package.Ecosystem, rg.Type, v); err != nil {
					return fmt.Errorf("%s.events[%d]: %w", where, k, err)
				}
			}
			if !introduced {
				return fmt.Errorf("%s: no introduced event", where)
			}
		}
		if _, err := a.GoImports(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

// AllAliases returns the id and its aliases.
func (r *Record) AllAliases() []string {
	return append([]string{r.ID}, r.Aliases...)
}

// CVEs returns the CVE ids among the record's id and aliases.
func (r *Record) CVEs() []string {
	var out []string
	for _, a := range r.AllAliases() {
		if strings.HasPrefix(a, "CVE-") {
			out = append(out, a)
		}
	}
	return out
}
