package main

import (
	"flag"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/secretfile"
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
	if err := refuseSecretArgs(fs, args); err != nil {
		return err
	}
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
			if es, ok := f.Value.(envSetter); ok {
				err = es.SetFromEnv(v)
				return
			}
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s=%q: %v", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// refuseSecretArgs refuses a secret flag on the command line before the
// flag package sees it (its error would repeat the value).
func refuseSecretArgs(fs *flag.FlagSet, args []string) error {
	for i, a := range args {
		if a == "--" {
			return nil
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		switch fv := f.Value.(type) {
		case *secretArg:
			return usageError{"--" + name + ": " + fv.Set("").Error()}
		case dsnFlag:
			if v == "" && i+1 < len(args) {
				v = args[i+1]
			}
			if dsnHasPassword(v) {
				return usageError{"--" + name + ": " + fv.Set(v).Error()}
			}
		}
	}
	return nil
}

// envSetter is a flag value that accepts from its environment variable
// what it refuses on the command line: a secret. Its error never repeats
// the value.
type envSetter interface {
	SetFromEnv(v string) error
}

// secretFlag is a secret that comes from the environment (RAMPART_NAME) or
// from a file (--NAME-file, RAMPART_NAME_FILE; refused if group or others
// may read it), never from the command line, where every local user reads
// it (ps, /proc/PID/cmdline). --NAME remains as a flag only to say so.
type secretFlag struct {
	name  string
	value string // from the environment
	file  string // from --NAME-file
	// onCommandLine: --NAME-file was given on the command line (not
	// taken from RAMPART_NAME_FILE).
	onCommandLine bool
}

// addSecretFlag declares --NAME (refused) and --NAME-file for the secret
// described by what; note adds to the file flag's help.
func addSecretFlag(fs *flag.FlagSet, name, what, note string) *secretFlag {
	s := &secretFlag{name: name}
	fs.Var((*secretArg)(s), name, "refused: on the command line "+what+" would be readable by every local user; use --"+name+"-file or "+envName(name))
	fs.Var((*fileArg)(s), name+"-file", "file holding "+what+", mode 0600 or stricter (or set "+envName(name)+")"+note)
	return s
}

// get returns the secret, from the environment or the file; "" when
// neither is given.
func (s *secretFlag) get() (string, error) {
	if s.value != "" && s.file != "" {
		return "", usagef("%s and --%s-file are both set; give the secret once", envName(s.name), s.name)
	}
	if s.file == "" {
		return s.value, nil
	}
	b, err := secretfile.Read(s.file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", s.name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// fileArg is --NAME-file: it records whether it came from the command
// line or the environment.
type fileArg secretFlag

func (a *fileArg) String() string {
	if a == nil {
		return ""
	}
	return a.file
}

func (a *fileArg) Set(v string) error {
	a.file, a.onCommandLine = v, true
	return nil
}

func (a *fileArg) SetFromEnv(v string) error {
	a.file = v
	return nil
}

// secretArg is --NAME itself: it refuses any value on the command line
// and takes one from RAMPART_NAME.
type secretArg secretFlag

func (a *secretArg) String() string { return "" }

func (a *secretArg) Set(string) error {
	return fmt.Errorf("%w; put it in a file only you can read (chmod 600) and pass --%s-file FILE, or set %s",
		secretfile.ErrOnCommandLine, a.name, envName(a.name))
}

func (a *secretArg) SetFromEnv(v string) error {
	a.value = v
	return nil
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

// dsnFlag is a PostgreSQL connection string, which may carry a password:
// accepted from the environment (RAMPART_POSTGRES), refused on the command
// line when it holds one. The password belongs in a passfile (PGPASSFILE,
// or ~/.pgpass; mode 0600) or PGPASSWORD, which pgx reads itself.
type dsnFlag struct{ dsn *string }

func (d dsnFlag) String() string {
	if d.dsn == nil {
		return ""
	}
	return *d.dsn
}

func (d dsnFlag) Set(v string) error {
	if dsnHasPassword(v) {
		return fmt.Errorf("%w; keep the password out of the URL: put it in a passfile (PGPASSFILE=FILE, lines host:port:db:user:password, chmod 600) or PGPASSWORD, or give the whole URL as RAMPART_POSTGRES",
			secretfile.ErrOnCommandLine)
	}
	*d.dsn = v
	return nil
}

func (d dsnFlag) SetFromEnv(v string) error {
	*d.dsn = v
	return nil
}

// dsnHasPassword reports whether a PostgreSQL connection string (URL or
// key=value form) carries a password.
func dsnHasPassword(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return strings.Contains(dsn, "@") || strings.Contains(strings.ToLower(dsn), "password")
		}
		if _, ok := u.User.Password(); ok {
			return true
		}
		for k := range u.Query() {
			if strings.EqualFold(k, "password") {
				return true
			}
		}
		return false
	}
	return passwordKeyRE.MatchString(dsn)
}

var passwordKeyRE = regexp.MustCompile(`(?i)(^|\s)password\s*=`)
