package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/respond"
)

const playbookUsage = `rampart playbook put|list|show|test|run|drill|delete|defaults

  put FILE                 validate a playbook and publish it as its next version
  list                     list playbooks
  show NAME [--version N]  print a playbook's source
  test FILE [--rule R --severity S --group "k=v ..."] [--var k=v]
      validate FILE locally (line and field of any error), then ask the
      server what it would do for a simulated alert; nothing is stored
  run NAME [--alert ID | --rule R --group "k=v"] [--var k=v] [--dry-run] [--wait]
      run a playbook now (--dry-run: say what each step would do)
  drill NAME [--rule R --group "k=v"] [--var k=v] [--dry-run] [--keep]
      run it against a simulated alert (against the live system unless
      --dry-run), wait for it, print the time from alert to containment,
      and lift the quarantines it made (unless --keep)
  delete NAME
  defaults [--write DIR]   print (or write to DIR) the shipped playbooks for the
                           default detection rules, to review and put`

const incidentUsage = `rampart incident list|show|open|note|approve|status|report|scope|quarantine|lift|quarantines

  list [--status open|contained|resolved]
  show ID                         the incident, its timeline and runs
  open --title T [--severity S] [--owner O] [--identity ID]
  note ID TEXT                    add a note to the timeline
  approve REF [--step NAME] [--request ID]
                                  approve the step a run waits for (REF: incident or run ID);
                                  never your own request. It shows the step it approves and
                                  binds the approval to it and to its request: if the run
                                  moved on or the request expired, nothing is approved.
                                  With --svid-cert/--svid-key the approval is made as that
                                  workload (a server --approver; give --step and --request)
  status ID [--set open|contained|resolved] [--severity S] [--owner O] [--reason R]
  report ID                       the post-mortem in Markdown, filled from the timeline
  scope [ID] --identity ID --since T [--until T] [--json]
                                  what the identity reached, refused, exchanged, decrypted,
                                  and the SVIDs issued to it, from the audit log; with an
                                  incident ID the report is attached to it. --data DIR
                                  answers from a server's data directory, offline
  quarantine IDENTITY --reason R [--incident ID]
  lift IDENTITY --reason R        only an operator lifts; the reason is recorded
  quarantines [--all]`

