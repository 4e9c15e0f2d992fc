package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/store"
)

const detectUsage = `rampart detect test|rules

  test [--rules FILE] (--log FILE.jsonl | --data SERVER-DATA-DIR) [--fires RULE ...] [--quiet RULE ...] [--json]
      Replays audit entries through the rules (default: the built-in ones)
      and prints the alerts. --fires RULE: fail unless RULE raises an alert;
      --quiet RULE: fail if it does. The log is JSON lines, one entry each
      (rampart audit export --format jsonl writes them). For users' CI.
  rules
      Prints the built-in rules, to copy and edit for --detect-rules.`

func runDetect(_ context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+detectUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	switch args[0] {
	case "rules":
		_, err := env.stdout.Write(detect.DefaultRules())
		return err
	case "test":
	default:
		return usagef("unknown verb %q; usage: %s", args[0], detectUsage)
	}
	fs := newFlags(env, "detect test", detectUsage)
	rulesFile := fs.String("rules", "", "rules file (default: the built-in rules)")
	logFile := fs.String("log", "", "audit entries as JSON lines ('-': standard input)")
	data := fs.String("data", "", "read the server's audit log in DATA/audit instead")
	var fires, quiet repeatFlag
	fs.Var(&fires, "fires", "a rule that must raise an alert (repeatable)")
	fs.Var(&quiet, "quiet", "a rule that must not raise an alert (repeatable)")
	asJSON := fs.Bool("json", false, "print alerts as JSON lines")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	src := detect.DefaultRules()
	if *rulesFile != "" {
		var err error
		if src, err = os.ReadFile(*rulesFile); err != nil {
			return err
		}
	}
	rs, err := detect.Parse(src)
	if err != nil {
		return fmt.Errorf("%s: %w", *rulesFile, err)
	}
	for _, name := range append(slices.Clone([]string(fires)), quiet...) {
		if !rs.HasRule(name) {
			return usagef("no rule named %q in the rules", name)
		}
	}
	rep := detect.NewReplay(rs)
	switch {
	case *data != "" && *logFile == "":
		err = rep.ScanLog(filepath.Join(*data, "audit"))
	case *logFile == "-" && *data == "":
		err = rep.ReadJSONLines("standard input", os.Stdin)
	case *logFile != "" && *data == "":
		f, ferr := os.Open(*logFile)
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		err = rep.ReadJSONLines(*logFile, f)
	default:
		return usagef("give exactly one of --log FILE and --data DIR")
	}
	if err != nil {
		return err
	}
	alerts := rep.Alerts()
	tw := table(env, "RULE", "SEVERITY", "FIRST", "COUNT", "SUMMARY")
	for _, a := range alerts {
		if *asJSON {
			b, _ := json.Marshal(detect.AlertToAPI(a))
			fmt.Fprintln(env.stdout, string(b))
			continue
		}
		tw.row(a.Rule, a.Severity, strconv.FormatInt(a.FirstIndex, 10), strconv.FormatInt(a.Count, 10), a.Summary)
	}
	if !*asJSON {
		tw.flush()
		fmt.Fprintf(env.stderr, "%d entries, %d rules, %d alerts\n", rep.Entries(), rep.Rules(), len(alerts))
	}
	if problems := rep.Check(fires, quiet); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(env.stdout, "FAIL", p)
		}
		return errors.New("detection test failed")
	}
	return nil
}

const alertUsage = `rampart alert list|show|ack|resolve|reopen

  list [--status open|acknowledged|resolved] [--rule NAME] [--since RFC3339] [--limit N] [--json]
  show ID [--json]
  ack ID [--note TEXT]        acknowledge: someone is on it
  resolve ID [--note TEXT]
  reopen ID [--note TEXT]

Talks to the server's admin API (RAMPART_SERVER, RAMPART_ADMIN_TOKEN_FILE, RAMPART_CA_BUNDLE).`

func runAlert(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+alertUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	verb := args[0]
	if !slices.Contains([]string{"list", "show", "ack", "resolve", "reopen"}, verb) {
		return usagef("unknown verb %q; usage: %s", verb, alertUsage)
	}
	fs := newFlags(env, "alert "+verb, alertUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	status := fs.String("status", "", "list: only alerts with this status")
	rule := fs.String("rule", "", "list: only alerts of this rule")
	since := fs.String("since", "", "list: only alerts first seen at or after this RFC 3339 time")
	limit := fs.Int("limit", 0, "list: at most this many")
	note := fs.String("note", "", "ack/resolve/reopen: a note for the audit log")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		if *status != "" && !slices.Contains([]string{"open", "acknowledged", "resolved"}, *status) {
			return usagef("--status %q: want open, acknowledged or resolved", *status)
		}
		if *since != "" {
			if _, err := time.Parse(time.RFC3339, *since); err != nil {
				return usagef("--since %q: want an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", *since)
			}
		}
		q := url.Values{}
		for k, v := range map[string]string{"status": *status, "rule": *rule, "since": *since} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		var as []api.Alert
		if err := c.Do(ctx, http.MethodGet, "/v1/alerts?"+q.Encode(), nil, &as); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, as)
		}
		tw := table(env, "ID", "RULE", "SEVERITY", "STATUS", "FIRST SEEN", "COUNT", "SUMMARY")
		for _, a := range as {
			tw.row(a.ID, a.Rule, a.Severity, a.Status, fmtTime(a.FirstSeen), strconv.FormatInt(a.Count, 10), a.Summary)
		}
		return tw.flush()
	case "show", "ack", "resolve", "reopen":
		if fs.NArg() != 1 {
			return usagef("alert %s needs one alert ID", verb)
		}
		id := fs.Arg(0)
		var a api.Alert
		if verb == "show" {
			err = c.Do(ctx, http.MethodGet, "/v1/alerts/"+pathEscape(id), nil, &a)
		} else {
			st := map[string]string{"ack": store.AlertAcknowledged, "resolve": store.AlertResolved, "reopen": store.AlertOpen}[verb]
			err = c.Do(ctx, http.MethodPost, "/v1/alerts/"+pathEscape(id)+"/status", api.SetAlertStatusRequest{Status: st, Note: *note}, &a)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, a)
		}
		return printFields(env, "id", a.ID, "rule", a.Rule, "severity", a.Severity, "status", a.Status, "summary", a.Summary,
			"group", a.Group, "first seen", fmtTime(a.FirstSeen), "last seen", fmtTime(a.LastSeen), "count", strconv.FormatInt(a.Count, 10),
			"audit entries", fmt.Sprintf("%d to %d (rampart audit query)", a.FirstIndex, a.LastIndex))
	}
	return usagef("unknown verb %q; usage: %s", verb, alertUsage)
}
