package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

const inventoryUsage = `rampart inventory list [--service SPIFFE-ID] [--host AGENT-ID] [--vulnerable] [--json]
       rampart inventory show SHA256|SPIFFE-ID [--json]

  What runs where: every executable an agent attested, by service and host,
  with its SHA-256, its Go modules, first and last seen, and its findings
  against the server's vulnerability database.`

func runInventory(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", inventoryUsage)
	}
	verb := args[0]
	if verb == "-h" || verb == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+inventoryUsage)
		return nil
	}
	fs := newFlags(env, "inventory "+verb, inventoryUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var service, host string
	var vulnerable bool
	switch verb {
	case "list":
		fs.StringVar(&service, "service", "", "only this SPIFFE ID")
		fs.StringVar(&host, "host", "", "only this agent")
		fs.BoolVar(&vulnerable, "vulnerable", false, "only executables with a called finding")
	case "show":
	default:
		return usagef("unknown verb %q; usage: %s", verb, inventoryUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	q := url.Values{}
	if verb == "show" {
		if fs.NArg() != 1 {
			return usagef("inventory show takes one SHA-256 or SPIFFE ID")
		}
		if strings.HasPrefix(fs.Arg(0), "spiffe://") {
			q.Set("service", fs.Arg(0))
		} else {
			q.Set("sha256", fs.Arg(0))
		}
	}
	if service != "" {
		q.Set("service", service)
	}
	if host != "" {
		q.Set("host", host)
	}
	if vulnerable {
		q.Set("vulnerable", "true")
	}
	var items []api.InventoryItem
	if err := c.Do(ctx, http.MethodGet, "/v1/inventory?"+q.Encode(), nil, &items); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, items)
	}
	if verb == "show" {
		if len(items) == 0 {
			return fmt.Errorf("nothing in the inventory for %s", fs.Arg(0))
		}
		for _, it := range items {
			tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "service\t%s\nhost\t%s\nsha256\t%s\nexe\t%s\nfirst seen\t%s\nlast seen\t%s\n", it.Service, it.Host, it.SHA256, it.Exe,
				it.FirstSeen.Format(time.RFC3339), it.LastSeen.Format(time.RFC3339))
			if it.GoVersion != "" {
				fmt.Fprintf(tw, "go\t%s\n", it.GoVersion)
				if it.Main != nil {
					fmt.Fprintf(tw, "main\t%s %s\n", it.Main.Path, it.Main.Version)
				}
				for _, m := range it.Modules {
					fmt.Fprintf(tw, "module\t%s %s\n", m.Path, m.Version)
				}
			}
			for _, f := range it.Findings {
				fmt.Fprintf(tw, "finding\t%s %s %s %s@%s fixed in %s\n", f.ID, f.Reachability, f.Severity, f.Package, f.Version, strings.Join(f.Fixed, ","))
			}
			tw.Flush()
			fmt.Fprintln(env.stdout)
		}
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tHOST\tSHA256\tEXE\tGO\tMODULES\tCALLED\tLAST SEEN")
	for _, it := range items {
		called := 0
		for _, f := range it.Findings {
			if f.Reachability == "called" {
				called++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", it.Service, it.Host, short(it.SHA256), it.Exe, it.GoVersion, len(it.Modules), called, it.LastSeen.Format(time.RFC3339))
	}
	return tw.Flush()
}
