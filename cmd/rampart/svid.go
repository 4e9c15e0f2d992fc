package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

const svidUsage = `rampart svid revoke (--serial HEX | --spiffe-id ID) [--reason TEXT] [--json]
       rampart svid fetch [--socket PATH] [--agent-uid UID] [--write DIR] [--json]`

func runSVID(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", svidUsage)
	}
	switch args[0] {
	case "revoke":
		return runSVIDRevoke(ctx, env, args[1:])
	case "fetch":
		return runSVIDFetch(ctx, env, args[1:])
	case "-h", "--help":
		fmt.Fprintln(env.stdout, "Usage: "+svidUsage)
		return nil
	}
	return usagef("unknown verb %q; usage: %s", args[0], svidUsage)
}

func runSVIDRevoke(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "svid revoke", "rampart svid revoke (--serial HEX | --spiffe-id ID) [--reason TEXT]")
	ac := addAdminFlags(fs)
	var req api.RevokeRequest
	fs.StringVar(&req.Serial, "serial", "", "serial number (hex) of one SVID")
	fs.StringVar(&req.SpiffeID, "spiffe-id", "", "revoke every unexpired SVID issued for this ID")
	fs.StringVar(&req.Reason, "reason", "", "why (recorded)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if (req.Serial == "") == (req.SpiffeID == "") {
		return usagef("give exactly one of --serial and --spiffe-id")
	}
	req.Serial = strings.ToLower(strings.TrimPrefix(req.Serial, "0x"))
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	var resp api.RevokeResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/svids/revoke", req, &resp); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, resp)
	}
	fmt.Fprintf(env.stdout, "revoked %d SVID(s): %s\n", len(resp.Revoked), strings.Join(resp.Revoked, ", "))
	return nil
}

// runSVIDFetch is a Workload API client (go-spiffe's), handy for checking
// what a process gets from its agent.
func runSVIDFetch(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "svid fetch", "rampart svid fetch [--socket PATH] [--agent-uid UID] [--write DIR] [--json]")
	ws := addWorkloadFlags(fs)
	write := fs.String("write", "", "write svid.pem, svid.key (0600) and bundle.pem into this directory")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *write != "" {
		// Whoever reads the files trusts them (the bundle above all): a
		// directory another user controls would let them swap them, or
		// point them elsewhere with a symbolic link (safedir).
		dir, err := safedir.Make(*write, "the --write directory", os.Geteuid(), 0o700)
		if err != nil {
			return err
		}
		*write = dir
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	socket, want, err := ws.resolve(env)
	if err != nil {
		return err
	}
	opts, err := endpoint.ClientOptions(ctx, socket, want)
	if err != nil {
		return err
	}
	resp, err := workloadapi.FetchX509Context(ctx, opts...)
	if err != nil {
		return fmt.Errorf("fetch from %s: %w", socket, err)
	}
	type out struct {
		SpiffeID string    `json:"spiffe_id"`
		Serial   string    `json:"serial"`
		NotAfter time.Time `json:"not_after"`
	}
	var outs []out
	for _, s := range resp.SVIDs {
		outs = append(outs, out{s.ID.String(), s.Certificates[0].SerialNumber.Text(16), s.Certificates[0].NotAfter})
	}
	if *write != "" && len(resp.SVIDs) > 0 {
		s := resp.SVIDs[0]
		if err := os.WriteFile(filepath.Join(*write, "svid.pem"), identity.EncodePEM(s.Certificates), 0o644); err != nil {
			return err
		}
		if err := identity.WriteKeyFile(filepath.Join(*write, "svid.key"), s.PrivateKey); err != nil {
			return err
		}
		b, err := resp.Bundles.GetX509BundleForTrustDomain(s.ID.TrustDomain())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*write, "bundle.pem"), identity.EncodePEM(b.X509Authorities()), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(env, outs)
	}
	for _, o := range outs {
		fmt.Fprintf(env.stdout, "%s  serial %s  expires %s\n", o.SpiffeID, o.Serial, fmtTime(o.NotAfter))
	}
	return nil
}

// workloadFlags say where the agent's Workload API is and which uid must
// serve it (checked with SO_PEERCRED on every connection).
type workloadFlags struct {
	socket, agentUID string
}

func addWorkloadFlags(fs *flag.FlagSet) *workloadFlags {
	w := &workloadFlags{}
	fs.StringVar(&w.socket, "socket", "", "the agent's Workload API socket (default "+endpoint.SystemDir+"/"+endpoint.SocketName+
		", or $XDG_RUNTIME_DIR/rampart/"+endpoint.SocketName+" when not root and it exists)")
	fs.StringVar(&w.agentUID, "agent-uid", "", "uid the agent runs as; a socket served by any other uid is refused (default: the owner of the socket's directory, if that is root or you)")
	return w
}

// resolve returns the socket path and the expected agent uid (nil: the
// default, see endpoint.ExpectedUID).
func (w *workloadFlags) resolve(env *cliEnv) (string, *uint32, error) {
	want, err := endpoint.ParseUID(w.agentUID)
	if err != nil {
		return "", nil, usagef("--agent-uid: %v", err)
	}
	if w.socket == "" {
		return endpoint.ClientPath(os.Geteuid(), env.getenv), want, nil
	}
	return w.socket, want, nil
}
