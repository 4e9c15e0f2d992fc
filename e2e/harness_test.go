package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var rampartBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv("RAMPART_E2E_HELPER"); mode != "" {
		os.Exit(e2eHelper(mode))
	}
	dir, err := os.MkdirTemp("", "rampart-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rampartBin = filepath.Join(dir, "rampart")
	build := exec.Command("go", "build", "-o", rampartBin, "../cmd/rampart")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building rampart:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running rampart process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }
func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBin(t, rampartBin, env, args...)
}

// startBin starts bin (a copy of rampart at another path, for example).
func startBin(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, out: newSyncBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of rampart %s:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits; it kills after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// server is a running rampart server.
type server struct {
	*proc
	dir  string
	addr string
}

func startServer(t *testing.T, dir string, extra ...string) *server {
	t.Helper()
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	args := append([]string{"server", "--data", dir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org"}, extra...)
	p := start(t, []string{"RAMPART_READY_FILE=" + ready}, args...)
	addr := waitFile(t, p, ready)
	return &server{proc: p, dir: dir, addr: strings.TrimSpace(addr)}
}

func startServerAt(t *testing.T, dir, addr string, extra ...string) *server {
	t.Helper()
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	p := start(t, []string{"RAMPART_READY_FILE=" + ready}, append([]string{"server", "--data", dir, "--listen", addr, "--trust-domain", "example.org"}, extra...)...)
	waitFile(t, p, ready)
	return &server{proc: p, dir: dir, addr: addr}
}

func waitFile(t *testing.T, p *proc, path string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		select {
		case <-p.done:
			t.Fatalf("process exited before it was ready:\n%s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not appear within 30s:\n%s", path, p.out.String())
	return ""
}

// adminEnv is the environment for admin CLI calls against s.
func (s *server) adminEnv() []string {
	return []string{"RAMPART_SERVER=" + s.addr, "RAMPART_ADMIN_TOKEN_FILE=" + filepath.Join(s.dir, "admin.token"),
		"RAMPART_CA_BUNDLE=" + filepath.Join(s.dir, "bundle.pem")}
}

// adminHTTP is an HTTPS client that trusts s and s's admin token.
func adminHTTP(t *testing.T, s *server) (*http.Client, string) {
	t.Helper()
	pemb, err := os.ReadFile(filepath.Join(s.dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemb)
	tok, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, strings.TrimSpace(string(tok))
}

// cli runs a rampart command to completion.
func cli(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rampartBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("rampart %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, err := cli(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// agent is a running rampart agent.
type agent struct {
	*proc
	socket string
	dir    string
}

func startAgent(t *testing.T, s *server, dir, token string) *agent {
	t.Helper()
	var env []string
	if token != "" {
		// A file, as in production (the command line is readable by every local user).
		os.MkdirAll(dir, 0o700)
		f := filepath.Join(dir, "join-token")
		if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env = []string{"RAMPART_JOIN_TOKEN_FILE=" + f}
	}
	return startAgentWith(t, s, dir, env)
}

// startAgentWith starts an agent with extra environment.
func startAgentWith(t *testing.T, s *server, dir string, env []string) *agent {
	t.Helper()
	socket := filepath.Join(dir, "workload.sock")
	args := []string{"agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", socket, "--data", filepath.Join(dir, "data")}
	p := start(t, env, args...)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(socket); err == nil {
			return &agent{proc: p, socket: socket, dir: dir}
		}
		select {
		case <-p.done:
			t.Fatalf("agent exited:\n%s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("agent socket did not appear:\n%s", p.out.String())
	return nil
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
}
