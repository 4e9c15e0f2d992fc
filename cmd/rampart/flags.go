package main

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// newFlags returns a flag set whose --help prints synopsis, the flags and
// their environment variables.
func newFlags(env *cliEnv, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		out := env.stdout
		fmt.Fprintf(out, "Usage: %s\n\nFlags (environment variable in brackets):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(out, "  --%s [%s]\n      %s%s\n", f.Name, envName(f.Name), f.Usage, def)
		})
	}
	return fs
}

func envName(flagName string) string {
	return "RAMPART_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args, flags and positional arguments in any order ("agent
// show node-1 --json"), then fills every flag not given on the command line
// from its RAMPART_* environment variable. The command line wins.
func parse(env *cliEnv, fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return err
			}
			return usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	// Parse keeps flags already set; this only resets fs.Args().
	fs.Parse(append([]string{"--"}, positional...))
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v := env.getenv(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s=%q: %v", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// listFlag is a repeatable string flag; a comma also separates values when
// it comes from the environment.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// repeatFlag is a repeatable flag whose values may contain commas; from the
// environment, several values are separated by spaces.
type repeatFlag []string

func (r *repeatFlag) String() string { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(v string) error {
	*r = append(*r, strings.Fields(v)...)
	return nil
}
