package workload

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// The test binary doubles as the programs the attacks need: started with
// RAMPART_WL_HELPER set, it runs one of the helpers below instead of the
// tests. Copies of it at other paths are "other executables" for the
// attestor: same code, another file.
func TestMain(m *testing.M) {
	if mode := os.Getenv("RAMPART_WL_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

func helperMain(mode string) int {
	switch mode {
	case "connect":
		return helperConnect()
	case "speak":
		fd, _ := strconv.Atoi(os.Getenv("RAMPART_WL_FD"))
		return speak(fd)
	case "plant":
		// Another user's fake socket, listening until stdin closes.
		ln, err := net.Listen("unix", os.Getenv("RAMPART_WL_SOCK"))
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		defer ln.Close()
		fmt.Println("listening")
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "hold":
		// Open RAMPART_WL_CONNS connections and hold them until stdin
		// closes: a local user flooding the agent.
		n, _ := strconv.Atoi(os.Getenv("RAMPART_WL_CONNS"))
		var held []net.Conn
		for range n {
			c, err := net.Dial("unix", os.Getenv("RAMPART_WL_SOCK"))
			if err != nil {
				fmt.Println("dial:", err)
				return 1
			}
			held = append(held, c)
		}
		fmt.Println("holding", len(held))
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "sds":
		return sdsHelper()
	case "speak-after-parent":
		// fd 3 is the Workload API connection, fd 4 a pipe whose write end
		// only the parent held: EOF means the parent has exited.
		io.Copy(io.Discard, os.NewFile(4, "parent"))
		return speak(3)
	}
	fmt.Println("unknown helper mode", mode)
	return 2
}

// helperConnect connects to the Workload API socket on an inheritable file
// descriptor, says so, and waits for an order on standard input:
//
//	speak      ask for an SVID itself
//	exec       exec RAMPART_WL_NEXT, which asks on the inherited connection
//	handoff    start RAMPART_WL_NEXT with the connection, then exit; the
//	           child asks once this process is gone
func helperConnect() int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0) // no CLOEXEC: exec keeps it
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: os.Getenv("RAMPART_WL_SOCK")})
	}
	if err != nil {
		fmt.Println("connect:", err)
		return 1
	}
	fmt.Println("connected")
	order, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	next := os.Getenv("RAMPART_WL_NEXT")
	switch strings.TrimSpace(order) {
	case "speak":
		return speak(fd)
	case "setuid":
		// Drop to uid and gid 65534, as a root daemon does before running
		// less trusted code, then ask on the connection made as root.
		if err := syscall.Setgid(65534); err != nil {
			fmt.Println("setgid:", err)
			return 1
		}
		if err := syscall.Setuid(65534); err != nil {
			fmt.Println("setuid:", err)
			return 1
		}
		return speak(fd)
	case "exec":
		env := append(helperEnv(), "RAMPART_WL_HELPER=speak", "RAMPART_WL_FD="+strconv.Itoa(fd))
		err := syscall.Exec(next, []string{next}, env)
		fmt.Println("exec:", err)
		return 1
	case "handoff":
		r, w, err := os.Pipe()
		if err != nil {
			fmt.Println(err)
			return 1
		}
		child := exec.Command(next)
		child.Env = append(helperEnv(), "RAMPART_WL_HELPER=speak-after-parent")
		child.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "conn"), r}
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Println(err)
			return 1
		}
		_ = w // held until this process exits
		return 0
	}
	fmt.Println("unknown order", order)
	return 2
}

// helperEnv is the environment without this helper's mode, for the next.
func helperEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RAMPART_WL_HELPER=") {
			env = append(env, kv)
		}
	}
	return env
}

// speak asks for X.509-SVIDs with go-spiffe's client over the connection
// on fd, and prints "granted ID" or "refused CODE".
func speak(fd int) int {
	conn, err := net.FileConn(os.NewFile(uintptr(fd), "conn"))
	if err != nil {
		fmt.Println("fileconn:", err)
		return 1
	}
	used := false
	dial := func(context.Context, string) (net.Conn, error) {
		if used {
			return nil, io.EOF
		}
		used = true
		return conn, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix:///inherited"), workloadapi.WithDialOptions(grpc.WithContextDialer(dial)))
	if err != nil {
		fmt.Println("client:", err)
		return 1
	}
	defer c.Close()
	svids, err := c.FetchX509SVIDs(ctx)
	if err != nil {
		fmt.Println("refused", status.Code(err), status.Convert(err).Message())
		return 0
	}
	fmt.Println("granted", svids[0].ID)
	return 0
}

// helperUID is the uid the helpers run as: a second, unprivileged account
// when the tests run as root, else the test's own.
func helperUID() int {
	if os.Getuid() == 0 {
		return 65534
	}
	return os.Getuid()
}

// sharedDir returns a fresh directory that helpers running as helperUID
// can reach (t.TempDir is 0700).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rampart-wl-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyTestBinary copies this test binary to dir/name: another executable,
// as far as the attestor can tell.
func copyTestBinary(t *testing.T, dir, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// helperCmd prepares bin in helper mode as helperUID.
func helperCmd(bin, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), append([]string{"RAMPART_WL_HELPER=" + mode}, env...)...)
	if os.Getuid() != helperUID() {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(helperUID()), Gid: uint32(helperUID())}}
	}
	return cmd
}

// runAs runs name with args as helperUID (a second local account: the
// attacker) and fails the test if it fails.
func runAs(t *testing.T, name string, args ...string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v as uid 65534: %v: %s", name, args, err, out)
	}
}

// plantSocket has uid 65534 listen on path until the test ends.
func plantSocket(t *testing.T, path string) {
	t.Helper()
	bin := copyTestBinary(t, sharedDir(t), "planter")
	cmd := helperCmd(bin, "plant", "RAMPART_WL_SOCK="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "listening" {
		t.Fatalf("planting a socket as uid 65534: %q", line)
	}
}

// acceptSignal wraps a listener and reports each Accept after the first:
// by then the server has finished with the connection accepted before.
type acceptSignal struct {
	net.Listener
	calls    int
	accepted chan struct{}
}

func (l *acceptSignal) Accept() (net.Conn, error) {
	if l.calls++; l.calls > 1 {
		select {
		case l.accepted <- struct{}{}:
		default:
		}
	}
	return l.Listener.Accept()
}
