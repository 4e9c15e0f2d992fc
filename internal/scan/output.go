package scan

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes reports for people.
func WriteTable(w io.Writer, reps []*Report, t Threshold) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range reps {
		fmt.Fprintf(tw, "%s (%s", r.Target, r.Kind)
		if r.Format != "" {
			fmt.Fprintf(tw, ", %s", r.Format)
		}
		fmt.Fprintf(tw, "): %d findings, %d called; database %s (%d records, imported %s)\n",
			len(r.Findings), countCalled(r.Findings), r.Database.Source, r.Database.Records, r.Database.ImportedAt.Format(time.RFC3339))
		for _, b := range r.Binaries {
			fmt.Fprintf(tw, "  go binary %s: %s, %s %s, %d modules\n", b.Path, b.GoVersion, b.Main.Path, b.Main.Version, len(b.Modules))
		}
		if len(r.Findings) > 0 {
			fmt.Fprintln(tw, "  REACHABILITY\tSEVERITY\tID\tPACKAGE\tVERSION\tFIXED\tWHERE")
		}
		for _, f := range r.Findings {
			sev := t.Level(f).String()
			if f.Severity.Level == 0 {
				sev = "UNRATED(" + sev + ")"
			}
			where := f.Artifact
			if len(f.Symbols) > 0 {
				where += " " + strings.Join(f.Symbols, ",")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Reachability, sev, f.ID, f.Package, f.Version, strings.Join(f.Fixed, ","), where)
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(tw, "  warning: %s\n", w)
		}
	}
	return tw.Flush()
}

func countCalled(fs []Finding) int {
	n := 0
	for _, f := range fs {
		if f.Reachability == Called {
			n++
		}
	}
	return n
}

// WriteJSON writes the reports as one JSON document.
func WriteJSON(w io.Writer, reps []*Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"reports": reps})
}

// osvURL is where a record can be read by people.
func osvURL(id string) string { return "https://osv.dev/vulnerability/" + id }

