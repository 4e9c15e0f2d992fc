package main

import (
	"bytes"
	"context"

	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/scan"
	"github.com/rampartsec/rampart/internal/scan/osv"
)

const scanUsage = `rampart scan [--db FILE] [--format table|json|sarif|vex] [--fail-on LEVEL] [--unknown-severity LEVEL] [--fail-on-not-called] [--output FILE] TARGET...
       rampart scan db import [--db FILE | --remote] [--source NAME] DIR|ZIP
       rampart scan db info [--db FILE | --remote] [--json]
       rampart scan exception add --vuln ID [--binary SHA256] [--service SPIFFE-ID] --reason TEXT --expires 720h|RFC3339
       rampart scan exception list [--json]
       rampart scan exception remove ID
       rampart scan gate set (--default | --entry ID) --severity LEVEL|none [--dry-run] [--unknown-severity LEVEL]
       rampart scan gate list [--json]

  TARGET is a Go binary, a CycloneDX or SPDX JSON SBOM, or an image tarball
  ('docker save' or an OCI layout in a tar), told apart by content.

  Exit status: 0 no finding at or above --fail-on; 3 at least one (called,
  or of unknown reachability; --fail-on-not-called counts the others too);
  1 a target or the database could not be read; 2 a usage mistake.
  Without --fail-on the status is 0 whatever is found.`

// errFindings is exit status 3: the scan worked and found what --fail-on
// names.
type exitCode struct {
	code int
	msg  string
}

func (e exitCode) Error() string { return e.msg }

func defaultDBFile(env *cliEnv) string {
	if d := env.getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "rampart", "osv.db")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rampart", "osv.db")
	}
	return "osv.db"
}

