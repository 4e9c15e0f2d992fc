package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	"github.com/rampartsec/rampart/sdk"
)

// Attacks from a second local account (uid 65534) on the host's trust
// boundaries: the Workload API socket and the secrets the commands take.

const impostorID = "spiffe://example.org/payments"

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
}

// e2eHelper runs the programs the attacks need, from a copy of this test
// binary started with RAMPART_E2E_HELPER set.
func e2eHelper(mode string) int {
	switch mode {
	case "fake-workload-api":
		return fakeWorkloadAPI(os.Getenv("RAMPART_E2E_SOCK"))
	case "tcp-listen":
		return tcpListen(os.Getenv("RAMPART_E2E_ADDR"))
	case "tcp-dial":
		return tcpDial(os.Getenv("RAMPART_E2E_ADDR"))
	}
	fmt.Println("unknown helper", mode)
	return 2
}

// fakeWorkloadAPI is what the attacker serves: a Workload API that hands
// every caller an SVID for impostorID and a bundle of the attacker's own.
func fakeWorkloadAPI(sock string) int {
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse(impostorID)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org"}}}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rt, rt, rk.Public(), rk)
	root, _ := x509.ParseCertificate(rootDER)
	lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id}, BasicConstraintsValid: true}
	leafDER, _ := x509.CreateCertificate(rand.Reader, lt, root, lk.Public(), rk)
	key, _ := x509.MarshalPKCS8PrivateKey(lk)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	os.Chmod(sock, 0o777)
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, &fakeAPI{resp: &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: impostorID, X509Svid: leafDER, X509SvidKey: key, Bundle: rootDER}}}})
	fmt.Println("serving")
	go func() { io.Copy(io.Discard, os.Stdin); gs.Stop() }()
	gs.Serve(ln)
	return 0
}

type fakeAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	resp *workload.X509SVIDResponse
}

func (f *fakeAPI) FetchX509SVID(_ *workload.X509SVIDRequest, s grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := s.Send(f.resp); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// stickyTmp returns a directory like /tmp (world-writable, sticky) where
// the second user can create what it wants.
func stickyTmp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rampart-e2e-tmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func asNobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// attackerDir is what the second user does after a reboot emptied /tmp:
// create the directory the agent's socket used to live in.
func attackerDir(t *testing.T, tmp string) string {
	t.Helper()
	dir := filepath.Join(tmp, "rampart-agent")
	if out, err := asNobody(exec.Command("/bin/mkdir", "-m", "0755", dir)).CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	return dir
}

// startImpostor serves the fake Workload API at sock as uid 65534.
func startImpostor(t *testing.T, sock string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(sock), "impostor")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := asNobody(exec.Command(bin))
	cmd.Env = append(os.Environ(), "RAMPART_E2E_HELPER=fake-workload-api", "RAMPART_E2E_SOCK="+sock)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "serving" {
		t.Fatalf("impostor did not start: %q", line)
	}
}

// waitExit waits for p to exit and returns its output; a process still
// running after d is the failure the caller names.
func waitExit(t *testing.T, p *proc, d time.Duration, what string) string {
	t.Helper()
	select {
	case <-p.done:
		return p.out.String()
	case <-time.After(d):
		t.Fatalf("%s: still running after %v:\n%s", what, d, p.out.String())
		return ""
	}
}

// Another user serves a fake Workload API where the socket used to be:
// svid fetch, the proxy and the SDK must refuse it, because it is not
// served by the agent's uid (SO_PEERCRED), whatever it hands out.
func TestWorkloadAPIImpostorRefused(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(attackerDir(t, stickyTmp(t)), "workload.sock")
	startImpostor(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The impostor works: a client that checks nothing takes its SVID.
	c, cc := context.WithTimeout(ctx, 5*time.Second)
	got, err := workloadapi.FetchX509SVID(c, workloadapi.WithAddr("unix://"+sock))
	cc()
	if err != nil || got.ID.String() != impostorID {
		t.Fatalf("the fake Workload API does not serve: %v", err)
	}

	out, err := cli(t, nil, "svid", "fetch", "--socket", sock, "--timeout", "5s")
	if err == nil || !strings.Contains(out, "owned by uid 65534") {
		t.Fatalf("svid fetch trusted a socket served by uid 65534: %v\n%s", err, out)
	}
	// Naming the agent's uid does not help the impostor either.
	out, err = cli(t, nil, "svid", "fetch", "--socket", sock, "--agent-uid", "0", "--timeout", "5s")
	if err == nil || !strings.Contains(out, "served by uid 65534") {
		t.Fatalf("svid fetch --agent-uid 0 trusted a socket served by uid 65534: %v\n%s", err, out)
	}

	ready := filepath.Join(t.TempDir(), "ready")
	p := start(t, []string{"RAMPART_READY_FILE=" + ready}, "proxy", "--socket", sock, "--server", "",
		"--outbound", "127.0.0.1:0=127.0.0.1:9,spiffe://example.org/orders")
	if out := waitExit(t, p, 30*time.Second, "proxy on an impostor's socket"); !strings.Contains(out, "uid 65534") {
		t.Fatalf("proxy did not say who served the socket:\n%s", out)
	}
	if _, err := os.Stat(ready); err == nil {
		t.Fatal("the proxy served with the impostor's SVID")
	}

	c, cc = context.WithTimeout(ctx, 10*time.Second)
	src, err := sdk.New(c, sdk.WithSocket(sock))
	cc()
	if err == nil {
		src.Close()
		t.Fatalf("the SDK took the impostor's SVID %s", src.ID())
	}
	if !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("SDK error does not say who served the socket: %v", err)
	}
	c, cc = context.WithTimeout(ctx, 10*time.Second)
	src, err = sdk.New(c, sdk.WithSocket(sock), sdk.WithAgentUID(0))
	cc()
	if err == nil {
		src.Close()
		t.Fatalf("the SDK with WithAgentUID(0) took the impostor's SVID %s", src.ID())
	}
	if !strings.Contains(err.Error(), "served by uid 65534") {
		t.Fatalf("SDK error does not say who served the socket: %v", err)
	}
}