// WriteSARIF writes SARIF 2.1.0 (OASIS), for code-scanning user interfaces:
// one rule per record, one result per finding; called findings are
// errors or warnings by severity, the others notes.
func WriteSARIF(w io.Writer, reps []*Report, t Threshold, version string) error {
	type msg struct {
		Text string `json:"text"`
	}
	type rule struct {
		ID               string         `json:"id"`
		Name             string         `json:"name,omitempty"`
		ShortDescription msg            `json:"shortDescription"`
		FullDescription  msg            `json:"fullDescription"`
		HelpURI          string         `json:"helpUri"`
		Properties       map[string]any `json:"properties"`
	}
	type location struct {
		PhysicalLocation struct {
			ArtifactLocation struct {
				URI string `json:"uri"`
			} `json:"artifactLocation"`
		} `json:"physicalLocation"`
	}
	type result struct {
		RuleID     string         `json:"ruleId"`
		Level      string         `json:"level"`
		Message    msg            `json:"message"`
		Locations  []location     `json:"locations"`
		Properties map[string]any `json:"properties"`
	}
	rules := []rule{}
	seen := map[string]bool{}
	results := []result{}
	for _, r := range reps {
		for _, f := range r.Findings {
			if !seen[f.ID] {
				seen[f.ID] = true
				sev := t.Level(f)
				props := map[string]any{"tags": []string{"security", "vulnerability"}}
				if f.Severity.Score > 0 {
					props["security-severity"] = strconv.FormatFloat(f.Severity.Score, 'f', 1, 64)
				} else {
					props["security-severity"] = map[int]string{1: "0.0", 2: "3.0", 3: "5.5", 4: "8.0", 5: "9.5"}[int(sev)]
				}
				summary := f.Summary
				if summary == "" {
					summary = f.ID
				}
				rules = append(rules, rule{ID: f.ID, Name: strings.ReplaceAll(f.ID, "-", ""), ShortDescription: msg{summary},
					FullDescription: msg{summary + " (aliases: " + strings.Join(f.Aliases, ", ") + ")"}, HelpURI: osvURL(f.ID), Properties: props})
			}
			level := "note"
			if f.Reachable() {
				switch l := t.Level(f); {
				case l >= 4:
					level = "error"
				default:
					level = "warning"
				}
			}
			text := fmt.Sprintf("%s %s is affected by %s (%s", f.Package, f.Version, f.ID, f.Reachability)
			if len(f.Symbols) > 0 {
				text += ": " + strings.Join(f.Symbols, ", ")
			}
			text += ")"
			if len(f.Fixed) > 0 {
				text += "; fixed in " + strings.Join(f.Fixed, ", ")
			}
			var loc location
			loc.PhysicalLocation.ArtifactLocation.URI = f.Artifact
			results = append(results, result{RuleID: f.ID, Level: level, Message: msg{text}, Locations: []location{loc},
				Properties: map[string]any{"reachability": f.Reachability, "package": f.Package, "version": f.Version}})
		}
	}
	doc := map[string]any{
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"version": "2.1.0",
		"runs": []any{map[string]any{
			"tool": map[string]any{"driver": map[string]any{
				"name": "rampart scan", "version": version, "informationUri": "https://github.com/rampartsec/rampart", "rules": rules,
			}},
			"results": results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// purl is a finding's package as a package URL, for VEX.
func purl(f Finding) string {
	switch {
	case f.Ecosystem == "Go":
		v := f.Version
		if f.Package == "stdlib" {
			v = strings.TrimPrefix(v, "v")
		}
		return "pkg:golang/" + f.Package + "@" + v
	case strings.HasPrefix(f.Ecosystem, "Debian"):
		return "pkg:deb/debian/" + f.Package + "@" + f.Version
	case strings.HasPrefix(f.Ecosystem, "Ubuntu"):
		return "pkg:deb/ubuntu/" + f.Package + "@" + f.Version
	case strings.HasPrefix(f.Ecosystem, "Alpine"):
		return "pkg:apk/alpine/" + f.Package + "@" + f.Version
	}
	return "pkg:generic/" + f.Package + "@" + f.Version
}

// WriteVEX writes a CycloneDX 1.5 VEX document stating that the
// not-called findings do not affect the artifacts (analysis state
// not_affected, justification code_not_reachable). Called and unknown
// findings are left out: a VEX states what is not exploitable.
func WriteVEX(w io.Writer, reps []*Report, now time.Time, version string) error {
	var uuid [16]byte
	if _, err := rand.Read(uuid[:]); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	uuid[6] = uuid[6]&0x0f | 0x40
	uuid[8] = uuid[8]&0x3f | 0x80
	serial := fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:])
	components := []map[string]any{}
	vulns := []map[string]any{}
	seenComp := map[string]bool{}
	for _, r := range reps {
		for _, f := range r.Findings {
			if f.Reachability != NotCalled {
				continue
			}
			ref := purl(f)
			if !seenComp[ref] {
				seenComp[ref] = true
				components = append(components, map[string]any{"bom-ref": ref, "type": "library", "name": f.Package, "version": f.Version, "purl": ref})
			}
			detail := fmt.Sprintf("%s: %s is at an affected version, but ", f.Artifact, f.Package)
			if f.Level == LevelPackage {
				detail += "none of the vulnerable functions is in the binary (a package the record names is)"
			} else {
				detail += "none of the packages the record names is in the binary"
			}
			v := map[string]any{
				"bom-ref":  f.ID + "/" + ref + "/" + f.Artifact,
				"id":       f.ID,
				"source":   map[string]any{"name": "OSV", "url": osvURL(f.ID)},
				"analysis": map[string]any{"state": "not_affected", "justification": "code_not_reachable", "detail": detail},
				"affects":  []map[string]any{{"ref": ref}},
			}
			if f.Summary != "" {
				v["description"] = f.Summary
			}
			var refs []map[string]any
			for _, a := range f.Aliases {
				refs = append(refs, map[string]any{"id": a, "source": map[string]any{"url": osvURL(a)}})
			}
			if refs != nil {
				v["references"] = refs
			}
			vulns = append(vulns, v)
		}
	}
	doc := map[string]any{
		"bomFormat": "CycloneDX", "specVersion": "1.5", "serialNumber": serial, "version": 1,
		"metadata": map[string]any{
			"timestamp": now.UTC().Format(time.RFC3339),
			"tools":     map[string]any{"components": []map[string]any{{"type": "application", "name": "rampart", "version": version}}},
		},
		"components":      components,
		"vulnerabilities": vulns,
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
