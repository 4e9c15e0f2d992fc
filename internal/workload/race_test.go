package workload

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/selector"
)

// raceServer serves snap on a socket the helpers can reach and returns the
// socket and a channel signalled once each accepted connection has been
// taken in by the server.
func raceServer(t *testing.T, dir string, snap *Snapshot) (string, <-chan struct{}, *syncBuf) {
	t.Helper()
	sock := filepath.Join(dir, "sock", "api.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	sig := &acceptSignal{Listener: ln, accepted: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	go func() {
		NewServer(&staticSource{snap: snap, changed: make(chan struct{})}, Attestor{}, log, nil).Serve(ctx, sig)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sock, sig.accepted, logs
}

// syncBuf is a buffer the server logs into while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runConnector starts bin as a helper that connects, waits until the
// server has accepted the connection, gives the order, and returns what
// the helper (and anything it started) printed.
func runConnector(t *testing.T, bin, next, sock string, accepted <-chan struct{}, order string) string {
	t.Helper()
	return runConnectorCmd(t, helperCmd(bin, "connect", "RAMPART_WL_SOCK="+sock, "RAMPART_WL_NEXT="+next), accepted, order)
}

// runConnectorCmd is runConnector for a prepared command.
func runConnectorCmd(t *testing.T, cmd *exec.Cmd, accepted <-chan struct{}, order string) string {
	t.Helper()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	line, _ := r.ReadString('\n')
	if strings.TrimSpace(line) != "connected" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not connect: %q", line)
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the server did not accept the helper's connection")
	}
	io.WriteString(stdin, order+"\n")
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	return strings.TrimSpace(string(rest))
}

func helperUIDSel() selector.Selector {
	return selector.Selector{Type: selector.UnixUID, Value: strconv.Itoa(helperUID())}
}

// A process connects running one program, then execs another before it
// asks: the path selector must name the program that connected, not the
// one that happens to run when the agent looks. (In the real attack the
// connecting process forks first, the child keeps the connection and the
// parent execs the binary the entry names; what the agent sees is the
// same: the executable changed after connect.)
func TestAttestationRefusesExecAfterConnect(t *testing.T) {
	dir := sharedDir(t)
	attacker := copyTestBinary(t, dir, "attacker")
	legit := copyTestBinary(t, dir, "payments")
	snap := snapshotFor(t, helperUIDSel(), selector.Selector{Type: selector.UnixPath, Value: legit})
	sock, accepted, logs := raceServer(t, dir, snap)

	// Control: the legitimate program, connecting and asking itself, is served.
	if out := runConnector(t, legit, "", sock, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("the legitimate program was not served: %q", out)
	}
	// Attack: connect as attacker, exec payments, ask on the same connection.
	out := runConnector(t, attacker, legit, sock, accepted, "exec")
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a process that exec'd another program after connecting got: %q", out)
	}
	if want := "it ran " + attacker + " when it connected and runs " + legit + " now"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
}

// A process connects, hands the connection to a child and exits: its PID
// no longer names the caller (it may be reused by any process), so nothing
// read from /proc may be trusted, not even for an entry that selects only
// by uid.
func TestAttestationRefusesCallerThatExited(t *testing.T) {
	dir := sharedDir(t)
	bin := copyTestBinary(t, dir, "connector")
	sock, accepted, logs := raceServer(t, dir, snapshotFor(t, helperUIDSel()))

	if out := runConnector(t, bin, "", sock, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("the caller itself was not served: %q", out)
	}
	out := runConnector(t, bin, bin, sock, accepted, "handoff")
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a connection whose caller exited was served: %q", out)
	}
	if want := "the process that connected has exited"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
}

// A root process connects, then drops to uid 65534 (as a daemon does
// before running less trusted code) and asks: SO_PEERCRED still says
// root, but the process asking is no longer root, so it is refused.
func TestAttestationRefusesCredentialChange(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to connect as root and drop to uid 65534")
	}
	dir := sharedDir(t)
	bin := copyTestBinary(t, dir, "daemon")
	sock, accepted, logs := raceServer(t, dir, snapshotFor(t, selector.Selector{Type: selector.UnixUID, Value: "0"}))
	asRoot := func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "RAMPART_WL_HELPER=connect", "RAMPART_WL_SOCK="+sock)
		return cmd
	}
	if out := runConnectorCmd(t, asRoot(), accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("root itself was not served: %q", out)
	}
	out := runConnectorCmd(t, asRoot(), accepted, "setuid")
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a process that dropped to uid 65534 after connecting as root got: %q", out)
	}
	if want := "it connected as uid 0 gid 0 and now runs as uid 65534 gid 65534"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
}