// The second user created the socket's directory before the agent started:
// the agent refuses to start, and says why, before spending its join token.
func TestAgentRefusesSocketDirectoryOfAnotherUser(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	s := startServer(t, filepath.Join(root, "server"))
	tok := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	sock := filepath.Join(attackerDir(t, stickyTmp(t)), "workload.sock")
	p := start(t, []string{"RAMPART_JOIN_TOKEN=" + tok}, "agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", sock, "--data", filepath.Join(root, "agent"))
	out := waitExit(t, p, 30*time.Second, "agent in a directory uid 65534 owns")
	if !strings.Contains(out, "owned by uid 65534") {
		t.Fatalf("agent output does not say who owns the directory:\n%s", out)
	}
	// The join token was not spent: a well-placed agent can still use it.
	a := startAgentEnv(t, s, filepath.Join(root, "agent2"), tok)
	if _, err := os.Stat(a.socket); err != nil {
		t.Fatal(err)
	}
}

// startAgentEnv is startAgent with the join token in the environment.
func startAgentEnv(t *testing.T, s *server, dir, token string) *agent {
	t.Helper()
	return startAgentWith(t, s, dir, []string{"RAMPART_JOIN_TOKEN=" + token})
}

// Secrets never come from the command line, where every local user reads
// them in ps and /proc/PID/cmdline; files holding them must not be
// readable by group or others.
func TestSecretsNeverOnTheCommandLine(t *testing.T) {
	s := startServer(t, filepath.Join(t.TempDir(), "server"))
	tokb, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokb))
	base := []string{"RAMPART_SERVER=" + s.addr, "RAMPART_CA_BUNDLE=" + filepath.Join(s.dir, "bundle.pem")}
	exitCode := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return -1
	}

	out, err := cli(t, base, "entry", "list", "--admin-token", tok)
	if exitCode(err) != 2 || !strings.Contains(out, "RAMPART_ADMIN_TOKEN") || !strings.Contains(out, "--admin-token-file") {
		t.Fatalf("--admin-token on the command line: %v\n%s", err, out)
	}
	mustCLI(t, append(base, "RAMPART_ADMIN_TOKEN="+tok), "entry", "list")

	loose := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(loose, tokb, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	out, err = cli(t, append(base, "RAMPART_ADMIN_TOKEN_FILE="+loose), "entry", "list")
	if err == nil || !strings.Contains(out, "chmod 600") {
		t.Fatalf("an admin token file readable by others was used: %v\n%s", err, out)
	}

	agentArgs := []string{"agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", filepath.Join(t.TempDir(), "a", "workload.sock"), "--data", filepath.Join(t.TempDir(), "agent")}
	out, err = cli(t, nil, append(agentArgs, "--join-token", "rjt_secret")...)
	if exitCode(err) != 2 || !strings.Contains(out, "--join-token-file") || !strings.Contains(out, "RAMPART_JOIN_TOKEN") {
		t.Fatalf("--join-token on the command line: %v\n%s", err, out)
	}
	looseJoin := filepath.Join(t.TempDir(), "join-token")
	os.WriteFile(looseJoin, []byte("rjt_secret\n"), 0o644)
	os.Chmod(looseJoin, 0o644)
	out, err = cli(t, nil, append(agentArgs, "--join-token-file", looseJoin)...)
	if err == nil || !strings.Contains(out, "chmod 600") {
		t.Fatalf("a join token file readable by others was used: %v\n%s", err, out)
	}

	out, err = cli(t, nil, "server", "--data", filepath.Join(t.TempDir(), "pg"), "--trust-domain", "example.org",
		"--postgres", "postgres://postgres:hunter2@127.0.0.1:1/test")
	if exitCode(err) != 2 || !strings.Contains(out, "PGPASSFILE") {
		t.Fatalf("a PostgreSQL password on the command line: %v\n%s", err, out)
	}

	// What the other local user sees of a running agent: its command line,
	// without the join token; not its environment.
	if os.Getuid() != 0 {
		return
	}
	join := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	a := startAgentEnv(t, s, t.TempDir(), join)
	pid := fmt.Sprint(a.cmd.Process.Pid)
	cmdline, err := asNobody(exec.Command("/bin/cat", "/proc/"+pid+"/cmdline")).CombinedOutput()
	if err != nil || !strings.Contains(string(cmdline), "agent") {
		t.Fatalf("uid 65534 reading the agent's command line: %v %q", err, cmdline)
	}
	if strings.Contains(string(cmdline), join) {
		t.Fatal("the join token is in the agent's command line")
	}
	if environ, err := asNobody(exec.Command("/bin/cat", "/proc/"+pid+"/environ")).CombinedOutput(); err == nil || strings.Contains(string(environ), join) {
		t.Fatalf("uid 65534 read the agent's environment: %v", err)
	}
}
