package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/scan/scantest"
)

// TestScanExitCodes runs 'rampart scan' on real binaries against a local
// database imported from the pinned Go vulnerability database: exit 3
// only when --fail-on is met, 1 when a target cannot be read, 2 for a
// usage mistake; SARIF and VEX are what they claim to be.
func TestScanExitCodes(t *testing.T) {
	vulndb, err := scantest.VulnDB()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	called, err := scantest.Build(dir, scantest.Called)
	if err != nil {
		t.Fatal(err)
	}
	notCalled, err := scantest.Build(dir, scantest.NotCalled)
	if err != nil {
		t.Fatal(err)
	}
	records := filepath.Join(dir, "osv")
	if err := scantest.CopyRecords(vulndb, records, "GO-2022-1059", "GO-2021-0113"); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "osv.db")
	sh := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(k string) string {
			if k == "RAMPART_DB" {
				return db
			}
			return ""
		}}
		return run(context.Background(), env, args), out.String(), errb.String()
	}
	if code, out, errs := sh("scan", "db", "import", records); code != 0 || !strings.Contains(out, "imported 2 records") {
		t.Fatalf("import: %d %s %s", code, out, errs)
	}
	if code, out, _ := sh("scan", "db", "info"); code != 0 || !strings.Contains(out, "records") {
		t.Errorf("info: %d %s", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"scan", called}, 0, "called"},
		{[]string{"scan", "--fail-on", "HIGH", called}, 3, "GO-2022-1059"},
		{[]string{"scan", "--fail-on", "CRITICAL", called}, 0, ""},
		{[]string{"scan", "--fail-on", "CRITICAL", "--unknown-severity", "CRITICAL", called}, 3, ""},
		{[]string{"scan", "--fail-on", "LOW", notCalled}, 0, "not-called"},
		{[]string{"scan", "--fail-on", "LOW", "--fail-on-not-called", notCalled}, 3, ""},
		{[]string{"scan", "--fail-on", "LOW", filepath.Join(dir, "missing")}, 1, "no such file"},
		{[]string{"scan", "--fail-on", "URGENT", called}, 2, "--fail-on"},
		{[]string{"scan", "--format", "xml", called}, 2, "--format"},
		{[]string{"scan", "--db", filepath.Join(dir, "none.db"), called}, 1, "import one"},
	} {
		code, out, errs := sh(tc.args...)
		if code != tc.code || !strings.Contains(out+errs, tc.want) {
			t.Errorf("%v: exit %d, want %d containing %q\n%s%s", tc.args, code, tc.code, tc.want, out, errs)
		}
	}
	_, sarif, _ := sh("scan", "--format", "sarif", called)
	var doc struct {
		Version string `json:"version"`
		Runs    []struct {
			Results []struct {
				RuleID string `json:"ruleId"`
				Level  string `json:"level"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(sarif), &doc); err != nil || doc.Version != "2.1.0" || len(doc.Runs) != 1 || len(doc.Runs[0].Results) != 1 ||
		doc.Runs[0].Results[0].RuleID != "GO-2022-1059" || doc.Runs[0].Results[0].Level != "error" {
		t.Errorf("SARIF: %v %+v", err, doc)
	}
	_, vex, _ := sh("scan", "--format", "vex", called, notCalled)
	var bom struct {
		BOMFormat       string `json:"bomFormat"`
		Vulnerabilities []struct {
			ID       string `json:"id"`
			Analysis struct {
				State, Justification string
			} `json:"analysis"`
			Affects []struct{ Ref string } `json:"affects"`
		} `json:"vulnerabilities"`
	}
	if err := json.Unmarshal([]byte(vex), &bom); err != nil || bom.BOMFormat != "CycloneDX" || len(bom.Vulnerabilities) != 1 {
		t.Fatalf("VEX: %v %s", err, vex)
	}
	if v := bom.Vulnerabilities[0]; v.ID != "GO-2022-1059" || v.Analysis.State != "not_affected" || v.Analysis.Justification != "code_not_reachable" ||
		len(v.Affects) != 1 || v.Affects[0].Ref != "pkg:golang/golang.org/x/text@v0.3.7" {
		t.Errorf("VEX states the not-called finding only: %+v", v)
	}
}
