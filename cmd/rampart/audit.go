package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
)

const auditUsage = `rampart audit verify --data SERVER-DATA-DIR [--witness CHECKPOINT ...] [--json]

Re-derives the audit log's Merkle tree from its entries and checks every
published checkpoint, plus checkpoints a witness kept elsewhere (--witness):
an edited, deleted, inserted or reordered entry is reported with its index.
Exit status 1 when anything is wrong.`

func runAudit(_ context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stdout, "Usage: "+auditUsage)
		if len(args) == 0 {
			return usagef("a verb is required")
		}
		return nil
	}
	if args[0] != "verify" {
		return usagef("unknown verb %q; usage: %s", args[0], auditUsage)
	}
	fs := newFlags(env, "audit verify", auditUsage)
	data := fs.String("data", "rampart-data", "the server's data directory (reads DATA/audit and DATA/audit.pub)")
	pub := fs.String("key", "", "verifier key file (default DATA/audit.pub)")
	var witnesses repeatFlag
	fs.Var(&witnesses, "witness", "a checkpoint file kept by a witness (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if *pub == "" {
		*pub = filepath.Join(*data, "audit.pub")
	}
	vkey, err := os.ReadFile(*pub)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return fmt.Errorf("verifier key %s: %w", *pub, err)
	}
	var extra [][]byte
	for _, w := range witnesses {
		b, err := os.ReadFile(w)
		if err != nil {
			return err
		}
		extra = append(extra, b)
	}
	rep, err := audit.Verify(filepath.Join(*data, "audit"), verifier, extra...)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(env, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.stdout, "%d entries, %d leaves recorded, %d checkpoints checked\n", rep.Entries, rep.Leaves, rep.Checkpoints)
		for _, p := range rep.Problems {
			fmt.Fprintln(env.stdout, "PROBLEM", p)
		}
		if rep.OK() {
			fmt.Fprintln(env.stdout, "OK: the log is consistent with every checkpoint")
		}
	}
	if !rep.OK() {
		return errors.New("the audit log does not verify")
	}
	return nil
}
