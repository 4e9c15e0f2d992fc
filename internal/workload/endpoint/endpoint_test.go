package endpoint

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Started with RAMPART_ENDPOINT_HELPER=listen, the test binary listens on
// RAMPART_ENDPOINT_SOCK (as whichever uid started it) until stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv("RAMPART_ENDPOINT_HELPER") == "listen" {
		ln, err := net.Listen("unix", os.Getenv("RAMPART_ENDPOINT_SOCK"))
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		os.Chmod(ln.Addr().String(), 0o777)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go io.Copy(io.Discard, c)
			}
		}()
		fmt.Println("listening")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// otherUsersSocket returns a sticky, world-writable directory (like /tmp), and in
// it a directory uid 65534 created, with a socket uid 65534 serves.
func otherUsersSocket(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-endpoint")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	os.Chmod(tmp, os.ModeSticky|0o777)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	dir := filepath.Join(tmp, "rampart-agent")
	mk := exec.Command("/bin/mkdir", "-m", "0755", dir)
	mk.SysProcAttr = nobody
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	sock := filepath.Join(dir, SocketName)
	listenAsNobody(t, sock)
	return sock
}

// listenAsNobody has uid 65534 listen on sock until the test ends.
func listenAsNobody(t *testing.T, sock string) {
	t.Helper()
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	self, _ := os.Executable()
	b, _ := os.ReadFile(self)
	f, err := os.CreateTemp(filepath.Dir(filepath.Dir(sock)), "listener")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Chmod(0o755)
	f.Close()
	cmd := exec.Command(f.Name())
	cmd.Env = append(os.Environ(), "RAMPART_ENDPOINT_HELPER=listen", "RAMPART_ENDPOINT_SOCK="+sock)
	cmd.SysProcAttr = nobody
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "listening" {
		t.Fatalf("listener as uid 65534: %q", line)
	}
}

// The check is on every connection, not only the first: a client that
// started before anything listened (it waits for the agent) still refuses
// the impostor who shows up.
func TestEveryConnectionIsChecked(t *testing.T) {
	sock := otherUsersSocket(t)
	os.Remove(sock) // the impostor's socket is gone for now...
	root := uint32(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts, err := ClientOptions(ctx, sock, &root)
	if err != nil {
		t.Fatalf("nothing listening yet should be waited for: %v", err)
	}
	listenAsNobody(t, sock) // ...and back
	c, cc := context.WithTimeout(ctx, 2*time.Second)
	defer cc()
	_, err = workloadapi.FetchX509SVID(c, opts...)
	if err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Fatalf("a later connection to uid 65534's socket: %v", err)
	}
}

// A socket another user serves is refused, by default (its directory is
// theirs) and when the agent's uid is given (the peer is not it).
func TestDialRefusesAnotherUsersServer(t *testing.T) {
	sock := otherUsersSocket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := ClientOptions(ctx, "unix://"+sock, nil)
	if !errors.Is(err, ErrForeignDir) || !strings.Contains(err.Error(), "owned by uid 65534, neither root nor you") {
		t.Fatalf("default: %v", err)
	}
	root := uint32(0)
	_, err = ClientOptions(ctx, sock, &root)
	if !errors.Is(err, ErrWrongServer) || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Fatalf("expecting root: %v", err)
	}
	// Trusting uid 65534 explicitly is the operator's call, and works.
	nobody := uint32(65534)
	if _, err := ClientOptions(ctx, sock, &nobody); err != nil {
		t.Fatalf("expecting uid 65534: %v", err)
	}
}

// A socket served by the caller's own uid in a directory it owns is
// accepted by default (a user agent).
func TestDialAcceptsOwnServer(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ClientOptions(ctx, "unix://"+sock, nil); err != nil {
		t.Fatal(err)
	}
	other := uint32(os.Geteuid() + 1)
	if _, err := ClientOptions(ctx, sock, &other); !errors.Is(err, ErrWrongServer) {
		t.Fatalf("expecting uid %d: %v", other, err)
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{"/run/rampart/workload.sock", "/run/rampart/workload.sock", ""},
		{"unix:///run/rampart/workload.sock", "/run/rampart/workload.sock", ""},
		{"unix:/run/rampart/workload.sock", "/run/rampart/workload.sock", ""},
		{"tcp://127.0.0.1:8081", "", "absolute unix socket path"},
		{"unix:relative.sock", "", "absolute unix socket path"},
		{"", "", "absolute unix socket path"},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseAddr(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDefaultPaths(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if p, _ := AgentPath(0, env(nil)); p != "/run/rampart/workload.sock" {
		t.Errorf("root agent: %s", p)
	}
	if p, _ := AgentPath(1000, env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"})); p != "/run/user/1000/rampart/workload.sock" {
		t.Errorf("user agent: %s", p)
	}
	if _, err := AgentPath(1000, env(nil)); err == nil || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
		t.Errorf("user agent without XDG_RUNTIME_DIR: %v", err)
	}
	rt := t.TempDir()
	if p := ClientPath(1000, env(map[string]string{"XDG_RUNTIME_DIR": rt})); p != "/run/rampart/workload.sock" {
		t.Errorf("user client, no user agent: %s", p)
	}
	os.Mkdir(filepath.Join(rt, "rampart"), 0o755)
	ln, err := net.Listen("unix", filepath.Join(rt, "rampart", SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if p := ClientPath(1000, env(map[string]string{"XDG_RUNTIME_DIR": rt})); p != filepath.Join(rt, "rampart", SocketName) {
		t.Errorf("user client with its own agent: %s", p)
	}
	if p := ClientPath(0, env(map[string]string{"XDG_RUNTIME_DIR": rt})); p != "/run/rampart/workload.sock" {
		t.Errorf("root client: %s", p)
	}
}