func runPlaybook(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+playbookUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	verb := args[0]
	if !slices.Contains([]string{"put", "list", "show", "test", "run", "drill", "delete", "defaults"}, verb) {
		return usagef("unknown verb %q; usage: %s", verb, playbookUsage)
	}
	fs := newFlags(env, "playbook "+verb, playbookUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	version := fs.Int("version", 0, "show/run: this version (default: the latest)")
	alertID := fs.String("alert", "", "run: the stored alert to run for")
	rule := fs.String("rule", "", "test/run/drill: the simulated alert's rule")
	severity := fs.String("severity", "high", "test/run/drill: the simulated alert's severity")
	group := fs.String("group", "", `test/run/drill: the simulated alert's group ("actor.spiffe_id=spiffe://...")`)
	var vars repeatFlag
	fs.Var(&vars, "var", "a variable, NAME=VALUE (repeatable)")
	dryRun := fs.Bool("dry-run", false, "run/drill: only say what each step would do")
	wait := fs.Duration("wait", 0, "run: wait this long for the run to end or wait for approval")
	keep := fs.Bool("keep", false, "drill: keep the quarantines the drill made")
	write := fs.String("write", "", "defaults: write each playbook to this directory")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if verb == "defaults" {
		ds := respond.Defaults()
		names := slices.Sorted(maps.Keys(ds))
		for _, n := range names {
			if *write != "" {
				if err := os.WriteFile(filepath.Join(*write, n), ds[n], 0o644); err != nil {
					return err
				}
				fmt.Fprintf(env.stdout, "wrote %s\n", filepath.Join(*write, n))
				continue
			}
			fmt.Fprintf(env.stdout, "# %s\n%s\n", n, ds[n])
		}
		return nil
	}
	vm := map[string]string{}
	for _, v := range vars {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return usagef("--var %q: want NAME=VALUE", v)
		}
		vm[k] = val
	}
	simulated := func() *respond.AlertFacts {
		if *rule == "" && *group == "" {
			return nil
		}
		return &respond.AlertFacts{ID: "simulated", Rule: *rule, Severity: *severity, Group: *group, Summary: "simulated alert", FirstSeen: time.Now().UTC()}
	}
	if verb == "test" {
		if fs.NArg() != 1 {
			return usagef("playbook test needs one FILE")
		}
		src, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		// Locally first, against the built-in rules: the line and field
		// of any error without a server.
		rs, _ := detect.Parse(detect.DefaultRules())
		if _, err := respond.Parse(src, nil); err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		if tok, _ := ac.token.get(); tok == "" {
			fmt.Fprintf(env.stdout, "%s: valid (%d built-in rules known; give the admin token to check against the server's rules and dry-run it)\n", fs.Arg(0), len(rs.Rules))
			return nil
		}
		c, err := ac.client(env)
		if err != nil {
			return err
		}
		req := respond.TestRequest{Source: string(src), Vars: vm}
		if a := simulated(); a != nil {
			req.Alert = *a
		}
		var out respond.TestResponse
		if err := c.Do(ctx, http.MethodPost, "/v1/playbooks/test", req, &out); err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintf(env.stdout, "%s: valid; the alert starts it: %v\n", fs.Arg(0), out.Matches)
		printSteps(env, out.Run)
		return nil
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "put":
		if fs.NArg() != 1 {
			return usagef("playbook put needs one FILE")
		}
		src, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		var pi respond.PlaybookInfo
		if err := c.DoRaw(ctx, http.MethodPut, "/v1/playbooks", "application/yaml", src, &pi); err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		if *asJSON {
			return printJSON(env, pi)
		}
		fmt.Fprintf(env.stdout, "playbook %s version %d published (%d steps)\n", pi.Name, pi.Version, pi.Steps)
	case "list":
		var ps []respond.PlaybookInfo
		if err := c.Do(ctx, http.MethodGet, "/v1/playbooks", nil, &ps); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, ps)
		}
		tw := table(env, "NAME", "VERSION", "TRIGGERS", "STEPS", "CREATED", "BY")
		for _, p := range ps {
			tw.row(p.Name, fmt.Sprint(p.Version), strings.Join(p.Triggers, ","), fmt.Sprint(p.Steps), fmtTime(p.CreatedAt), p.CreatedBy)
		}
		return tw.flush()
	case "show":
		if fs.NArg() != 1 {
			return usagef("playbook show needs one NAME")
		}
		var pi respond.PlaybookInfo
		if err := c.Do(ctx, http.MethodGet, "/v1/playbooks/"+url.PathEscape(fs.Arg(0))+fmt.Sprintf("?version=%d", *version), nil, &pi); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, pi)
		}
		fmt.Fprintf(env.stdout, "# %s version %d, by %s at %s\n%s", pi.Name, pi.Version, pi.CreatedBy, fmtTime(pi.CreatedAt), pi.Source)
	case "delete":
		if fs.NArg() != 1 {
			return usagef("playbook delete needs one NAME")
		}
		if err := c.Do(ctx, http.MethodDelete, "/v1/playbooks/"+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "playbook %s deleted\n", fs.Arg(0))
	case "run", "drill":
		if fs.NArg() != 1 {
			return usagef("playbook %s needs one NAME", verb)
		}
		req := respond.RunRequest{Version: *version, AlertID: *alertID, Alert: simulated(), Vars: vm, DryRun: *dryRun, Drill: verb == "drill"}
		if verb == "drill" && req.Alert == nil {
			req.Alert = &respond.AlertFacts{ID: "drill", Rule: "drill", Severity: *severity, Summary: "drill", FirstSeen: time.Now().UTC()}
		}
		// A drill lifts only what it quarantined: an identity already in
		// quarantine before it (a real incident's) stays so (red team:
		// lifting by pattern ended the real quarantine too).
		before := map[string]bool{}
		if verb == "drill" && !*dryRun {
			var inForce []respond.QuarantineInfo
			if err := c.Do(ctx, http.MethodGet, "/v1/quarantines", nil, &inForce); err != nil {
				return err
			}
			for _, q := range inForce {
				before[q.Identity] = true
			}
		}
		var run respond.Run
		if err := c.Do(ctx, http.MethodPost, "/v1/playbooks/"+url.PathEscape(fs.Arg(0))+"/run", req, &run); err != nil {
			return err
		}
		if verb == "drill" && !*dryRun && *wait == 0 {
			*wait = time.Minute
		}
		final, err := waitRun(ctx, c, &run, *wait)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, final)
		}
		fmt.Fprintf(env.stdout, "run %s of %s v%d: %s\n", final.ID, final.Playbook, final.Version, final.State)
		printSteps(env, final)
		if verb == "drill" && !*dryRun {
			if !final.ContainedAt.IsZero() {
				fmt.Fprintf(env.stdout, "alert to containment: %s\n", final.ContainedAt.Sub(final.Alert.FirstSeen).Round(time.Millisecond))
			}
			if !*keep {
				for _, st := range final.Steps {
					if st.Action == "quarantine" && st.State == respond.StepSucceeded && before[st.Args["identity"]] {
						fmt.Fprintf(env.stdout, "left %s in quarantine: it was quarantined before the drill (lift it with rampart incident lift)\n", st.Args["identity"])
						continue
					}
					if st.Action == "quarantine" && st.State == respond.StepSucceeded {
						var lifted []respond.QuarantineInfo
						err := c.Do(ctx, http.MethodPost, "/v1/quarantines/lift", respond.QuarantineRequest{Identity: st.Args["identity"],
							Reason: "drill " + final.ID + " over"}, &lifted)
						if err != nil {
							return fmt.Errorf("lifting the drill's quarantine of %s: %w", st.Args["identity"], err)
						}
						fmt.Fprintf(env.stdout, "lifted the drill's quarantine of %s\n", st.Args["identity"])
					}
				}
			}
		}
		if final.State == respond.RunFailed {
			return errors.New("the run failed")
		}
	}
	return nil
}

