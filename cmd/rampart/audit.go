package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
)

const auditUsage = `rampart audit verify|query|export --data SERVER-DATA-DIR ...

  verify [--witness CHECKPOINT ...] [--json]
      Re-derives the audit log's Merkle tree from its entries and checks every
      published checkpoint, plus checkpoints a witness kept elsewhere: an
      edited, deleted, inserted or reordered entry is reported with its index.
      Exit status 1 when anything is wrong.
  query [FILTERS] [--limit N] [--json]
      Prints matching entries, oldest first (--json: JSON lines).
  export --format jsonl|syslog|es-bulk [FILTERS] [--from INDEX] [--out FILE]
      Writes matching entries for other tools: JSON lines, RFC 5424 syslog
      lines, or an Elasticsearch/OpenSearch _bulk body (document IDs are
      stable, so re-exporting does not duplicate).

FILTERS: --since/--until (RFC 3339 time, or a duration ago such as 24h),
--actor, --target, --action (exact, or a pattern such as 'svid.*'),
--outcome success|failure|denied.

They read DATA/audit directly and are safe while the server runs.`

func runAudit(_ context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+auditUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	switch args[0] {
	case "verify":
	case "query", "export":
		return runAuditRead(env, args[0], args[1:])
	default:
		return usagef("unknown verb %q; usage: %s", args[0], auditUsage)
	}
	fs := newFlags(env, "audit verify", auditUsage)
	data := fs.String("data", "rampart-data", "the server's data directory (reads DATA/audit and DATA/audit.pub)")
	pub := fs.String("key", "", "verifier key file (default DATA/audit.pub)")
	var witnesses repeatFlag
	fs.Var(&witnesses, "witness", "a checkpoint file kept by a witness (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if *pub == "" {
		*pub = filepath.Join(*data, "audit.pub")
	}
	vkey, err := os.ReadFile(*pub)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return fmt.Errorf("verifier key %s: %w", *pub, err)
	}
	var extra [][]byte
	for _, w := range witnesses {
		b, err := os.ReadFile(w)
		if err != nil {
			return err
		}
		extra = append(extra, b)
	}
	rep, err := audit.Verify(filepath.Join(*data, "audit"), verifier, extra...)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(env, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.stdout, "%d entries, %d leaves recorded, %d checkpoints checked\n", rep.Entries, rep.Leaves, rep.Checkpoints)
		for _, p := range rep.Problems {
			fmt.Fprintln(env.stdout, "PROBLEM", p)
		}
		if rep.OK() {
			fmt.Fprintln(env.stdout, "OK: the log is consistent with every checkpoint")
		}
	}
	if !rep.OK() {
		return errors.New("the audit log does not verify")
	}
	return nil
}

// runAuditRead implements audit query and audit export.
func runAuditRead(env *cliEnv, verb string, args []string) error {
	fs := newFlags(env, "audit "+verb, auditUsage)
	data := fs.String("data", "rampart-data", "the server's data directory")
	since := fs.String("since", "", "entries at or after this time (RFC 3339, or a duration ago: 24h)")
	until := fs.String("until", "", "entries before this time (RFC 3339, or a duration ago)")
	var f audit.Filter
	fs.StringVar(&f.Actor, "actor", "", "actor SPIFFE ID or user (pattern)")
	fs.StringVar(&f.Target, "target", "", "target (pattern)")
	fs.StringVar(&f.Action, "action", "", "action, e.g. svid.issue or 'authz.*'")
	fs.StringVar(&f.Outcome, "outcome", "", "success, failure or denied")
	limit := fs.Int("limit", 0, "at most this many entries (query default 1000; 0 with export: all)")
	asJSON := fs.Bool("json", false, "print JSON lines (query)")
	format := fs.String("format", audit.FormatJSONLines, "export format: jsonl, syslog or es-bulk")
	from := fs.Int64("from", 0, "first log index to read (export; for incremental exports)")
	out := fs.String("out", "", "write to this file instead of standard output (export)")
	index := fs.String("es-index", "rampart-audit", "Elasticsearch index (es-bulk)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	now := time.Now()
	var err error
	if f.Since, err = parseWhen(*since, now); err != nil {
		return usagef("--since: %v", err)
	}
	if f.Until, err = parseWhen(*until, now); err != nil {
		return usagef("--until: %v", err)
	}
	if err := f.Validate(); err != nil {
		return usagef("%v", err)
	}
	if verb == "query" && *limit == 0 {
		*limit = 1000
	}
	w := env.stdout
	if verb == "export" && *out != "" {
		file, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer file.Close()
		w = file
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	defer bw.Flush()
	x := &audit.Exporter{W: bw, Format: *format, Index: *index}
	x.Hostname, _ = os.Hostname()
	if pub, err := os.ReadFile(filepath.Join(*data, "audit.pub")); err == nil {
		x.Origin, _, _ = strings.Cut(strings.TrimSpace(string(pub)), "+")
	}
	tw := table(env, "INDEX", "TIME", "ACTION", "OUTCOME", "ACTOR", "TARGET", "REASON")
	n := 0
	err = audit.Scan(filepath.Join(*data, "audit"), *from, func(i int64, raw []byte) error {
		e, err := audit.ParseEntry(raw)
		if err != nil {
			return fmt.Errorf("entry %d: %w (run rampart audit verify)", i, err)
		}
		if !f.Match(e) {
			return nil
		}
		switch {
		case verb == "export" || *asJSON:
			if err := x.Write(i, e); err != nil {
				return err
			}
		default:
			actor := e.Actor.SpiffeID
			if e.Actor.User != "" {
				actor = strings.TrimPrefix(actor+" user:"+e.Actor.User, " ")
			}
			tw.row(strconv.FormatInt(i, 10), e.Time.UTC().Format(time.RFC3339), e.Action, e.Outcome, actor, dash(e.Target), dash(e.Reason))
		}
		if n++; *limit > 0 && n >= *limit {
			return audit.ErrStop
		}
		return nil
	})
	if err != nil {
		return err
	}
	if verb == "query" && !*asJSON {
		if err := tw.flush(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (24h)", s)
	}
	return t, nil
}
