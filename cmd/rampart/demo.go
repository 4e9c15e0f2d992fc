package main

import (
	"context"

	"github.com/rampartsec/rampart/internal/demo"
)

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "demo", "rampart demo [--data DIR] [--attacks]")
	var cfg demo.Config
	fs.StringVar(&cfg.DataDir, "data", "rampart-demo", "demo data directory (reused on the next start)")
	fs.BoolVar(&cfg.Attacks, "attacks", false, "run every attack scenario against the live system, print the outcomes, and exit")
	fs.StringVar(&cfg.Attack, "attack", "", "run one attack scenario by name and exit")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cfg.Stdout, cfg.Stderr = env.stdout, env.stderr
	return demo.Run(ctx, cfg)
}
