package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

func runToken(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(env.stdout, "Usage: rampart token create [--agent-name NAME] [--ttl 10m] [--json]")
			return nil
		}
		return usagef("usage: rampart token create [--agent-name NAME] [--ttl 10m] [--json]")
	}
	fs := newFlags(env, "token create", "rampart token create [--agent-name NAME] [--ttl 10m] [--json]")
	ac := addAdminFlags(fs)
	name := fs.String("agent-name", "", "name of the agent this token attests (default: random); its ID is spiffe://TD/rampart/agent/NAME")
	ttl := fs.Duration("ttl", 0, "how long the token stays valid (default: the server's, 10m)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if *ttl < 0 || (*ttl > 0 && *ttl < time.Second) {
		return usagef("--ttl must be at least 1s")
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	var resp api.CreateJoinTokenResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: *name, TTLSeconds: seconds(*ttl)}, &resp); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, resp)
	}
	fmt.Fprintf(env.stdout, "%s\n", resp.Token)
	fmt.Fprintf(env.stderr, "join token for %s, valid once until %s\n", resp.AgentID, fmtTime(resp.ExpiresAt))
	return nil
}
