package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/witness"
	"github.com/rampartsec/rampart/internal/objstore"
)

const auditUsage = `rampart audit verify|query|export|repair --data SERVER-DATA-DIR ...
       rampart audit witness --server ADDR --ca-bundle FILE --key AUDIT.PUB --dir DIR [--interval 30s] [--once]
       rampart audit fetch --archive s3://BUCKET/PREFIX?endpoint=URL --data DIR

  verify [--witness CHECKPOINT ...] [--strict] [--json]
      Re-derives the audit log's Merkle tree from its entries (in entries.log
      and the sealed segments) and checks it against the leaves recorded when
      they were appended, every published checkpoint, checkpoints a witness
      kept elsewhere, and the tile/ copies that clients read: an edited,
      deleted, inserted or reordered entry, a checkpoint the entries no
      longer produce and a tile that disagrees with them are each reported
      (PROBLEM, with the index and the file). It warns (WARNING) about what no
      signature vouches for: entries past the newest checkpoint ("not yet
      covered"), parts of the log moved aside by repair, and tiles written
      for entries the log no longer holds (a rollback or a torn write; the
      warning names the tile and the entries in it). Exit status 1 on any
      problem; with --strict on any warning too.
  query [FILTERS] [--limit N] [--json]
      Prints matching entries, oldest first (--json: JSON lines).
  export --format jsonl|syslog|es-bulk [FILTERS] [--from INDEX] [--out FILE]
      Writes matching entries for other tools: JSON lines, RFC 5424 syslog
      lines, or an Elasticsearch/OpenSearch _bulk body (document IDs are
      stable, so re-exporting does not duplicate).
  repair [--json]
      With the server stopped, makes a log that the server refuses to open
      (a damaged entries.log) usable again, deleting nothing: the damaged
      tail, with the offsets, leaf hashes, checkpoints and tiles that
      recorded it, moves to DATA/audit/quarantine/NAME/; the log is cut back
      to the entries before it; the move is recorded as an audit.repair
      entry (printed) under a new checkpoint. See docs/audit.md.

FILTERS: --since/--until (RFC 3339 time, or a duration ago such as 24h),
--actor, --target, --action (exact, or a pattern such as 'svid.*'),
--outcome success|failure|denied, --source server|shipped|PATTERN (server:
what the server wrote itself, the only entries that can show an admin's or
the server's action; shipped: what agents, proxies and SDK services shipped,
each under its own SPIFFE ID). An entry with details.count stands for that
many identical events (aggregated decisions or refusals).

verify, query and export read DATA/audit directly and are safe while the
server runs.

  fetch
      Copies an audit archive (the sealed segments and checkpoints a server
      started with --audit-archive keeps in S3-compatible storage) into
      DATA/audit, where verify (give --key: the archive does not vouch for
      its own key), query and export read it like a live log. Credentials
      come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.

  witness
      Run on another machine: fetches the server's signed checkpoint every
      --interval, checks its signature and a consistency proof that it
      extends the last one kept, and keeps it in DIR/checkpoints. A log
      rewritten by anyone holding the server's disks and keys no longer
      extends what the witness saw: it says so (exit status 1 with --once;
      an error line each round otherwise) and keeps the evidence in
      DIR/evidence. Give DIR/checkpoints/* to "verify --witness" later.`

func runAudit(ctx context.Context, env *cliEnv, args []string) error {
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
	case "witness":
		return runAuditWitness(ctx, env, args[1:])
	case "fetch":
		return runAuditFetch(ctx, env, args[1:])
	case "repair":
		return runAuditRepair(env, args[1:])
	default:
		return usagef("unknown verb %q; usage: %s", args[0], auditUsage)
	}
	fs := newFlags(env, "audit verify", auditUsage)
	data := fs.String("data", "rampart-data", "the server's data directory (reads DATA/audit and DATA/audit.pub)")
	pub := fs.String("key", "", "verifier key file (default DATA/audit.pub)")
	var witnesses repeatFlag
	fs.Var(&witnesses, "witness", "a checkpoint file kept by a witness (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON")
	strict := fs.Bool("strict", false, "fail on warnings too: entries past the newest checkpoint, quarantined parts of the log, tiles past the end of the log")
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
		printVerify(env, rep)
	}
	switch {
	case !rep.OK():
		return fmt.Errorf("the audit log does not verify: %s", count(int64(len(rep.Problems)), "problem", "problems"))
	case *strict && !rep.Clean():
		return fmt.Errorf("the audit log does not verify under --strict: %s", count(int64(len(rep.Warnings)), "warning", "warnings"))
	}
	return nil
}

// printVerify prints a verify report for people: what was checked, what
// is not covered, then each warning and problem.
func printVerify(env *cliEnv, rep *audit.Report) {
	w := env.stdout
	if rep.Archive {
		fmt.Fprintf(w, "archive: %s in %s, %s checked, %d of larger trees not checked (entries not sealed when copied)\n",
			count(rep.Entries, "entry", "entries"), count(int64(rep.Segments), "sealed segment", "sealed segments"), count(int64(rep.Checkpoints), "checkpoint", "checkpoints"), rep.Beyond)
	} else {
		fmt.Fprintf(w, "checked: %s (%d of them in %s) against %s recorded, %s, %s and %s\n",
			count(rep.Entries, "entry", "entries"), rep.Sealed, count(int64(rep.Segments), "sealed segment", "sealed segments"), count(rep.Leaves, "leaf", "leaves"),
			count(int64(rep.Checkpoints), "checkpoint", "checkpoints"), count(int64(rep.Tiles), "hash tile", "hash tiles"), count(int64(rep.Bundles), "entry bundle", "entry bundles"))
	}
	fmt.Fprintf(w, "not yet covered: %d entries past the newest checkpoint (tree size %d)\n", rep.Uncovered, rep.Covered)
	for _, q := range rep.Quarantined {
		if q.Kind == audit.QuarantineTornWrite && q.End <= q.First && q.Unchecked == 0 {
			fmt.Fprintln(w, q.Summary) // nothing acknowledged was lost: not a warning
		}
	}
	for _, p := range rep.Warnings {
		if p.Kind == "uncovered" {
			continue // the line above
		}
		if p.Kind == "quarantined" && p.Path != "" && p.Index >= 0 {
			fmt.Fprintln(w, "WARNING", p.Detail)
			continue
		}
		fmt.Fprintln(w, "WARNING", p)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "PROBLEM", p)
	}
	switch {
	case !rep.OK():
	case rep.Clean():
		fmt.Fprintln(w, "OK: the log is consistent with every checkpoint, and every checkpoint covers every entry")
	default:
		fmt.Fprintf(w, "OK: the log is consistent with every checkpoint (%s; --strict fails on them)\n", count(int64(len(rep.Warnings)), "warning", "warnings"))
	}
}

func count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.FormatInt(n, 10) + " " + many
}

