package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/rampartsec/rampart/internal/netpol"
)

const netpolUsage = `rampart netpol view [--json]
       rampart netpol export --format nftables|kubernetes|cilium [--host ADDR] [--pods FILE] [--out PATH] [--strict]
       rampart netpol check --host ADDR [--netns PATH]
       rampart netpol check --format kubernetes|cilium [--pods FILE] FILE...

  Network policy from the same source as the L7 policies: only a service's
  allowed callers can open a TCP connection to its inbound proxy, and only
  the proxy (over loopback) reaches the application behind it.

  view    where each service runs (as agents report it), its inbound ports,
          the allowed caller -> callee edges, and what could not be placed.
  export  renders the view: nftables (one table per host; all hosts into
          --out DIR, or one with --host), Kubernetes NetworkPolicy or
          CiliumNetworkPolicy objects (pods from --pods, a YAML list of
          {spiffe_id, namespace, labels}, or from /ns/NS/sa/SA SPIFFE IDs).
          Problems go to stderr; --strict makes them an error (exit 1).
  check   compares a render with what is applied: this host's nftables
          table, read through netlink (run it as root on the host), or a
          set of Kubernetes manifests. Exit status 1 when they differ.

  rampart agent --netpol=enforce applies a host's table itself and keeps it
  in step; see docs/netpol.md.`

