package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestCheckOutboundListen(t *testing.T) {
	for _, tc := range []struct {
		listen      string
		allowRemote bool
		want        string // "" allowed; else part of the error
	}{
		{"127.0.0.1:7001", false, ""},
		{"127.0.0.2:0", false, ""},
		{"[::1]:7001", false, ""},
		{"localhost:7001", false, ""},
		{"unix:/run/rampart/orders/payments.sock", false, ""},
		{"0.0.0.0:7001", false, "0.0.0.0 is not a loopback address"},
		{":7001", false, "no host listens on every interface"},
		{"[::]:7001", false, ":: is not a loopback address"},
		{"10.1.2.3:7001", false, "10.1.2.3 is not a loopback address"},
		{"[::ffff:10.1.2.3]:7001", false, "not a loopback address"},
		{"payments.internal:7001", false, "a host name other than localhost"},
		{"unix:relative.sock", false, "absolute"},
		{"unix:/run/../tmp/x.sock", false, "clean"},
		{"0.0.0.0:7001", true, ""},
		{"payments.internal:7001", true, ""},
	} {
		err := checkOutboundListen(tc.listen, OutboundAccess{AllowRemote: tc.allowRemote})
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s (allow remote %v): got %v, want %q", tc.listen, tc.allowRemote, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "--outbound-allow-remote") && strings.Contains(tc.want, "loopback") {
			t.Errorf("%s: the refusal does not say how to allow it: %v", tc.listen, err)
		}
	}
}

// An outbound listener lends this service's identity to whoever reaches
// it: the proxy refuses to start one on every interface (before this, it
// listened there, an open relay to its upstreams).
func TestOutboundBeyondLoopbackRefused(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/payments")
	for _, listen := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		err := Run(context.Background(), Config{WorkloadSocket: filepath.Join(t.TempDir(), "none.sock"),
			Outbounds: []Outbound{{Listen: listen, Upstream: "127.0.0.1:9", ID: id}}})
		if err == nil || !strings.Contains(err.Error(), "open relay") {
			t.Fatalf("outbound on %s: %v, want a refusal naming the open relay", listen, err)
		}
	}
}

// unixOutbound listens like an outbound on a unix socket, answering 200 to
// whoever it accepts.
func unixOutbound(t *testing.T, path string, acc OutboundAccess) *metrics {
	t.Helper()
	m := newMetrics(prometheus.NewRegistry())
	ln, err := listenOutbound(Outbound{Listen: unixPrefix + path}, acc, m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "relayed") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return m
}

// callAs connects to the unix socket at path from a child process running
// as uid (and gid) and reports what it got: "200", or the error.
func callAs(t *testing.T, path string, uid int) string {
	t.Helper()
	// The child is this test binary, copied where another uid may run it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "rampart-uid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "caller.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestUnixCallerChild$")
	cmd.Env = []string{"RAMPART_UNIX_CALLER=" + path}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	for line := range strings.SplitSeq(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "CALLER: "); ok {
			return r
		}
	}
	t.Fatalf("child as uid %d: %v\n%s", uid, err, out)
	return ""
}

// TestUnixCallerChild is the child of callAs (it does nothing otherwise).
func TestUnixCallerChild(t *testing.T) {
	path := os.Getenv("RAMPART_UNIX_CALLER")
	if path == "" {
		t.Skip("run by callAs")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Printf("CALLER: dial: %v\n", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: payments\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		fmt.Printf("CALLER: read: %v\n", err)
		return
	}
	fmt.Printf("CALLER: %d\n", resp.StatusCode)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a caller as another uid")
	}
}

// A unix-socket outbound is for the uids it names: another local user's
// process is refused, by the socket's mode when it is the proxy's own uid
// alone, and by its peer credentials (SO_PEERCRED) when the socket's group
// lets it connect. The allowed uid is served.
func TestUnixOutboundRefusesOtherUIDs(t *testing.T) {
	needRoot(t)
	const nobody = 65534
	base, err := os.MkdirTemp("", "rampart-out")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)

	t.Run("own uid only: mode 0600", func(t *testing.T) {
		path := filepath.Join(base, "own", "payments.sock")
		unixOutbound(t, path, OutboundAccess{SocketGroup: -1})
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		if d, _ := os.Stat(filepath.Dir(path)); d.Mode().Perm() != 0o700 {
			t.Fatalf("socket directory mode %v, want 0700", d.Mode().Perm())
		}
		if got := callAs(t, path, os.Geteuid()); got != "200" {
			t.Fatalf("the proxy's own uid: %s, want 200", got)
		}
		if got := callAs(t, path, nobody); got == "200" {
			t.Fatal("uid 65534 was relayed")
		}
	})
	t.Run("another uid allowed: the others refused by uid", func(t *testing.T) {
		path := filepath.Join(base, "group", "payments.sock")
		// The socket's group admits nobody's group, so only the uid check
		// stands between nobody and the relay.
		m := unixOutbound(t, path, OutboundAccess{UIDs: []int{0, 1234}, SocketGroup: nobody})
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != nobody {
			t.Fatalf("socket mode %v group %d (%v), want 0660 and group %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, err, nobody)
		}
		if got := callAs(t, path, nobody); got == "200" {
			t.Fatal("uid 65534, not allowed, was relayed")
		} else if strings.Contains(got, "permission denied") {
			t.Fatalf("uid 65534 stopped by the file mode (%s): the uid check was not reached", got)
		}
		if got := testutil.ToFloat64(m.outboundRefused.WithLabelValues(unixPrefix + path)); got != 1 {
			t.Fatalf("refused callers counted: %v, want 1", got)
		}
		if got := callAs(t, path, 0); got != "200" {
			t.Fatalf("allowed uid 0: %s, want 200", got)
		}
	})
	t.Run("a directory others can write to is refused", func(t *testing.T) {
		dir := filepath.Join(base, "shared")
		os.Mkdir(dir, 0o777)
		os.Chmod(dir, 0o777)
		_, err := listenOutbound(Outbound{Listen: unixPrefix + filepath.Join(dir, "p.sock")}, OutboundAccess{SocketGroup: -1}, newMetrics(nil), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a directory of another user is refused", func(t *testing.T) {
		dir := filepath.Join(base, "theirs")
		os.Mkdir(dir, 0o700)
		os.Chown(dir, nobody, nobody)
		_, err := listenOutbound(Outbound{Listen: unixPrefix + filepath.Join(dir, "p.sock")}, OutboundAccess{SocketGroup: -1}, newMetrics(nil), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "the outbound socket directory "+dir+" is owned by uid 65534") {
			t.Fatalf("got %v", err)
		}
	})
	// Its parent is another user's: they could move the directory away
	// and put theirs, with their own socket, in its place.
	t.Run("a directory under another user's is refused", func(t *testing.T) {
		theirs := filepath.Join(base, "theirs-parent")
		os.Mkdir(theirs, 0o755)
		os.Chown(theirs, nobody, nobody)
		dir := filepath.Join(theirs, "ours")
		os.Mkdir(dir, 0o700)
		_, err := listenOutbound(Outbound{Listen: unixPrefix + filepath.Join(dir, "p.sock")}, OutboundAccess{SocketGroup: -1}, newMetrics(nil), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), theirs+", a parent of "+dir+", is owned by uid 65534") {
			t.Fatalf("got %v", err)
		}
	})
}
