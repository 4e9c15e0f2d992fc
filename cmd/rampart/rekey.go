package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/rekey"
)

const rekeyUsage = `rampart rekey [--dry-run] [--revoke-tokens] [--propagation 10s] [--deadline 1h] [--kms-grace 168h] [--no-wait] [--json]
       rampart rekey status [--json]
       rampart rekey finish [--json]

Burn-down after a compromise: a new root (published beside the old one
first, so services keep talking), a new intermediate and JWT-SVID key, a
new OAuth signing key, a new version of every key store key, every SVID
re-issued under the new root; then everything issued before is revoked,
the old roots and keys leave every bundle, and the old key store versions
are scheduled for destruction. Prints a report (Markdown; --json for
tools) naming old and new key IDs and the hosts still holding SVIDs from
before: evict them (rampart agent evict) and re-join them with a new join
token.

  --dry-run        say what would be replaced; change nothing
  --revoke-tokens  withdraw the old OAuth signing keys at once (every token
                   signed before is refused now, not at the finish) and
                   revoke every refresh token and code (users sign in again)
  --propagation    between publishing the new root and signing with it
  --deadline       from activation: SVIDs not re-issued by then are revoked anyway
  --kms-grace      old key store versions are refused at the finish and
                   destroyed this long after (restorable meanwhile)
  --no-wait        start (or resume) and return; "rekey status" follows it

An interrupted burn-down (a crash, a failed step) resumes where it stopped:
run rampart rekey again (the server also retries on its own).`

// rekeyPoll is how often the CLI asks how a burn-down is going.
const rekeyPoll = time.Second

func runRekey(ctx context.Context, env *cliEnv, args []string) error {
	verb := ""
	if len(args) > 0 {
		switch args[0] {
		case "status", "finish":
			verb, args = args[0], args[1:]
		case "-h", "--help":
			fmt.Fprintln(env.stdout, "Usage: "+rekeyUsage)
			return nil
		}
	}
	fs := newFlags(env, "rekey", rekeyUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var opts rekey.Options
	var propagation, deadline, grace time.Duration
	noWait := false
	if verb == "" {
		fs.BoolVar(&opts.DryRun, "dry-run", false, "say what would be replaced; change nothing")
		fs.BoolVar(&opts.RevokeTokens, "revoke-tokens", false, "withdraw the old OAuth signing keys at once")
		fs.DurationVar(&propagation, "propagation", rekey.DefaultPropagation, "between publishing the new root and signing with it")
		fs.DurationVar(&deadline, "deadline", rekey.DefaultDeadline, "from activation, when SVIDs not yet re-issued are revoked anyway")
		fs.DurationVar(&grace, "kms-grace", rekey.DefaultKMSGrace, "old key store versions are destroyed this long after the finish")
		fs.BoolVar(&noWait, "no-wait", false, "start or resume, then return")
	}
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q; usage: %s", fs.Arg(0), rekeyUsage)
	}
	opts.Propagation, opts.Deadline, opts.KMSGrace = rekey.Duration(propagation), rekey.Duration(deadline), rekey.Duration(grace)
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	var st rekey.State
	switch verb {
	case "status":
		err = c.Do(ctx, http.MethodGet, "/v1/rekey", nil, &st)
	case "finish":
		err = c.Do(ctx, http.MethodPost, "/v1/rekey/finish", struct{}{}, &st)
	default:
		err = c.Do(ctx, http.MethodPost, "/v1/rekey", opts, &st)
		if err == nil && !opts.DryRun && !noWait {
			st, err = waitRekey(ctx, env, ac, st)
		}
	}
	if err != nil {
		return err
	}
	if *asJSON {
		err = printJSON(env, st)
	} else {
		_, err = fmt.Fprint(env.stdout, st.Markdown())
	}
	if err != nil {
		return err
	}
	for _, s := range st.Steps {
		if s.Status == rekey.StatusFailed {
			return fmt.Errorf("step %s failed: %s; what is done stays done: run rampart rekey again to resume", s.Name, s.Error)
		}
	}
	return nil
}

// waitRekey follows a burn-down until it finishes or a step fails,
// printing each step as it completes. The server's certificate changes
// root on the way: the client is made again on each poll, from the
// bundle file the server keeps current (DATA/bundle.pem).
func waitRekey(ctx context.Context, env *cliEnv, ac *adminFlags, st rekey.State) (rekey.State, error) {
	seen := map[string]string{}
	report := func(st rekey.State) {
		for _, s := range st.Steps {
			key := s.Status + s.Detail
			if s.Status == rekey.StatusPending || seen[s.Name] == key {
				continue
			}
			seen[s.Name] = key
			fmt.Fprintf(env.stderr, "rekey: %-20s %-8s %s%s\n", s.Name, s.Status, s.Detail, s.Error)
		}
	}
	for {
		report(st)
		if st.Phase != rekey.PhaseRunning {
			return st, nil
		}
		for _, s := range st.Steps {
			if s.Status == rekey.StatusFailed {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("stopped waiting; the burn-down %s goes on in the server (rampart rekey status): %w", st.ID, ctx.Err())
		case <-time.After(rekeyPoll):
		}
		c, err := ac.client(env)
		if err != nil {
			return st, err
		}
		var next rekey.State
		if err := c.Do(ctx, http.MethodGet, "/v1/rekey", nil, &next); err != nil {
			var p *api.Problem
			if errors.As(err, &p) {
				return st, err
			}
			fmt.Fprintf(env.stderr, "rekey: asking the server failed (%v); retrying\n", err)
			continue
		}
		st = next
	}
}