// waitRun polls a run until it ends or waits for an approval, for up to d.
func waitRun(ctx context.Context, c *api.Client, run *respond.Run, d time.Duration) (*respond.Run, error) {
	deadline := time.Now().Add(d)
	for run.State == respond.RunRunning && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		var r respond.Run
		if err := c.Do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(run.ID), nil, &r); err != nil {
			return nil, err
		}
		run = &r
	}
	return run, nil
}

func printSteps(env *cliEnv, r *respond.Run) {
	if r == nil {
		return
	}
	tw := table(env, "STEP", "ACTION", "STATE", "WHAT")
	for _, st := range r.Steps {
		what := st.Effect
		if st.Result != "" {
			what = st.Result
		}
		if st.Error != "" {
			what = st.Error + " (on failure: " + st.OnFailure + ")"
		}
		if st.State == respond.StepWaiting {
			what = "waits for approval by a " + st.Approval.Role + ": rampart incident approve " + orElse(r.Incident, r.ID)
		}
		tw.row(st.Name, st.Action, st.State, what)
	}
	tw.flush()
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func runIncident(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+incidentUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	verb := args[0]
	if !slices.Contains([]string{"list", "show", "open", "note", "approve", "status", "report", "scope", "quarantine", "lift", "quarantines"}, verb) {
		return usagef("unknown verb %q; usage: %s", verb, incidentUsage)
	}
	fs := newFlags(env, "incident "+verb, incidentUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	status := fs.String("status", "", "list: only incidents with this status")
	set := fs.String("set", "", "status: the new status (open, contained, resolved)")
	title := fs.String("title", "", "open: the title")
	severity := fs.String("severity", "", "open/status: the severity")
	owner := fs.String("owner", "", "open/status: the owner")
	identity := fs.String("identity", "", "open/scope: the identity (SPIFFE ID, ID/*, or user)")
	reason := fs.String("reason", "", "status/quarantine/lift: why (recorded)")
	incident := fs.String("incident", "", "quarantine: the incident it belongs to")
	since := fs.String("since", "", "scope: start of the window (RFC 3339, or a duration back from now: 168h)")
	until := fs.String("until", "", "scope: end of the window (default: now)")
	data := fs.String("data", "", "scope: answer from this server data directory (its audit log), offline")
	all := fs.Bool("all", false, "quarantines: lifted ones too")
	svidCert := fs.String("svid-cert", "", "approve: approve as the workload of this SVID (PEM certificate chain)")
	svidKey := fs.String("svid-key", "", "approve: the SVID's private key (PEM)")
	step := fs.String("step", "", "approve: the name of the step you approve (refused if the run waits at another)")
	request := fs.String("request", "", "approve: the ID of the request for approval you approve (apr-...)")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	need := func(n int, what string) error {
		if fs.NArg() != n {
			return usagef("incident %s needs %s", verb, what)
		}
		return nil
	}
	if verb == "scope" {
		return runScope(ctx, env, ac, fs.Args(), *identity, *since, *until, *data, *asJSON)
	}
	if verb == "approve" && *svidCert != "" {
		if err := need(1, "one incident or run ID"); err != nil {
			return err
		}
		c, err := workloadClient(ac, *svidCert, *svidKey)
		if err != nil {
			return err
		}
		var run respond.Run
		want := respond.ApprovalRef{Step: *step, Approval: *request}
		if err := c.Do(ctx, http.MethodPost, "/v1/workload/approvals/"+url.PathEscape(fs.Arg(0)), want, &run); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "approved: run %s resumes\n", run.ID)
		return nil
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		var ins []respond.Incident
		if err := c.Do(ctx, http.MethodGet, "/v1/incidents?status="+url.QueryEscape(*status), nil, &ins); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, ins)
		}
		tw := table(env, "ID", "STATUS", "SEVERITY", "OWNER", "OPENED", "TITLE")
		for _, in := range ins {
			tw.row(in.ID, in.Status, in.Severity, orElse(in.Owner, "-"), fmtTime(in.OpenedAt), in.Title)
		}
		return tw.flush()
	case "show":
		if err := need(1, "one incident ID"); err != nil {
			return err
		}
		var v respond.IncidentView
		if err := c.Do(ctx, http.MethodGet, "/v1/incidents/"+url.PathEscape(fs.Arg(0)), nil, &v); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, v)
		}
		in := v.Incident
		fmt.Fprintf(env.stdout, "%s  %s\nstatus %s, severity %s, owner %s, opened %s by %s\n", in.ID, in.Title, in.Status, in.Severity, orElse(in.Owner, "-"), fmtTime(in.OpenedAt), in.OpenedBy)
		if len(in.Identities) > 0 {
			fmt.Fprintf(env.stdout, "identities: %s\n", strings.Join(in.Identities, ", "))
		}
		fmt.Fprintln(env.stdout, "\ntimeline:")
		tw := table(env, "TIME", "KIND", "BY", "WHAT")
		for _, e := range v.Timeline {
			tw.row(fmtTime(e.Time), e.Kind, orElse(e.Actor, "-"), e.Text)
		}
		return tw.flush()
	case "open":
		var ids []string
		if *identity != "" {
			ids = []string{*identity}
		}
		var in respond.Incident
		if err := c.Do(ctx, http.MethodPost, "/v1/incidents", respond.OpenRequest{Title: *title, Severity: *severity, Owner: *owner, Identities: ids}, &in); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, in)
		}
		fmt.Fprintf(env.stdout, "incident %s opened\n", in.ID)
	case "note":
		if fs.NArg() < 2 {
			return usagef("incident note needs an incident ID and the text")
		}
		if err := c.Do(ctx, http.MethodPost, "/v1/incidents/"+url.PathEscape(fs.Arg(0))+"/notes", respond.NoteRequest{Text: strings.Join(fs.Args()[1:], " ")}, nil); err != nil {
			return err
		}
		fmt.Fprintln(env.stdout, "noted")
	case "approve":
		if err := need(1, "one incident or run ID"); err != nil {
			return err
		}
		want, err := approvalRef(ctx, c, fs.Arg(0), *step, *request)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "approving step %q of run %s (request %s)\n", want.Step, want.run, want.Approval)
		var run respond.Run
		if err := c.Do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(fs.Arg(0)), want.ApprovalRef, &run); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "approved: run %s resumes\n", run.ID)
	case "status":
		if err := need(1, "one incident ID"); err != nil {
			return err
		}
		var in respond.Incident
		if err := c.Do(ctx, http.MethodPost, "/v1/incidents/"+url.PathEscape(fs.Arg(0))+"/status",
			respond.StatusRequest{Status: *set, Severity: *severity, Owner: *owner, Reason: *reason}, &in); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, in)
		}
		fmt.Fprintf(env.stdout, "%s: %s, severity %s, owner %s\n", in.ID, in.Status, in.Severity, orElse(in.Owner, "-"))
	case "report":
		if err := need(1, "one incident ID"); err != nil {
			return err
		}
		return getText(ctx, c, "/v1/incidents/"+url.PathEscape(fs.Arg(0))+"/report", env.stdout)
	case "quarantine", "lift":
		if err := need(1, "one identity (SPIFFE ID or ID/*)"); err != nil {
			return err
		}
		path, code := "/v1/quarantines", "quarantined"
		if verb == "lift" {
			path, code = "/v1/quarantines/lift", "lifted"
		}
		var out json.RawMessage
		if err := c.Do(ctx, http.MethodPost, path, respond.QuarantineRequest{Identity: fs.Arg(0), Reason: *reason, Incident: *incident}, &out); err != nil {
			return err
		}
		if *asJSON {
			_, err := env.stdout.Write(append(out, '\n'))
			return err
		}
		fmt.Fprintf(env.stdout, "%s %s\n", code, fs.Arg(0))
	case "quarantines":
		var qs []respond.QuarantineInfo
		if err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/quarantines?all=%v", *all), nil, &qs); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, qs)
		}
		tw := table(env, "IDENTITY", "SINCE", "BY", "REASON", "INCIDENT", "LIFTED")
		for _, q := range qs {
			lifted := "-"
			if !q.LiftedAt.IsZero() {
				lifted = fmtTime(q.LiftedAt) + " by " + q.LiftedBy + ": " + q.LiftReason
			}
			tw.row(q.Identity, fmtTime(q.CreatedAt), q.CreatedBy, q.Reason, orElse(q.Incident, "-"), lifted)
		}
		return tw.flush()
	}
	return nil
}

