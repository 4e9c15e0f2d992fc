// Command rampart is Rampart's single binary: the control-plane server, the
// node agent, the admin CLI and the demo. It parses flags and calls the
// packages under internal/; it holds no domain logic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name  string
	short string
	run   func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv is what a command may touch: its streams and environment, so tests
// can run commands in-process.
type cliEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func commands() []command {
	return []command{
		{"server", "run the control plane (CA, registration, API)", runServer},
		{"agent", "run the node agent, or manage agents (list, show, evict)", runAgent},
		{"token", "create one-time join tokens for agents", runToken},
		{"entry", "manage registration entries (create, list, show, delete)", runEntry},
		{"svid", "revoke SVIDs, or fetch one from the Workload API", runSVID},
		{"ca", "show and rotate the CA, or create an offline root", runCA},
		{"rekey", "burn-down after a compromise: replace every root, key and credential without an outage", runRekey},
		{"proxy", "run the mTLS sidecar: inbound authorisation, outbound identity checks", runProxy},
		{"policy", "manage authorisation policies; test and explain them", runPolicy},
		{"audit", "verify, query and export the tamper-evident audit log", runAudit},
		{"detect", "test detection rules against a log; print the built-in rules", runDetect},
		{"alert", "list, acknowledge and resolve detection alerts", runAlert},
		{"playbook", "publish, test, run and drill response playbooks", runPlaybook},
		{"incident", "incidents: timeline, notes, approvals, status, post-mortem, breach scope, quarantine", runIncident},
		{"oauth", "manage OAuth/OIDC clients and users (client ..., user ...)", runOAuth},
		{"kms", "manage key store keys (create, rotate, disable, destroy)", runKMS},
		{"backup", "make, list, verify and restore encrypted backups; run restore drills", runBackup},
		{"scan", "scan Go binaries, SBOMs and images for known vulnerabilities; the offline database, gate and exceptions", runScan},
		{"inventory", "list what runs where: services, hosts, binaries, modules and their findings", runInventory},
		{"netpol", "network policy from the policies: view, export (nftables, Kubernetes, Cilium), check what is applied", runNetpol},
		{"acme", "ACME certificates: EAB keys for clients (eab), issued certificates (certs)", runACME},
		{"login", "sign in as an operator (device flow or browser); the admin commands then act as you", runLogin},
		{"logout", "revoke and delete the operator sign-in kept by login", runLogout},
		{"whoami", "who the server sees: your operator, roles and permissions, or the admin token", runWhoami},
		{"operator", "manage operators and workloads holding roles (add, grant, revoke, disable, list)", runOperator},
		{"federation", "federate with other trust domains: relationships, their bundles, ours to give them", runFederation},
		{"demo", "start a secured sample system on loopback", runDemo},
		{"version", "print the version", func(_ context.Context, e *cliEnv, _ []string) error {
			fmt.Fprintln(e.stdout, "rampart", version)
			return nil
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `rampart: zero-trust security for microservices.

Usage: rampart COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprint(w, `
Every flag has an environment equivalent: --trust-domain is RAMPART_TRUST_DOMAIN.
Admin commands read RAMPART_SERVER and RAMPART_CA_BUNDLE, and act as the operator
signed in with "rampart login"; the break-glass admin token (--admin-token-file,
RAMPART_ADMIN_TOKEN_FILE) is used when nobody signed in, or when given with
--admin-token-file on the command line. Secrets are never taken as flag values: every local user
can read a command line.
Run "rampart COMMAND --help" for a command's flags.
`)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(ctx, env, os.Args[1:]))
}

func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, env, args[1:])
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			var ec exitCode
			if errors.As(err, &ec) {
				fmt.Fprintln(env.stderr, "rampart "+c.name+":", err)
				return ec.code
			}
			var ue usageError
			if errors.As(err, &ue) {
				fmt.Fprintln(env.stderr, "rampart "+c.name+":", err)
				return 2
			}
			if err != nil {
				fmt.Fprintln(env.stderr, "rampart "+c.name+":", err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(env.stderr, "rampart: unknown command %q\n\n", args[0])
	usage(env.stderr)
	return 2
}

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }
