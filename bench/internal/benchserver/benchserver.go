// Package benchserver starts a real "rampart server" process for the
// end-to-end benchmarks and gives them an admin client that trusts it.
package benchserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

// Server is a running server process.
type Server struct {
	Addr    string      // host:port of its API
	DataDir string      // its data directory
	TLS     *tls.Config // trusts its bundle; TLS 1.3
	Admin   *api.Client // authenticated with its admin token
	cmd     *exec.Cmd
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

// Stop interrupts the server and waits for it to exit.
func (s *Server) Stop() {
	s.cmd.Process.Signal(os.Interrupt)
	s.cmd.Wait()
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

// WorkloadCert enrols an agent named agent and returns a TLS certificate
// holding an SVID for id issued through it, as a real workload would get
// one from its agent.
func (s *Server) WorkloadCert(ctx context.Context, agent, id string) (*tls.Certificate, error) {
	var jt api.CreateJoinTokenResponse
	if err := s.Admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: agent}, &jt); err != nil {
		return nil, err
	}
	akey, acsr := csr("")
	var att api.AttestResponse
	anon := &api.Client{BaseURL: s.Admin.BaseURL, HTTP: s.Admin.HTTP}
	if err := anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: jt.Token, CSR: acsr}, &att); err != nil {
		return nil, err
	}
	cfg := s.TLS.Clone()
	cfg.Certificates = []tls.Certificate{{Certificate: att.SVID.Chain, PrivateKey: akey}}
	agentClient := &api.Client{BaseURL: s.Admin.BaseURL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
	var e api.Entry
	if err := s.Admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: jt.AgentID, Selectors: []string{"unix:uid:4242"}}, &e); err != nil {
		return nil, err
	}
	wkey, wcsr := csr(id)
	var sr api.SignResponse
	if err := agentClient.Do(ctx, http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: []api.SignItem{{EntryID: e.ID, CSR: wcsr}}}, &sr); err != nil {
		return nil, err
	}
	if len(sr.Results) != 1 || sr.Results[0].SVID == nil {
		return nil, fmt.Errorf("no SVID issued for %s: %+v", id, sr.Results)
	}
	return &tls.Certificate{Certificate: sr.Results[0].SVID.Chain, PrivateKey: wkey}, nil
}

func csr(id string) (*ecdsa.PrivateKey, []byte) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{}
	if id != "" {
		u, _ := url.Parse(id)
		tmpl.URIs = []*url.URL{u}
	}
	der, _ := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	return k, der
}
