package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/permission"
)

const operatorUsage = `rampart operator add NAME --role ROLE [--role ...] [--service PATTERN ...] [--workload] [--no-mfa] [--json]
       rampart operator grant NAME --role ROLE [--service PATTERN ...] [--json]
       rampart operator revoke NAME --role ROLE [--role ...] [--json]
       rampart operator disable|enable NAME [--json]
       rampart operator mfa NAME on|off [--json]
       rampart operator list|show NAME [--json]

An operator is a person (NAME: an OAuth user, made with rampart oauth user
create; they sign in with rampart login) or, with --workload, the workloads
whose SPIFFE ID matches NAME (exact, or ending in /*: a CI pipeline, say).
Roles: ` + "%s" + `.
--service limits policy-author to services matching the SPIFFE ID patterns.
A person's tokens must come from a login with a one-time code unless
--no-mfa (or mfa NAME off). Changes take effect at the next request.`

func operatorHelp() string {
	var names []string
	for _, r := range permission.Roles {
		names = append(names, string(r.Role))
	}
	return fmt.Sprintf(operatorUsage, strings.Join(names, ", "))
}

func runOperator(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			return usagef("usage: %s", operatorHelp())
		}
		fmt.Fprintln(env.stdout, "Usage: "+operatorHelp())
		return nil
	}
	verb := args[0]
	fs := newFlags(env, "operator "+verb, operatorHelp())
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var roles, services listFlag
	var workload, noMFA bool
	switch verb {
	case "add", "grant":
		fs.Var(&roles, "role", "role to hold (repeatable)")
		fs.Var(&services, "service", "policy-author only: SPIFFE ID pattern of services it may write policies for (repeatable)")
		if verb == "add" {
			fs.BoolVar(&workload, "workload", false, "NAME is a SPIFFE ID pattern of workloads, not a user")
			fs.BoolVar(&noMFA, "no-mfa", false, "do not require a one-time code at sign-in")
		}
	case "revoke":
		fs.Var(&roles, "role", "role to take away (repeatable)")
	case "disable", "enable", "mfa", "list", "show":
	default:
		return usagef("unknown verb %q; usage: %s", verb, operatorHelp())
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	pos := fs.Args()
	want := 1
	switch verb {
	case "list":
		want = 0
	case "mfa":
		want = 2
	}
	if len(pos) != want {
		return usagef("operator %s: want %d argument(s); usage: %s", verb, want, operatorHelp())
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	var out api.Operator
	path := ""
	if want > 0 {
		path = "/v1/operator?name=" + url.QueryEscape(pos[0])
	}
	switch verb {
	case "list":
		var ops []api.Operator
		if err := cl.Do(ctx, http.MethodGet, "/v1/operators", nil, &ops); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, ops)
		}
		t := table(env, "NAME", "KIND", "ROLES", "MFA", "STATE")
		for _, o := range ops {
			t.row(o.Name, o.Kind, rolesText(o.Roles), mfaText(o), stateText(o))
		}
		return t.flush()
	case "show":
		err = cl.Do(ctx, http.MethodGet, path, nil, &out)
	case "add":
		if len(roles) == 0 {
			return usagef("operator add needs --role")
		}
		req := api.OperatorCreate{Name: pos[0], Kind: "user", Roles: roleList(roles, services)}
		if workload {
			req.Kind = "workload"
			f := false
			req.RequireMFA = &f
		} else if noMFA {
			f := false
			req.RequireMFA = &f
		}
		err = cl.Do(ctx, http.MethodPost, "/v1/operators", req, &out)
	case "grant":
		if len(roles) == 0 {
			return usagef("operator grant needs --role")
		}
		err = cl.Do(ctx, http.MethodPatch, path, api.OperatorUpdate{Grant: roleList(roles, services)}, &out)
	case "revoke":
		if len(roles) == 0 {
			return usagef("operator revoke needs --role")
		}
		err = cl.Do(ctx, http.MethodPatch, path, api.OperatorUpdate{Revoke: roles}, &out)
	case "disable", "enable":
		d := verb == "disable"
		err = cl.Do(ctx, http.MethodPatch, path, api.OperatorUpdate{Disabled: &d}, &out)
	case "mfa":
		if pos[1] != "on" && pos[1] != "off" {
			return usagef("operator mfa NAME on|off")
		}
		on := pos[1] == "on"
		err = cl.Do(ctx, http.MethodPatch, path, api.OperatorUpdate{RequireMFA: &on}, &out)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, out)
	}
	return printFields(env, "name", out.Name, "kind", out.Kind, "roles", rolesText(out.Roles), "mfa", mfaText(out),
		"state", stateText(out), "permissions", strings.Join(out.Permissions, " "), "changed", fmtTime(out.UpdatedAt), "by", orDash(out.By))
}

func roleList(roles, services []string) []api.OperatorRole {
	out := make([]api.OperatorRole, len(roles))
	for i, r := range roles {
		out[i] = api.OperatorRole{Role: r, Services: services}
	}
	return out
}

func mfaText(o api.Operator) string {
	switch {
	case o.Kind == "workload":
		return "-"
	case o.RequireMFA:
		return "required"
	}
	return "not required"
}

func stateText(o api.Operator) string {
	if o.Disabled {
		return "disabled"
	}
	return "enabled"
}
