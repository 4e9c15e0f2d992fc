package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// The CLI's behaviour is pinned by scripts, one scenario per file in
// testdata/script (the way age and the go command test theirs). "rampart"
// in a script runs this binary's main, in a child process, so exit codes,
// standard streams and the environment are the real ones.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"rampart": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
			code := run(ctx, env, os.Args[1:])
			stop()
			os.Exit(code)
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			// Nothing of the developer's environment leaks in.
			for _, kv := range os.Environ() {
				if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "RAMPART_") {
					e.Setenv(k, "")
				}
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitserver": waitServer,
			"status":     status,
			"envfrom":    envFrom,
			"waitfile":   waitFile,
		},
	})
}

// status N PROG [ARGS...] runs PROG like exec and requires exit status N
// (0 success, 1 failure, 2 usage error); its output is then checked with
// stdout and stderr as after exec.
func status(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: %q is not a number", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("status: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// envFrom VAR REGEXP sets VAR to the first submatch of REGEXP in the last
// command's standard output (a token or an ID a later command needs).
func envFrom(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envfrom VAR REGEXP")
	}
	re, err := regexp.Compile(args[1])
	if err != nil {
		ts.Fatalf("envfrom: %v", err)
	}
	m := re.FindStringSubmatch(ts.ReadFile("stdout"))
	if len(m) < 2 {
		ts.Fatalf("envfrom: %s matches nothing (with a group) in stdout", args[1])
	}
	ts.Setenv(args[0], m[1])
}

// waitFile PATH waits up to 60 s for PATH to exist (an agent's socket).
func waitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile PATH")
	}
	path := ts.MkAbs(args[0])
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not appear within 60s", path)
		}
	}
}

// waitServer DIR waits for a server started in the background with
// RAMPART_READY_FILE=DIR/ready and points the admin commands at it:
// RAMPART_SERVER, RAMPART_ADMIN_TOKEN_FILE and RAMPART_CA_BUNDLE.
func waitServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitserver DIR")
	}
	dir := ts.MkAbs(args[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "ready"))
		if err == nil && len(b) > 0 {
			ts.Setenv("RAMPART_SERVER", strings.TrimSpace(string(b)))
			ts.Setenv("RAMPART_ADMIN_TOKEN_FILE", filepath.Join(dir, "admin.token"))
			ts.Setenv("RAMPART_CA_BUNDLE", filepath.Join(dir, "bundle.pem"))
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not appear within 60s", fmt.Sprint(filepath.Join(dir, "ready")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
