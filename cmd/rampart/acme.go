package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

const acmeUsage = `rampart acme eab create [--allow PATTERN]... [--label TEXT] [--client-auth] [--reusable] [--ttl DURATION] [--json]
       rampart acme eab list [--json]
       rampart acme eab revoke KEY-ID [--json]
       rampart acme certs list [--account ID] [--all] [--json]
       rampart acme certs revoke SERIAL [--reason REASON] [--json]

The server speaks ACME (RFC 8555) at https://SERVER/acme/directory, for
certificates that are not workload identities (ingresses, dashboards,
databases). Accounts need an external account binding (EAB) key: create one,
tied to the names its accounts may order, and give its key ID and HMAC key
to the client, e.g.

  certbot certonly --server https://SERVER/acme/directory \
    --eab-kid KEY-ID --eab-hmac-key=HMAC-KEY -d web.internal.example.org ...

Name patterns: api.example.org (that name), *.internal.example.org (every
name below it, and wildcards below it), 10.1.0.0/16 or 10.1.2.3 (addresses).
A key is single use (one account) unless --reusable, and must be bound
within --ttl (default 168h). Revoking a key stops every account bound to it.
--client-auth lets its accounts order the tls-server-client profile.

certs revoke reasons: unspecified, keyCompromise, affiliationChanged,
superseded, cessationOfOperation. A revoked certificate's renewal
information (RFC 9773) tells its client to renew at once.`

func runACME(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			return usagef("usage: %s", acmeUsage)
		}
		fmt.Fprintln(env.stdout, "Usage: "+acmeUsage)
		return nil
	}
	obj := args[0]
	if obj != "eab" && obj != "certs" {
		return usagef("unknown acme object %q (eab or certs); usage: %s", obj, acmeUsage)
	}
	if len(args) < 2 {
		return usagef("usage: %s", acmeUsage)
	}
	verb := args[1]
	fs := newFlags(env, "acme "+obj+" "+verb, acmeUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var allow listFlag
	var label, account, reason string
	var clientAuth, reusable, all bool
	var ttl time.Duration
	nargs := 0
	switch obj + " " + verb {
	case "eab create":
		fs.Var(&allow, "allow", "a name pattern the key's accounts may order (repeatable, or comma-separated)")
		fs.StringVar(&label, "label", "", "what the key is for (shown in lists)")
		fs.BoolVar(&clientAuth, "client-auth", false, "its accounts may order certificates that also authenticate clients")
		fs.BoolVar(&reusable, "reusable", false, "the key may bind more than one account")
		fs.DurationVar(&ttl, "ttl", 0, "the key must be bound within this long (default 168h)")
	case "eab list":
	case "eab revoke":
		nargs = 1
	case "certs list":
		fs.StringVar(&account, "account", "", "only this account's certificates")
		fs.BoolVar(&all, "all", false, "include expired certificates")
	case "certs revoke":
		nargs = 1
		fs.StringVar(&reason, "reason", "", "RFC 5280 reason (default unspecified)")
	default:
		return usagef("unknown verb %q for acme %s; usage: %s", verb, obj, acmeUsage)
	}
	if err := parse(env, fs, args[2:]); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		return usagef("acme %s %s takes %d argument(s); usage: %s", obj, verb, nargs, acmeUsage)
	}
	if ttl < 0 {
		return usagef("--ttl %v: must be positive", ttl)
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	switch obj + " " + verb {
	case "eab create":
		var k api.ACMEEABKey
		req := api.ACMEEABKeyRequest{Label: label, AllowedNames: allow, ClientAuth: clientAuth, Reusable: reusable, TTLSeconds: seconds(ttl)}
		if err := cl.Do(ctx, http.MethodPost, "/v1/acme/eab-keys", req, &k); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, k)
		}
		if err := printEAB(env, k); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "\nThe HMAC key is shown only now. For example:\n  certbot certonly --server %s --eab-kid %s --eab-hmac-key=%s -d NAME ...\n  lego run --server %s --eab --eab.kid %s --eab.hmac=%s --domains NAME --http\n(with \"=\": a key can begin with \"-\", which a client would read as an option)\n",
			k.Directory, k.KeyID, k.HMACKey, k.Directory, k.KeyID, k.HMACKey)
		return nil
	case "eab list":
		var ks []api.ACMEEABKey
		if err := cl.Do(ctx, http.MethodGet, "/v1/acme/eab-keys", nil, &ks); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, ks)
		}
		tw := table(env, "KEY-ID", "LABEL", "ALLOWED-NAMES", "ACCOUNTS", "STATE", "EXPIRES")
		for _, k := range ks {
			tw.row(k.KeyID, dash(k.Label), dash(strings.Join(k.AllowedNames, ",")), strconv.Itoa(k.Accounts), eabState(k), fmtTime(k.ExpiresAt))
		}
		return tw.flush()
	case "eab revoke":
		var k api.ACMEEABKey
		if err := cl.Do(ctx, http.MethodPost, "/v1/acme/eab-keys/"+pathEscape(fs.Arg(0))+"/revoke", nil, &k); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, k)
		}
		return printEAB(env, k)
	case "certs list":
		q := url.Values{}
		if account != "" {
			q.Set("account", account)
		}
		if all {
			q.Set("all", "true")
		}
		path := "/v1/acme/certs"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var cs []api.ACMECert
		if err := cl.Do(ctx, http.MethodGet, path, nil, &cs); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, cs)
		}
		tw := table(env, "SERIAL", "NAMES", "ACCOUNT", "STATUS", "NOT-AFTER")
		for _, c := range cs {
			tw.row(c.Serial, strings.Join(c.Names, ","), c.Account, c.Status, fmtTime(c.NotAfter))
		}
		return tw.flush()
	default: // certs revoke
		var c api.ACMECert
		if err := cl.Do(ctx, http.MethodPost, "/v1/acme/certs/"+pathEscape(fs.Arg(0))+"/revoke", api.ACMERevokeRequest{Reason: reason}, &c); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, c)
		}
		return printFields(env, "Serial", c.Serial, "Names", strings.Join(c.Names, ","), "Account", c.Account, "Status", c.Status,
			"Reason", c.RevocationReason, "Revoked", fmtTime(c.RevokedAt))
	}
}

func printEAB(env *cliEnv, k api.ACMEEABKey) error {
	kv := []string{"Key ID", k.KeyID}
	if k.HMACKey != "" {
		kv = append(kv, "HMAC key", k.HMACKey, "Directory", k.Directory)
	}
	kv = append(kv, "Label", dash(k.Label), "Allowed names", dash(strings.Join(k.AllowedNames, ", ")), "Client auth", strconv.FormatBool(k.ClientAuth),
		"Reusable", strconv.FormatBool(k.Reusable), "Accounts", strconv.Itoa(k.Accounts), "State", eabState(k), "Bind before", fmtTime(k.ExpiresAt))
	return printFields(env, kv...)
}

func eabState(k api.ACMEEABKey) string {
	switch {
	case !k.RevokedAt.IsZero():
		return "revoked"
	case k.Accounts > 0 && !k.Reusable:
		return "bound"
	case !k.ExpiresAt.IsZero() && time.Now().After(k.ExpiresAt):
		return "expired"
	}
	return "active"
}
