// Package benchserver starts a real "rampart server" process for the
// end-to-end benchmarks and gives them an admin client that trusts it.
package benchserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/enroltest"
)

// Server is a running server process.
type Server struct {
	Addr    string      // host:port of its API
	DataDir string      // its data directory
	TLS     *tls.Config // trusts its bundle; TLS 1.3
	Admin   *api.Client // authenticated with its admin token
	cmd     *exec.Cmd
	tmp     string // removed by Stop (StartTemp)
}

// Start runs bin as a server with its data in dir/server on a free
// loopback port (plus extra flags) and waits until it is ready.
func Start(ctx context.Context, bin, dir string, extra ...string) (*Server, error) {
	data := filepath.Join(dir, "server")
	ready := filepath.Join(dir, "ready")
	args := append([]string{"server", "--data", data, "--listen", "127.0.0.1:0", "--trust-domain", "example.org", "--log-level", "warn"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "RAMPART_READY_FILE="+ready)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{DataDir: data, cmd: cmd}
	addr, err := WaitFile(ready)
	if err != nil {
		s.Stop()
		return nil, err
	}
	tok, _ := os.ReadFile(filepath.Join(data, "admin.token"))
	pem, _ := os.ReadFile(filepath.Join(data, "bundle.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	s.Addr = addr
	s.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	s.Admin = &api.Client{BaseURL: "https://" + addr, AdminToken: strings.TrimSpace(string(tok)),
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLS}}}
	return s, nil
}

// StartTemp is Start in a new temporary directory, which Stop removes.
func StartTemp(ctx context.Context, bin string, extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "rampart-bench")
	if err != nil {
		return nil, err
	}
	s, err := Start(ctx, bin, dir, extra...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.tmp = dir
	return s, nil
}

// Stop interrupts the server and waits for it to exit.
func (s *Server) Stop() {
	s.cmd.Process.Signal(os.Interrupt)
	s.cmd.Wait()
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
}

// WaitFile waits up to 30 s for a non-empty file and returns its content.
func WaitFile(path string) (string, error) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", fmt.Errorf("%s did not appear within 30s", path)
}

// WorkloadCert returns a TLS certificate holding an SVID for id, issued
// through an agent named agent (see enroltest.Workload).
func (s *Server) WorkloadCert(ctx context.Context, agent, id string) (*tls.Certificate, error) {
	return enroltest.Workload(ctx, s.Admin, s.TLS, agent, id)
}

// PID is the server process's id (to read its memory in /proc).
func (s *Server) PID() int { return s.cmd.Process.Pid }
