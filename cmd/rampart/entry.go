package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/registration"
)

const entryUsage = `rampart entry create --spiffe-id ID --parent AGENT-ID --selector unix:uid:N [--selector ...] [--ttl 1h] [--jwt-ttl 5m]
              [--dns NAME] [--hint TEXT] [--expires-at RFC3339] [--admin] [--downstream] [--federates-with TD ...]
       rampart entry create --file FILE      (many entries, JSON or YAML; all or none)
       rampart entry update ID [the flags of create: those given replace the entry's]
       rampart entry update --file FILE      (each entry with its id; all or none)
       rampart entry list [--parent AGENT-ID] [--spiffe-id ID] [--selector S ...] [--hint TEXT] [--federates-with TD] [--json]
       rampart entry show ID [--json]
       rampart entry delete ID | --file FILE   (the ids of the file's entries; all or none)`

// entryFlags are create's and update's flags.
type entryFlags struct {
	e                 api.Entry
	sels, dns, fed    listFlag
	ttl, jwtTTL       time.Duration
	expires           string
	admin, downstream bool
	file              string
	set               map[string]bool // flags given
}

// entryFieldFlags are the flags that set an entry's fields.
var entryFieldFlags = []string{"spiffe-id", "parent", "selector", "ttl", "jwt-ttl", "dns", "hint", "expires-at", "admin", "downstream", "federates-with"}

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
	var ef entryFlags
	var parent, spiffeID, hint, fedWith string
	var listSels listFlag
	switch verb {
	case "create", "update":
		fs.StringVar(&ef.e.SpiffeID, "spiffe-id", "", "SPIFFE ID to issue, e.g. spiffe://example.org/orders")
		fs.StringVar(&ef.e.ParentID, "parent", "", "agent that may issue it, e.g. spiffe://example.org/rampart/agent/node-1")
		fs.Var(&ef.sels, "selector", "unix:uid:N, unix:gid:N, unix:path:/abs/path or unix:sha256:HEX (repeatable; all must match)")
		fs.DurationVar(&ef.ttl, "ttl", 0, "X.509-SVID lifetime (default: the server's, 1h)")
		fs.DurationVar(&ef.jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime (default: the server's, 5m)")
		fs.Var(&ef.dns, "dns", "DNS name to include in the SVID (repeatable)")
		fs.StringVar(&ef.e.Hint, "hint", "", "tells a workload with several SVIDs which this is (the Workload API's hint)")
		fs.StringVar(&ef.expires, "expires-at", "", "RFC 3339 time after which the entry gives no SVID (default: never; \"never\" clears it on update)")
		fs.BoolVar(&ef.admin, "admin", false, "the workload holding this SPIFFE ID may call the admin API with the admin role (SPIRE's admin flag; needs the admin role to set)")
		fs.BoolVar(&ef.downstream, "downstream", false, "the workload holding this SPIFFE ID may mint downstream CAs, rampart ca downstream (SPIRE's downstream flag; needs the admin role to set)")
		fs.Var(&ef.fed, "federates-with", "trust domain (example.com) whose bundle the workload is given besides its own; needs a federation relationship (repeatable)")
		fs.StringVar(&ef.file, "file", "", "a JSON or YAML file of entries (SPIRE's entry export works): all are applied or none")
	case "list":
		fs.StringVar(&parent, "parent", "", "only entries of this agent")
		fs.StringVar(&spiffeID, "spiffe-id", "", "only entries giving this SPIFFE ID")
		fs.Var(&listSels, "selector", "only entries with this selector (repeatable: with all of them)")
		fs.StringVar(&hint, "hint", "", "only entries with this hint")
		fs.StringVar(&fedWith, "federates-with", "", "only entries federating with this trust domain")
	case "delete":
		fs.StringVar(&ef.file, "file", "", "delete the entries (by id) of a JSON or YAML file, all or none")
	case "show":
	default:
		return usagef("unknown verb %q; usage: %s", verb, entryUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	ef.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { ef.set[f.Name] = true })
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	if ef.file != "" {
		return entryBatch(ctx, env, c, verb, ef, fs.NArg(), *asJSON)
	}
	switch verb {
	case "create":
		if ef.e.SpiffeID == "" || ef.e.ParentID == "" || len(ef.sels) == 0 {
			return usagef("entry create needs --spiffe-id, --parent and at least one --selector (or --file)")
		}
		if err := ef.apply(&ef.e); err != nil {
			return err
		}
		var out api.Entry
		if err := c.Do(ctx, http.MethodPost, "/v1/entries", ef.e, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintln(env.stdout, out.ID)
		return nil
	case "update":
		if fs.NArg() != 1 {
			return usagef("entry update takes one entry ID (or --file)")
		}
		if !slices.ContainsFunc(entryFieldFlags, func(f string) bool { return ef.set[f] }) {
			return usagef("entry update: give the fields to change (--selector, --ttl, --hint, ...)")
		}
		var cur api.Entry
		path := "/v1/entries/" + pathEscape(fs.Arg(0))
		if err := c.Do(ctx, http.MethodGet, path, nil, &cur); err != nil {
			return err
		}
		if ef.set["spiffe-id"] {
			cur.SpiffeID = ef.e.SpiffeID
		}
		if ef.set["parent"] {
			cur.ParentID = ef.e.ParentID
		}
		if ef.set["hint"] {
			cur.Hint = ef.e.Hint
		}
		if err := ef.apply(&cur); err != nil {
			return err
		}
		cur.CreatedAt = time.Time{}
		var out api.Entry
		if err := c.Do(ctx, http.MethodPut, path, cur, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintf(env.stdout, "updated entry %s (%s)\n", out.ID, out.SpiffeID)
		return nil
	case "list":
		q := url.Values{}
		for k, v := range map[string]string{"parent_id": parent, "spiffe_id": spiffeID, "hint": hint, "federates_with": fedWith} {
			if v != "" {
				q.Set(k, v)
			}
		}
		for _, s := range listSels {
			q.Add("selector", s)
		}
		path := "/v1/entries"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var out []api.Entry
		if err := c.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := table(env, "ID", "SPIFFE ID", "PARENT", "SELECTORS", "TTL", "HINT")
		for _, e := range out {
			tw.row(e.ID, e.SpiffeID, e.ParentID, strings.Join(e.Selectors, ","), ttlString(e.X509TTLSeconds), e.Hint)
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
	expires := "never"
	if !out.ExpiresAt.IsZero() {
		expires = fmtTime(out.ExpiresAt)
	}
	return printFields(env, "ID", out.ID, "SPIFFE ID", out.SpiffeID, "Parent", out.ParentID,
		"Selectors", strings.Join(out.Selectors, ", "), "X.509 TTL", ttlString(out.X509TTLSeconds),
		"JWT TTL", ttlString(out.JWTTTLSeconds), "DNS names", strings.Join(out.DNSNames, ", "), "Hint", out.Hint,
		"Admin", strconv.FormatBool(out.Admin), "Downstream", strconv.FormatBool(out.Downstream), "Expires", expires,
		"Federates with", strings.Join(out.FederatesWith, ", "),
		"Created", fmtTime(out.CreatedAt))
}

// apply sets on e the fields given as flags (all of create's; update's
// only those given).
func (ef *entryFlags) apply(e *api.Entry) error {
	if ef.ttl != 0 && ef.ttl < time.Second || ef.jwtTTL != 0 && ef.jwtTTL < time.Second {
		return usagef("--ttl and --jwt-ttl must be at least 1s")
	}
	all := e == &ef.e // create: every flag applies; update: those given
	if all || ef.set["selector"] {
		e.Selectors = ef.sels
	}
	if all || ef.set["dns"] {
		e.DNSNames = ef.dns
	}
	if all || ef.set["federates-with"] {
		e.FederatesWith = ef.fed
	}
	if all || ef.set["ttl"] {
		e.X509TTLSeconds = seconds(ef.ttl)
	}
	if all || ef.set["jwt-ttl"] {
		e.JWTTTLSeconds = seconds(ef.jwtTTL)
	}
	if all || ef.set["admin"] {
		e.Admin = ef.admin
	}
	if all || ef.set["downstream"] {
		e.Downstream = ef.downstream
	}
	if all || ef.set["expires-at"] {
		switch ef.expires {
		case "", "never":
			e.ExpiresAt = time.Time{}
		default:
			t, err := time.Parse(time.RFC3339, ef.expires)
			if err != nil {
				return usagef("--expires-at: want an RFC 3339 time such as 2027-01-31T00:00:00Z")
			}
			e.ExpiresAt = t
		}
	}
	return nil
}

// entryBatch sends a file's entries to the batch API: all or none.
func entryBatch(ctx context.Context, env *cliEnv, c *api.Client, verb string, ef entryFlags, nargs int, asJSON bool) error {
	if nargs != 0 || slices.ContainsFunc(entryFieldFlags, func(f string) bool { return ef.set[f] }) {
		return usagef("entry %s --file takes no entry ID and no other entry flags: the file says everything", verb)
	}
	b, err := os.ReadFile(ef.file)
	if err != nil {
		return err
	}
	fes, err := registration.ParseEntryFile(b)
	if err != nil {
		return fmt.Errorf("%s: %w", ef.file, err)
	}
	var req api.EntryBatch
	for i, fe := range fes {
		switch {
		case verb == "create" && fe.ID != "":
			return fmt.Errorf("%s: entries[%d]: id: entry create chooses IDs; to change existing entries use entry update --file", ef.file, i)
		case verb != "create" && fe.ID == "":
			return fmt.Errorf("%s: entries[%d]: id: entry %s --file needs each entry's id", ef.file, i, verb)
		}
		if verb == "delete" {
			req.IDs = append(req.IDs, fe.ID)
			continue
		}
		s := fe.Spec
		req.Entries = append(req.Entries, api.Entry{ID: fe.ID, SpiffeID: s.SpiffeID, ParentID: s.ParentID, Selectors: s.Selectors,
			X509TTLSeconds: s.X509TTLSeconds, JWTTTLSeconds: s.JWTTTLSeconds, DNSNames: s.DNSNames,
			Admin: s.Admin, Downstream: s.Downstream, Hint: s.Hint, ExpiresAt: s.ExpiresAt, FederatesWith: s.FederatesWith})
	}
	var out api.EntryBatchResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/entries/batch/"+verb, req, &out); err != nil {
		return fmt.Errorf("%s: nothing was applied: %w", ef.file, err)
	}
	if asJSON {
		return printJSON(env, out.Entries)
	}
	past := map[string]string{"create": "created", "update": "updated", "delete": "deleted"}[verb]
	fmt.Fprintf(env.stdout, "%s %d entries\n", past, len(out.Entries))
	for _, e := range out.Entries {
		fmt.Fprintf(env.stdout, "%s %s\n", e.ID, e.SpiffeID)
	}
	return nil
}

func ttlString(s int64) string {
	if s == 0 {
		return "default"
	}
	return (time.Duration(s) * time.Second).String()
}
