package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/policy"
)

const policyUsage = `rampart policy put FILE.yaml                     upload (validated; a new version when it changed)
       rampart policy get --service ID [--json]          the policy in force
       rampart policy list [--json]
       rampart policy history --service ID [--json]
       rampart policy delete --service ID                 back to default deny
       rampart policy test POLICY.yaml TESTS.yaml         run policy unit tests locally (for CI)
       rampart policy explain (--file POLICY.yaml | --service ID) --caller ID --method M --path P [--header K=V]`

func runPolicy(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", policyUsage)
	}
	verb := args[0]
	switch verb {
	case "-h", "--help":
		fmt.Fprintln(env.stdout, "Usage: "+policyUsage)
		return nil
	case "test":
		return runPolicyTest(env, args[1:])
	case "put", "get", "list", "history", "delete", "explain":
	default:
		return usagef("unknown verb %q; usage: %s", verb, policyUsage)
	}
	fs := newFlags(env, "policy "+verb, policyUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	service := fs.String("service", "", "SPIFFE ID of the protected service")
	file := fs.String("file", "", "explain against this policy file instead of the server's")
	caller := fs.String("caller", "", "explain: the caller's SPIFFE ID")
	method := fs.String("method", "GET", "explain: HTTP method")
	path := fs.String("path", "/", "explain: request path (normalised as the proxy does)")
	var headers listFlag
	fs.Var(&headers, "header", "explain: a request header K=V (repeatable)")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if verb == "explain" && *file != "" {
		src, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		return explain(env, src, *caller, *method, *path, headers)
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	q := "?service=" + url.QueryEscape(*service)
	needService := func() error {
		if *service == "" {
			return usagef("policy %s needs --service SPIFFE-ID", verb)
		}
		return nil
	}
	switch verb {
	case "put":
		if fs.NArg() != 1 {
			return usagef("policy put takes one FILE")
		}
		src, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		var p api.Policy
		if err := c.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", src, &p); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, p)
		}
		fmt.Fprintf(env.stdout, "policy for %s: version %s (seq %d)\n", p.Service, p.Version, p.Seq)
		return nil
	case "get", "explain":
		if err := needService(); err != nil {
			return err
		}
		var p api.Policy
		if err := c.Do(ctx, http.MethodGet, "/v1/policy"+q, nil, &p); err != nil {
			return err
		}
		if verb == "explain" {
			return explain(env, []byte(p.Source), *caller, *method, *path, headers)
		}
		if *asJSON {
			return printJSON(env, p)
		}
		fmt.Fprintf(env.stdout, "# service %s, seq %d, version %s, uploaded %s\n%s", p.Service, p.Seq, p.Version, fmtTime(p.CreatedAt), p.Source)
		return nil
	case "list", "history":
		path := "/v1/policies"
		if verb == "history" {
			if err := needService(); err != nil {
				return err
			}
			path = "/v1/policy/history" + q
		}
		var ps []api.Policy
		if err := c.Do(ctx, http.MethodGet, path, nil, &ps); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, ps)
		}
		tw := table(env, "SERVICE", "SEQ", "VERSION", "UPLOADED", "DELETED")
		for _, p := range ps {
			tw.row(p.Service, fmt.Sprint(p.Seq), p.Version, fmtTime(p.CreatedAt), fmt.Sprint(p.Deleted))
		}
		return tw.flush()
	case "delete":
		if err := needService(); err != nil {
			return err
		}
		if err := c.Do(ctx, http.MethodDelete, "/v1/policy"+q, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "deleted the policy for %s; calls to it are denied\n", *service)
	}
	return nil
}

func explain(env *cliEnv, src []byte, caller, method, path string, headers []string) error {
	p, err := policy.Parse(src)
	if err != nil {
		return err
	}
	eng, err := policy.Compile(p)
	if err != nil {
		return err
	}
	id, err := spiffeid.FromString(caller)
	if err != nil {
		return usagef("--caller %q: %v", caller, err)
	}
	norm, err := policy.NormalizePath(path)
	if err != nil {
		fmt.Fprintf(env.stdout, "refused before the policy: %v\n", err)
		return nil
	}
	h := http.Header{}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usagef("--header %q: want K=V", kv)
		}
		h.Add(k, v)
	}
	fmt.Fprintln(env.stdout, eng.Explain(&policy.Request{Caller: id, Method: strings.ToUpper(method), Path: norm, Headers: h}).String())
	return nil
}

func runPolicyTest(env *cliEnv, args []string) error {
	fs := newFlags(env, "policy test", "rampart policy test POLICY.yaml TESTS.yaml")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("policy test takes POLICY.yaml and TESTS.yaml")
	}
	psrc, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	tsrc, err := os.ReadFile(fs.Arg(1))
	if err != nil {
		return err
	}
	p, err := policy.Parse(psrc)
	if err != nil {
		return err
	}
	eng, err := policy.Compile(p)
	if err != nil {
		return err
	}
	tf, err := policy.ParseTests(tsrc)
	if err != nil {
		return err
	}
	failed := 0
	results := policy.RunTests(eng, tf)
	for _, r := range results {
		if r.Passed {
			fmt.Fprintf(env.stdout, "ok    %s\n", r.Name)
			continue
		}
		failed++
		fmt.Fprintf(env.stdout, "FAIL  %s: %s\n", r.Name, r.Message)
	}
	fmt.Fprintf(env.stdout, "%d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d policy test(s) failed", failed)
	}
	return nil
}