func runScan(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "--help":
			fmt.Fprintln(env.stdout, "Usage: "+scanUsage)
			return nil
		case "db":
			return runScanDB(ctx, env, args[1:])
		case "exception":
			return runScanException(ctx, env, args[1:])
		case "gate":
			return runScanGate(ctx, env, args[1:])
		}
	}
	fs := newFlags(env, "scan", scanUsage)
	dbFile := fs.String("db", defaultDBFile(env), "the local vulnerability database ('rampart scan db import' writes it)")
	format := fs.String("format", "table", "table, json, sarif (SARIF 2.1.0) or vex (CycloneDX 1.5 VEX of the not-called findings)")
	failOn := fs.String("fail-on", "", "exit 3 if a finding is at or above LOW, MEDIUM, HIGH or CRITICAL")
	unknown := fs.String("unknown-severity", "HIGH", "what an unrated finding counts as (the Go database rates none)")
	notCalled := fs.Bool("fail-on-not-called", false, "let not-called findings fail too")
	output := fs.String("output", "", "write the report to FILE instead of standard output")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("nothing to scan; usage: %s", scanUsage)
	}
	th := scan.Threshold{NotCalled: *notCalled}
	var err error
	if th.Unknown, err = osv.ParseLevel(*unknown); err != nil {
		return usagef("--unknown-severity: %v", err)
	}
	if *failOn != "" {
		if th.Min, err = osv.ParseLevel(*failOn); err != nil || th.Min < osv.Low {
			return usagef("--fail-on %q: want LOW, MEDIUM, HIGH or CRITICAL", *failOn)
		}
	}
	switch *format {
	case "table", "json", "sarif", "vex":
	default:
		return usagef("--format %q: want table, json, sarif or vex", *format)
	}
	db, err := osv.OpenFile(*dbFile)
	if err != nil {
		return err
	}
	defer db.Close()
	s := &scan.Scanner{DB: db}
	var reps []*scan.Report
	for _, t := range fs.Args() {
		r, err := s.ScanFile(t)
		if err != nil {
			return err
		}
		reps = append(reps, r)
	}
	var out io.Writer = env.stdout
	var buf bytes.Buffer
	if *output != "" {
		out = &buf
	}
	switch *format {
	case "table":
		err = scan.WriteTable(out, reps, th)
	case "json":
		err = scan.WriteJSON(out, reps)
	case "sarif":
		err = scan.WriteSARIF(out, reps, th, version)
	case "vex":
		err = scan.WriteVEX(out, reps, time.Now(), version)
	}
	if err != nil {
		return err
	}
	if *output != "" {
		if err := os.WriteFile(*output, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *failOn == "" {
		return nil
	}
	var failing []scan.Finding
	for _, r := range reps {
		failing = append(failing, th.Failing(r.Findings)...)
	}
	if len(failing) > 0 {
		return exitCode{3, fmt.Sprintf("%d findings at or above %s (first: %s in %s %s, %s)", len(failing), th.Min,
			failing[0].ID, failing[0].Package, failing[0].Version, failing[0].Reachability)}
	}
	return nil
}

func runScanDB(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || (args[0] != "import" && args[0] != "info") {
		return usagef("usage: %s", scanUsage)
	}
	verb := args[0]
	fs := newFlags(env, "scan db "+verb, scanUsage)
	ac := addAdminFlags(fs)
	dbFile := fs.String("db", defaultDBFile(env), "the local vulnerability database file")
	remote := fs.Bool("remote", false, "the server's database (RAMPART_SERVER), which the inventory and the gate use")
	source := fs.String("source", "", "what to record as the source (default: the path imported)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if verb == "info" {
		var info api.ScanDB
		if *remote {
			c, err := ac.client(env)
			if err != nil {
				return err
			}
			if err := c.Do(ctx, http.MethodGet, "/v1/scan/db", nil, &info); err != nil {
				return err
			}
		} else {
			db, err := osv.OpenFile(*dbFile)
			if err != nil {
				return err
			}
			m := db.Meta()
			db.Close()
			info = api.ScanDB{Source: m.Source, ImportedAt: m.ImportedAt, Records: m.Records, Digest: m.Digest}
		}
		if *asJSON {
			return printJSON(env, info)
		}
		return printFields(env, "source", info.Source, "imported", info.ImportedAt.Format(time.RFC3339),
			"records", fmt.Sprint(info.Records), "digest", info.Digest)
	}
	if fs.NArg() != 1 {
		return usagef("scan db import takes one DIR or ZIP of OSV records")
	}
	src := fs.Arg(0)
	entries, err := osv.ReadPath(src)
	if err != nil {
		return err
	}
	if *source == "" {
		abs, err := filepath.Abs(src)
		if err != nil {
			return err
		}
		*source = abs
	}
	if *remote {
		c, err := ac.client(env)
		if err != nil {
			return err
		}
		// The server reads the records again: it trusts nothing it is sent.
		body, err := osv.Zip(osv.Dedupe(entries))
		if err != nil {
			return err
		}
		var info api.ScanDB
		if err := c.DoRaw(ctx, http.MethodPost, "/v1/scan/db?source="+url.QueryEscape(*source), "application/zip", body, &info); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "imported %d records into the server's database (generation %d)\n", info.Records, info.Generation)
		return nil
	}
	meta := osv.Meta{Source: *source, ImportedAt: time.Now().UTC()}
	if err := osv.WriteFile(*dbFile, meta, entries); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "imported %d records into %s\n", len(osv.Dedupe(entries)), *dbFile)
	return nil
}

