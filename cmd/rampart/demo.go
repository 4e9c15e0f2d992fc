package main

import (
	"context"

	"github.com/rampartsec/rampart/internal/demo"
)

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 && args[0] == "customers-service" {
		return runCustomersService(ctx, env, args[1:])
	}
	fs := newFlags(env, "demo", "rampart demo [--data DIR] [--attacks | --attack NAME]")
	var cfg demo.Config
	fs.StringVar(&cfg.DataDir, "data", "rampart-demo", "demo data directory (reused on the next start)")
	fs.BoolVar(&cfg.Attacks, "attacks", false, "run every attack scenario against the live system, print the outcomes, and exit")
	fs.StringVar(&cfg.Attack, "attack", "", "run one attack scenario by name and exit")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cfg.Stdout, cfg.Stderr, cfg.Progress = env.stdout, env.stderr, progressTo(env)
	return demo.Run(ctx, cfg)
}

// runCustomersService is the demo's customers service, started by rampart
// demo as its own process (its own binary path, so its own identity).
func runCustomersService(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "demo customers-service", "rampart demo customers-service --socket PATH --server ADDR --db FILE (started by rampart demo)")
	var cfg demo.CustomersConfig
	fs.StringVar(&cfg.Socket, "socket", "", "the agent's Workload API socket")
	fs.StringVar(&cfg.Server, "server", "", "the rampart server")
	fs.StringVar(&cfg.DB, "db", "customers.db", "SQLite file for the records")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cfg.ReadyFile = env.getenv("RAMPART_READY_FILE")
	return demo.RunCustomers(ctx, cfg)
}