func runNetpol(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", netpolUsage)
	}
	verb := args[0]
	if verb == "-h" || verb == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+netpolUsage)
		return nil
	}
	fs := newFlags(env, "netpol "+verb, netpolUsage)
	ac := addAdminFlags(fs)
	var format, host, pods, out, netns string
	var asJSON, strict bool
	switch verb {
	case "view":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "export":
		fs.StringVar(&format, "format", "", "nftables, kubernetes or cilium")
		fs.StringVar(&host, "host", "", "nftables: only this host's table (its address as agents report it)")
		fs.StringVar(&pods, "pods", "", "kubernetes, cilium: a YAML file mapping SPIFFE IDs to namespaces and pod labels")
		fs.StringVar(&out, "out", "", "write here (nftables without --host: a directory, one host-ADDR.nft each) rather than to standard output")
		fs.BoolVar(&strict, "strict", false, "fail (exit 1) when something could not be placed")
	case "check":
		fs.StringVar(&format, "format", "nftables", "nftables (this host's applied table) or kubernetes, cilium (manifests given as arguments)")
		fs.StringVar(&host, "host", "", "nftables: this host's address as agents report it")
		fs.StringVar(&netns, "netns", "", "nftables: read the table of this network namespace (e.g. /var/run/netns/NAME)")
		fs.StringVar(&pods, "pods", "", "kubernetes, cilium: the pod map")
	default:
		return usagef("unknown verb %q; usage: %s", verb, netpolUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	var hostAddr netip.Addr
	if host != "" {
		var err error
		if hostAddr, err = netip.ParseAddr(host); err != nil {
			return usagef("--host %q: want an IP address", host)
		}
	}
	switch format {
	case "", "nftables", "kubernetes", "cilium":
	default:
		return usagef("--format %q: want nftables, kubernetes or cilium", format)
	}
	if verb == "export" && format == "" {
		return usagef("netpol export needs --format nftables, kubernetes or cilium")
	}
	if verb == "check" && format == "nftables" && !hostAddr.IsValid() {
		return usagef("netpol check needs --host ADDR (this host's address) for the nftables table")
	}
	if verb == "check" && format != "nftables" && fs.NArg() == 0 {
		return usagef("netpol check --format %s takes the manifest files to compare", format)
	}
	var podMap netpol.PodMap
	if pods != "" {
		f, err := os.Open(pods)
		if err != nil {
			return usagef("--pods: %v", err)
		}
		podMap, err = netpol.ParsePodMap(f)
		f.Close()
		if err != nil {
			return usagef("--pods %s: %v", pods, err)
		}
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	var v netpol.View
	if err := c.Do(ctx, http.MethodGet, "/v1/netpol/view", nil, &v); err != nil {
		return err
	}
	switch verb {
	case "view":
		if asJSON {
			return printJSON(env, v)
		}
		printView(env.stdout, &v)
		return nil
	case "export":
		return netpolExport(env, &v, format, hostAddr, podMap, out, strict)
	}
	return netpolCheck(env, &v, format, hostAddr, netns, podMap, fs.Args())
}

func printView(w io.Writer, v *netpol.View) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tHOSTS\tPORTS\tAPP PORTS\tPOLICY\tCALLERS")
	for _, s := range v.Services {
		var hosts, ports []string
		for _, h := range s.Hosts {
			hosts = append(hosts, h.String())
			for _, p := range s.Ports[h] {
				ports = append(ports, fmt.Sprintf("%s:%d", h, p))
			}
		}
		pol := s.Policy
		if pol == "" {
			pol = "none (default deny)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", s.ID, orDash(strings.Join(hosts, ",")), orDash(strings.Join(ports, ",")),
			orDash(strings.Trim(fmt.Sprint(s.AppPorts), "[]")), pol, len(s.Callers))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d edges:\n", len(v.Edges))
	for _, e := range v.Edges {
		fmt.Fprintf(w, "  %s -> %s\n", e.From, e.To)
	}
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, "\n%d problems:\n", len(v.Problems))
		for _, p := range v.Problems {
			fmt.Fprintln(w, "  "+p)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func netpolExport(env *cliEnv, v *netpol.View, format string, host netip.Addr, pods netpol.PodMap, out string, strict bool) error {
	problems := v.Problems
	write := func(path, text string) error {
		if path == "" {
			_, err := io.WriteString(env.stdout, text)
			return err
		}
		return os.WriteFile(path, []byte(text), 0o644)
	}
	switch format {
	case "nftables":
		hosts := v.Hosts()
		if host.IsValid() {
			hosts = []netip.Addr{host}
		}
		if out != "" && !host.IsValid() {
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
		}
		for _, h := range hosts {
			text := v.HostTable(h).NFT()
			path := out
			if out != "" && !host.IsValid() {
				path = filepath.Join(out, "host-"+strings.ReplaceAll(h.String(), ":", "_")+".nft")
			}
			if path == "" && len(hosts) > 1 {
				text += "\n"
			}
			if err := write(path, text); err != nil {
				return err
			}
		}
	case "kubernetes", "cilium":
		var text string
		var more []string
		if format == "kubernetes" {
			text, more = v.Kubernetes(pods)
		} else {
			text, more = v.Cilium(pods)
		}
		problems = append(problems, more...)
		if err := write(out, text); err != nil {
			return err
		}
	}
	for _, p := range problems {
		fmt.Fprintln(env.stderr, "warning: "+p)
	}
	if strict && len(problems) > 0 {
		return exitCode{1, fmt.Sprintf("%d problems (--strict)", len(problems))}
	}
	return nil
}

func netpolCheck(env *cliEnv, v *netpol.View, format string, host netip.Addr, netns string, pods netpol.PodMap, files []string) error {
	var diff []string
	switch format {
	case "nftables":
		var err error
		if diff, err = appliedDiff(netns, v.HostTable(host)); err != nil {
			return err
		}
	default:
		var text string
		if format == "kubernetes" {
			text, _ = v.Kubernetes(pods)
		} else {
			text, _ = v.Cilium(pods)
		}
		var rs []io.Reader
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			rs = append(rs, strings.NewReader(string(b)))
		}
		var err error
		if diff, err = netpol.DiffObjects(text, rs); err != nil {
			return err
		}
	}
	if len(diff) == 0 {
		fmt.Fprintln(env.stdout, "in step: what is applied is what the policies render")
		return nil
	}
	for _, d := range diff {
		fmt.Fprintln(env.stdout, d)
	}
	return exitCode{1, fmt.Sprintf("%d differences between the policies' render (-) and what is applied (+, ~ changed)", len(diff))}
}