func runScope(ctx context.Context, env *cliEnv, ac *adminFlags, pos []string, identity, since, until, data string, asJSON bool) error {
	if identity == "" || since == "" {
		return usagef("incident scope needs --identity and --since")
	}
	now := time.Now()
	s, err := parseWhen(since, now)
	if err != nil {
		return usagef("--since %v", err)
	}
	u, err := parseWhen(until, now)
	if err != nil {
		return usagef("--until %v", err)
	}
	var sc *respond.Scope
	if data != "" {
		if len(pos) > 0 {
			return usagef("--data answers offline: it attaches nothing to an incident")
		}
		// The index lives beside the log, as the server keeps it.
		sc, err = (&respond.Scoper{Dir: filepath.Join(data, "audit"), Index: filepath.Join(data, "respond-scope-index.json")}).Scope(identity, s, u)
		if err != nil {
			return err
		}
	} else {
		c, err := ac.client(env)
		if err != nil {
			return err
		}
		path := "/v1/scope"
		if len(pos) == 1 {
			path = "/v1/incidents/" + url.PathEscape(pos[0]) + "/scope"
		} else if len(pos) > 1 {
			return usagef("incident scope takes at most one incident ID")
		}
		sc = &respond.Scope{}
		if err := c.Do(ctx, http.MethodPost, path, respond.ScopeRequest{Identity: identity, Since: s, Until: u}, sc); err != nil {
			return err
		}
	}
	if asJSON {
		return printJSON(env, sc)
	}
	_, err = io.WriteString(env.stdout, sc.Markdown())
	return err
}