func runScanException(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", scanUsage)
	}
	verb := args[0]
	fs := newFlags(env, "scan exception "+verb, scanUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var ex api.ScanException
	var expires string
	switch verb {
	case "add":
		fs.StringVar(&ex.Vuln, "vuln", "", "the OSV id (or an alias such as a CVE) excepted")
		fs.StringVar(&ex.Binary, "binary", "", "only for the executable with this SHA-256")
		fs.StringVar(&ex.Service, "service", "", "only for this SPIFFE ID")
		fs.StringVar(&ex.Reason, "reason", "", "why (recorded, audited)")
		fs.StringVar(&expires, "expires", "", "when the exception ends: a duration from now (720h) or an RFC 3339 time")
	case "list", "remove":
	default:
		return usagef("unknown verb %q; usage: %s", verb, scanUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		if ex.Vuln == "" || ex.Reason == "" || expires == "" {
			return usagef("scan exception add needs --vuln, --reason and --expires")
		}
		if d, err := time.ParseDuration(expires); err == nil {
			if d <= 0 {
				return usagef("--expires must be in the future")
			}
			ex.Expires = time.Now().Add(d).UTC().Truncate(time.Second)
		} else if ex.Expires, err = time.Parse(time.RFC3339, expires); err != nil {
			return usagef("--expires %q: want a duration (720h) or an RFC 3339 time", expires)
		}
		var out api.ScanException
		if err := c.Do(ctx, http.MethodPost, "/v1/scan/exceptions", ex, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintln(env.stdout, out.ID)
		return nil
	case "list":
		var out []api.ScanException
		if err := c.Do(ctx, http.MethodGet, "/v1/scan/exceptions", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tVULN\tBINARY\tSERVICE\tEXPIRES\tREASON")
		for _, e := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Vuln, orAny(short(e.Binary)), orAny(e.Service), e.Expires.Format(time.RFC3339), e.Reason)
		}
		return tw.Flush()
	default: // remove
		if fs.NArg() != 1 {
			return usagef("scan exception remove takes one ID")
		}
		return c.Do(ctx, http.MethodDelete, "/v1/scan/exceptions/"+url.PathEscape(fs.Arg(0)), nil, nil)
	}
}

func runScanGate(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || (args[0] != "set" && args[0] != "list") {
		return usagef("usage: %s", scanUsage)
	}
	verb := args[0]
	fs := newFlags(env, "scan gate "+verb, scanUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var g api.ScanGate
	def := fs.Bool("default", false, "the trust domain's default gate")
	fs.StringVar(&g.Entry, "entry", "", "the registration entry's gate (overrides the default)")
	fs.StringVar(&g.Severity, "severity", "", "refuse an SVID to a binary with a reachable finding at or above LOW, MEDIUM, HIGH or CRITICAL; none: no gate")
	fs.BoolVar(&g.DryRun, "dry-run", false, "log and audit what would be refused, refuse nothing")
	fs.StringVar(&g.Unknown, "unknown-severity", "", "what an unrated finding counts as (default HIGH)")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	if verb == "list" {
		var out []api.ScanGate
		if err := c.Do(ctx, http.MethodGet, "/v1/scan/gates", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENTRY\tSEVERITY\tDRY-RUN\tUNRATED-COUNTS-AS")
		for _, g := range out {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", orDefault(g.Entry), g.Severity, g.DryRun, g.Unknown)
		}
		return tw.Flush()
	}
	if *def == (g.Entry != "") {
		return usagef("scan gate set needs exactly one of --default and --entry")
	}
	if g.Severity == "" {
		return usagef("scan gate set needs --severity (LOW, MEDIUM, HIGH, CRITICAL or none)")
	}
	if strings.EqualFold(g.Severity, "none") {
		g.Severity = ""
	}
	for flag, v := range map[string]string{"--severity": g.Severity, "--unknown-severity": g.Unknown} {
		if l, err := osv.ParseLevel(v); v != "" && (err != nil || l < osv.Low) {
			return usagef("%s %q: want LOW, MEDIUM, HIGH or CRITICAL", flag, v)
		}
	}
	var out api.ScanGate
	return c.Do(ctx, http.MethodPut, "/v1/scan/gates", g, &out)
}

func orAny(s string) string {
	if s == "" {
		return "(any)"
	}
	return s
}

func orDefault(s string) string {
	if s == "" {
		return "(default)"
	}
	return s
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}
