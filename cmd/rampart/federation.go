package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

const federationUsage = `rampart federation create --trust-domain TD --bundle-endpoint-url URL --profile https_spiffe|https_web [--endpoint-spiffe-id ID] [--bundle-file FILE] [--json]
       rampart federation list [--json]
       rampart federation show TD [--bundle] [--json]
       rampart federation update TD [--bundle-endpoint-url URL] [--profile P] [--endpoint-spiffe-id ID] [--bundle-file FILE] [--json]
       rampart federation delete TD
       rampart federation bundle [--out FILE]

Federation lets workloads of another trust domain call ours (and ours
theirs) with their own SVIDs. Each side serves its bundle (rampart server
--federation-listen) and fetches the other's:

  # on B: print B's bundle, give the file to A's operator out of band
  rampart federation bundle --out b.bundle.json
  # on A: federate with B
  rampart federation create --trust-domain b.example \
    --bundle-endpoint-url https://bundle.b.example:8444/ --profile https_spiffe \
    --endpoint-spiffe-id spiffe://b.example/rampart/server --bundle-file b.bundle.json

https_spiffe: B's endpoint presents an SVID that must chain to the bundle
A holds for B (the first one from --bundle-file) and carry exactly
--endpoint-spiffe-id. https_web: B's endpoint presents a Web PKI certificate
for the URL's host (the system's roots, or the server's
--federation-web-roots). A keeps B's bundle current at B's
spiffe_refresh_hint; a fetch that fails keeps the bundle held.

Then name B's workloads in A's policies (callers: spiffe://b.example/...).
update changes the endpoint; with --bundle-file it also replaces the bundle
held (re-bootstrapping after B lost its keys). delete ends the federation:
B's bundle leaves every agent and proxy of A.`

func runFederation(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			return usagef("usage: %s", federationUsage)
		}
		fmt.Fprintln(env.stdout, "Usage: "+federationUsage)
		return nil
	}
	verb := args[0]
	fs := newFlags(env, "federation "+verb, federationUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var req api.Federation
	var bundleFile, out string
	var showBundle bool
	nargs := 0
	switch verb {
	case "create", "update":
		if verb == "create" {
			fs.StringVar(&req.TrustDomain, "trust-domain", "", "the other trust domain (required)")
		} else {
			nargs = 1
		}
		fs.StringVar(&req.BundleURL, "bundle-endpoint-url", "", "https URL of its bundle endpoint")
		fs.StringVar(&req.Profile, "profile", "", "how its endpoint authenticates: https_spiffe or https_web")
		fs.StringVar(&req.EndpointID, "endpoint-spiffe-id", "", "https_spiffe: the SPIFFE ID its endpoint presents")
		fs.StringVar(&bundleFile, "bundle-file", "", "its bundle (SPIFFE bundle JSON, as rampart federation bundle prints it), obtained out of band; https_spiffe needs one to start")
	case "show":
		nargs = 1
		fs.BoolVar(&showBundle, "bundle", false, "print the bundle held (SPIFFE bundle JSON)")
	case "delete":
		nargs = 1
	case "list":
	case "bundle":
		fs.StringVar(&out, "out", "", "write the bundle to FILE (default: standard output)")
	default:
		return usagef("unknown verb %q; usage: %s", verb, federationUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		return usagef("federation %s takes %d argument(s); usage: %s", verb, nargs, federationUsage)
	}
	if verb == "create" && (req.TrustDomain == "" || req.BundleURL == "" || req.Profile == "") {
		return usagef("federation create needs --trust-domain, --bundle-endpoint-url and --profile")
	}
	if bundleFile != "" {
		b, err := os.ReadFile(bundleFile)
		if err != nil {
			return fmt.Errorf("--bundle-file: %w", err)
		}
		if !json.Valid(b) {
			return fmt.Errorf("--bundle-file %s: not JSON (want a SPIFFE bundle, as rampart federation bundle prints it)", bundleFile)
		}
		req.Bundle = b
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	var f api.Federation
	switch verb {
	case "create":
		if err := cl.Do(ctx, http.MethodPost, "/v1/federations", req, &f); err != nil {
			return err
		}
	case "update":
		var cur api.Federation
		if err := cl.Do(ctx, http.MethodGet, "/v1/federations/"+pathEscape(fs.Arg(0)), nil, &cur); err != nil {
			return err
		}
		// What is not given stays as it is.
		upd := api.Federation{TrustDomain: cur.TrustDomain, BundleURL: cur.BundleURL, Profile: cur.Profile, EndpointID: cur.EndpointID, Bundle: req.Bundle}
		if req.BundleURL != "" {
			upd.BundleURL = req.BundleURL
		}
		if req.Profile != "" {
			upd.Profile = req.Profile
			if req.Profile == "https_web" {
				upd.EndpointID = ""
			}
		}
		if req.EndpointID != "" {
			upd.EndpointID = req.EndpointID
		}
		if err := cl.Do(ctx, http.MethodPut, "/v1/federations/"+pathEscape(fs.Arg(0)), upd, &f); err != nil {
			return err
		}
	case "show":
		if err := cl.Do(ctx, http.MethodGet, "/v1/federations/"+pathEscape(fs.Arg(0)), nil, &f); err != nil {
			return err
		}
		if showBundle {
			if f.Bundle == nil {
				return fmt.Errorf("no bundle of %s is held yet", f.TrustDomain)
			}
			fmt.Fprintln(env.stdout, string(f.Bundle))
			return nil
		}
	case "delete":
		if err := cl.Do(ctx, http.MethodDelete, "/v1/federations/"+pathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "federation with %s ended\n", fs.Arg(0))
		return nil
	case "list":
		var fs []api.Federation
		if err := cl.Do(ctx, http.MethodGet, "/v1/federations", nil, &fs); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, fs)
		}
		tw := table(env, "TRUST-DOMAIN", "PROFILE", "ENDPOINT", "ROOTS", "REFRESHED", "NEXT", "LAST-ERROR")
		for _, f := range fs {
			tw.row(f.TrustDomain, f.Profile, f.BundleURL, fmt.Sprint(f.X509Authorities), fmtTimePtr(f.RefreshedAt), fmtTimePtr(f.NextRefresh), orDash(f.LastError))
		}
		return tw.flush()
	case "bundle":
		var doc json.RawMessage
		if err := cl.Do(ctx, http.MethodGet, "/v1/federation/bundle", nil, &doc); err != nil {
			return err
		}
		if out != "" {
			return os.WriteFile(out, append(doc, '\n'), 0o644)
		}
		fmt.Fprintln(env.stdout, string(doc))
		return nil
	}
	if *asJSON {
		return printJSON(env, f)
	}
	return printFields(env, "Trust domain", f.TrustDomain, "Endpoint", f.BundleURL, "Profile", f.Profile, "Endpoint SPIFFE ID", orDash(f.EndpointID),
		"X.509 authorities", fmt.Sprint(f.X509Authorities), "Refreshed", fmtTimePtr(f.RefreshedAt), "Next refresh", fmtTimePtr(f.NextRefresh),
		"Last error", orDash(f.LastError))
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}
