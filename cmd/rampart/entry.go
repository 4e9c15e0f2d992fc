package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

const entryUsage = `rampart entry create --spiffe-id ID --parent AGENT-ID --selector unix:uid:N [--selector ...] [--ttl 1h] [--jwt-ttl 5m] [--dns NAME]
       rampart entry list [--parent AGENT-ID] [--json]
       rampart entry show ID [--json]
       rampart entry delete ID`

func runEntry(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", entryUsage)
	}
	verb := args[0]
	if verb == "-h" || verb == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+entryUsage)
		return nil
	}
	fs := newFlags(env, "entry "+verb, entryUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var e api.Entry
	var sels, dns listFlag
	var ttl, jwtTTL time.Duration
	var parent string
	switch verb {
	case "create":
		fs.StringVar(&e.SpiffeID, "spiffe-id", "", "SPIFFE ID to issue, e.g. spiffe://example.org/orders")
		fs.StringVar(&e.ParentID, "parent", "", "agent that may issue it, e.g. spiffe://example.org/rampart/agent/node-1")
		fs.Var(&sels, "selector", "unix:uid:N, unix:gid:N, unix:path:/abs/path or unix:sha256:HEX (repeatable; all must match)")
		fs.DurationVar(&ttl, "ttl", 0, "X.509-SVID lifetime (default: the server's, 1h)")
		fs.DurationVar(&jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime (default: the server's, 5m)")
		fs.Var(&dns, "dns", "DNS name to include in the SVID (repeatable)")
	case "list":
		fs.StringVar(&parent, "parent", "", "only entries of this agent")
	case "show", "delete":
	default:
		return usagef("unknown verb %q; usage: %s", verb, entryUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		if e.SpiffeID == "" || e.ParentID == "" || len(sels) == 0 {
			return usagef("entry create needs --spiffe-id, --parent and at least one --selector")
		}
		if ttl != 0 && ttl < time.Second || jwtTTL != 0 && jwtTTL < time.Second {
			return usagef("--ttl and --jwt-ttl must be at least 1s")
		}
		e.Selectors, e.DNSNames = sels, dns
		e.X509TTLSeconds, e.JWTTTLSeconds = seconds(ttl), seconds(jwtTTL)
		var out api.Entry
		if err := c.Do(ctx, http.MethodPost, "/v1/entries", e, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintln(env.stdout, out.ID)
		return nil
	case "list":
		path := "/v1/entries"
		if parent != "" {
			path += "?parent_id=" + url.QueryEscape(parent)
		}
		var out []api.Entry
		if err := c.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := table(env, "ID", "SPIFFE ID", "PARENT", "SELECTORS", "TTL")
		for _, e := range out {
			tw.row(e.ID, e.SpiffeID, e.ParentID, strings.Join(e.Selectors, ","), ttlString(e.X509TTLSeconds))
		}
		return tw.flush()
	}
	if fs.NArg() != 1 {
		return usagef("entry %s takes one entry ID", verb)
	}
	method := http.MethodGet
	if verb == "delete" {
		method = http.MethodDelete
	}
	var out api.Entry
	if err := c.Do(ctx, method, "/v1/entries/"+pathEscape(fs.Arg(0)), nil, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, out)
	}
	if verb == "delete" {
		fmt.Fprintf(env.stdout, "deleted entry %s (%s)\n", out.ID, out.SpiffeID)
		return nil
	}
	return printFields(env, "ID", out.ID, "SPIFFE ID", out.SpiffeID, "Parent", out.ParentID,
		"Selectors", strings.Join(out.Selectors, ", "), "X.509 TTL", ttlString(out.X509TTLSeconds),
		"JWT TTL", ttlString(out.JWTTTLSeconds), "DNS names", strings.Join(out.DNSNames, ", "), "Created", fmtTime(out.CreatedAt))
}

func ttlString(s int64) string {
	if s == 0 {
		return "default"
	}
	return (time.Duration(s) * time.Second).String()
}