// runAuditRepair implements audit repair.
func runAuditRepair(env *cliEnv, args []string) error {
	fs := newFlags(env, "audit repair", auditUsage)
	data := fs.String("data", "rampart-data", "the server's data directory (the server must be stopped)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	keyPath := filepath.Join(*data, "keys", "audit.key")
	skey, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("audit repair signs a checkpoint with the server's audit key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return fmt.Errorf("audit key %s: %w", keyPath, err)
	}
	// The entry names who ran the repair: the local account.
	who := strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	dir := filepath.Join(*data, "audit")
	res, err := audit.Repair(dir, signer, audit.Options{Actor: audit.Actor{User: "local:" + who}, Now: time.Now})
	if err != nil {
		return err
	}
	if res == nil {
		fmt.Fprintf(env.stdout, "nothing to repair: every acknowledged entry of %s reads back as it was recorded\n", dir)
		return nil
	}
	q := res.Quarantine
	qdir := filepath.Join(dir, "quarantine", q.Name)
	// The server's table of agent streams is derived from the log; it is
	// rebuilt from the repaired log, and the old one is kept beside the
	// entries it described.
	if err := os.Rename(filepath.Join(*data, "audit-streams.json"), filepath.Join(qdir, "audit-streams.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit repair: %w", err)
	}
	if *asJSON {
		return printJSON(env, map[string]any{"quarantine": qdir, "moved": q, "index": res.Index, "entry": json.RawMessage(res.Entry), "checkpoint": string(res.Checkpoint)})
	}
	w := env.stdout
	reason := q.Reason
	if reason == "" {
		reason = "the file ends there"
	}
	fmt.Fprintf(w, "repaired %s: entries.log was damaged at offset %d (entry %d: %s)\n", dir, q.Offset, q.First, reason)
	if q.End() > q.First {
		fmt.Fprintf(w, "moved aside: entries %d to %d", q.First, q.End()-1)
	} else {
		fmt.Fprint(w, "moved aside: no acknowledged entry")
	}
	fmt.Fprintf(w, " (%d bytes of entries.log, %d offsets, %d leaf hashes, %d checkpoints, %d tiles)\n", q.Bytes, q.Offsets, q.Leaves, len(q.Checkpoints), q.Tiles)
	fmt.Fprintf(w, "kept in quarantine: %s (nothing was deleted; keep it with the log)\n", qdir)
	fmt.Fprintf(w, "recorded as entry %d:\n%s\n", res.Index, res.Entry)
	fmt.Fprintf(w, "signed a checkpoint of tree size %d\n", res.Index+1)
	fmt.Fprintf(w, "next: rampart audit verify --data %s (it reports what the quarantine holds), then start the server.\n", *data)
	if len(q.Checkpoints) > 0 {
		fmt.Fprintln(w, "witnesses that kept a checkpoint of the old tree will report the log as inconsistent: see docs/audit.md, \"A damaged log\".")
	}
	return nil
}

func runAuditFetch(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "audit fetch", auditUsage)
	archive := fs.String("archive", "", "the archive: s3://BUCKET[/PREFIX][?endpoint=URL&region=R] (required)")
	data := fs.String("data", "rampart-archive", "directory to copy it into (as DATA/audit)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *archive == "" {
		return usagef("--archive is required")
	}
	b, err := openBucket("--archive", *archive)
	if err != nil {
		return err
	}
	dir := filepath.Join(*data, "audit")
	if _, err := os.Stat(filepath.Join(dir, "entries.log")); err == nil {
		return fmt.Errorf("%s holds a live log; fetch into another directory", dir)
	}
	n, err := audit.Fetch(ctx, b, dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "fetched %d entries from %s into %s\nverify: rampart audit verify --data %s --key AUDIT.PUB\n", n, b, dir, *data)
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
	fs.StringVar(&f.Source, "source", "", "server (written by the server), shipped (by agents, proxies, SDK services) or a pattern on the source")
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
	switch *format {
	case audit.FormatJSONLines, audit.FormatSyslog, audit.FormatESBulk:
	default:
		return usagef("--format %q: want jsonl, syslog or es-bulk", *format)
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
	tw := table(env, "INDEX", "TIME", "ACTION", "OUTCOME", "ACTOR", "TARGET", "SOURCE", "COUNT", "REASON")
	n := 0
	var shown *counter // a long export shows how far it is, on a terminal
	if verb == "export" && *out != "" {
		shown = newCounter(progressTo(env), "entries read")
		defer shown.done()
	} else {
		shown = newCounter(nil, "")
	}
	scan := func(fn func(int64, []byte) error) error { return audit.Scan(filepath.Join(*data, "audit"), *from, fn) }
	if *from == 0 && (!f.Since.IsZero() || !f.Until.IsZero()) {
		// A time range reads only the blocks of entries that can be in it.
		scan = func(fn func(int64, []byte) error) error {
			return audit.ScanTime(filepath.Join(*data, "audit"), f.Since, f.Until, fn)
		}
	}
	err = scan(func(i int64, raw []byte) error {
		shown.add(1)
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
			count := "1"
			if c, ok := e.Details["count"]; ok {
				count = c
			}
			tw.row(strconv.FormatInt(i, 10), e.Time.UTC().Format(time.RFC3339), e.Action, e.Outcome, actor, dash(e.Target), dash(e.Source), count, dash(e.Reason))
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

func runAuditWitness(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "audit witness", auditUsage)
	server := fs.String("server", "127.0.0.1:8443", "the rampart server")
	bundle := fs.String("ca-bundle", "", "the server's bundle.pem, to verify its TLS certificate")
	pub := fs.String("key", "", "the log's checkpoint verifier key (the server's DATA/audit.pub)")
	dir := fs.String("dir", "rampart-witness", "where the witnessed checkpoints are kept")
	interval := fs.Duration("interval", 30*time.Second, "how often to check")
	once := fs.Bool("once", false, "check once and exit (status 1 if the log is inconsistent)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *pub == "" || *bundle == "" {
		return usagef("audit witness needs --key (the server's audit.pub) and --ca-bundle")
	}
	vkey, err := os.ReadFile(*pub)
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return fmt.Errorf("--key %s: %w", *pub, err)
	}
	pem, err := os.ReadFile(*bundle)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--ca-bundle %s: no certificates", *bundle)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: serverTLS(pool)}}
	w := &witness.Witness{Dir: *dir, Verifier: verifier, Source: &witness.HTTPSource{BaseURL: "https://" + trimScheme(*server), Client: hc}}
	for {
		out, err := w.Observe(ctx)
		if out.Restored {
			fmt.Fprintf(env.stderr, "witness: %s was missing or unreadable; checked against the newest checkpoint kept in %s (%d entries), and kept the new reference\n",
				filepath.Join(*dir, "checkpoint"), filepath.Join(*dir, "checkpoints"), out.Old)
		}
		switch {
		case errors.Is(err, witness.ErrInconsistent):
			fmt.Fprintf(env.stderr, "ALERT: %v (evidence in %s)\n", err, filepath.Join(*dir, "evidence"))
			if *once {
				return err
			}
		case err != nil:
			fmt.Fprintf(env.stderr, "witness: %v\n", err)
			if *once {
				return err
			}
		case out.Grew:
			fmt.Fprintf(env.stdout, "%s consistent: %d -> %d entries\n", time.Now().UTC().Format(time.RFC3339), out.Old, out.New)
		case *once:
			fmt.Fprintf(env.stdout, "%s unchanged: %d entries\n", time.Now().UTC().Format(time.RFC3339), out.New)
		}
		if *once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

// openBucket opens the S3 bucket named by an s3:// URL given to flag.
func openBucket(flag, raw string) (*objstore.Bucket, error) {
	oc, err := objstore.ParseURL(raw)
	if err != nil {
		return nil, usagef("%s: %v", flag, err)
	}
	b, err := objstore.New(oc)
	if err != nil {
		return nil, usagef("%s: %v", flag, err)
	}
	return b, nil
}