// getText GETs a non-JSON document (a Markdown report) and copies it out.
func getText(ctx context.Context, c *api.Client, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.BaseURL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var p api.Problem
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&p)
		return &p
	}
	_, err = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return err
}

// workloadClient calls the server with a workload's SVID as the TLS
// client certificate (no admin token).
func workloadClient(ac *adminFlags, certFile, keyFile string) (*api.Client, error) {
	if keyFile == "" {
		return nil, usagef("--svid-cert needs --svid-key")
	}
	if ac.bundle == "" {
		return nil, usagef("no CA bundle to verify the server: set RAMPART_CA_BUNDLE or --ca-bundle")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("svid: %w", err)
	}
	pem, err := os.ReadFile(ac.bundle)
	if err != nil {
		return nil, fmt.Errorf("ca bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca bundle %s: no certificates", ac.bundle)
	}
	cfg := serverTLS(pool)
	cfg.Certificates = []tls.Certificate{cert}
	return &api.Client{BaseURL: "https://" + trimScheme(ac.server), HTTP: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg}}}, nil
}

type shownApproval struct {
	respond.ApprovalRef
	run string
}

// approvalRef finds the step ref's run waits at, so that the approval
// names what the operator saw (step and request): the server refuses it
// if the run has moved on since. --step and --request, if given, must
// agree with what waits.
func approvalRef(ctx context.Context, c *api.Client, ref, step, request string) (shownApproval, error) {
	var runs []*respond.Run
	if strings.HasPrefix(ref, "run-") {
		var r respond.Run
		if err := c.Do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(ref), nil, &r); err != nil {
			return shownApproval{}, err
		}
		runs = append(runs, &r)
	} else {
		var v respond.IncidentView
		if err := c.Do(ctx, http.MethodGet, "/v1/incidents/"+url.PathEscape(ref), nil, &v); err != nil {
			return shownApproval{}, err
		}
		runs = v.Runs
	}
	var waiting []*respond.Run
	for _, r := range runs {
		if r.State == respond.RunWaiting && r.Next < len(r.Steps) && r.Steps[r.Next].Approval != nil {
			waiting = append(waiting, r)
		}
	}
	switch {
	case len(waiting) == 0:
		return shownApproval{}, fmt.Errorf("nothing waits for an approval in %s", ref)
	case len(waiting) > 1:
		return shownApproval{}, fmt.Errorf("%d runs of %s wait for an approval: name the run", len(waiting), ref)
	}
	r := waiting[0]
	st := r.Steps[r.Next]
	switch {
	case step != "" && step != st.Name:
		return shownApproval{}, fmt.Errorf("run %s waits at step %q, not %q: nothing approved", r.ID, st.Name, step)
	case request != "" && request != st.Approval.ID:
		return shownApproval{}, fmt.Errorf("step %q of run %s waits on request %s, not %s: nothing approved", st.Name, r.ID, st.Approval.ID, request)
	}
	return shownApproval{ApprovalRef: respond.ApprovalRef{Step: st.Name, Approval: st.Approval.ID}, run: r.ID}, nil
}
