package nodeattesttest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// SWTPM starts a software TPM 2.0 (Debian's swtpm) on a loopback port,
// its state in a temporary directory, and returns its address
// (HOST:PORT); it is stopped when the test ends. Without swtpm the test
// is skipped, unless CI is set: CI installs it (.ci/run).
func SWTPM(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is not installed (apt-get install swtpm); CI must run the TPM tests")
		}
		t.Skip("swtpm is not installed (apt-get install swtpm swtpm-tools)")
	}
	ports := make([]int, 2)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+t.TempDir(),
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[0]),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[1]),
		"--flags", "not-need-init,startup-clear")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close() // swtpm serves one connection at a time
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
