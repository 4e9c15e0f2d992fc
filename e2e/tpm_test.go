package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/rampartsec/rampart/internal/nodeattest"
	"github.com/rampartsec/rampart/internal/nodeattest/nodeattesttest"
)

// ekHash reads the EK hash of the TPM at addr, as an operator would from
// the agent's log.
func ekHash(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := nodeattest.OpenTPM(transport.FromReadWriter(c))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return nodeattest.EKHash(m.EKPublic())
}

// TPM attestation with real processes against swtpm: a server that
// allows the TPM's EK, an agent attesting with it, a workload served.
// Then an agent whose TPM the server does not know is refused.
func TestTPMNodeAttestation(t *testing.T) {
	tpmAddr := nodeattesttest.SWTPM(t)
	hash := ekHash(t, tpmAddr)
	root := t.TempDir()
	s := startServer(t, filepath.Join(root, "server"), "--node-attest-tpm-ek-hash", hash)
	agentID := "spiffe://example.org/rampart/agent/tpm-" + hash[:40]
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders",
		"--parent", agentID, "--selector", myUID())

	dir := filepath.Join(root, "agent")
	os.MkdirAll(dir, 0o700)
	socket := filepath.Join(dir, "workload.sock")
	p := start(t, nil, "agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", socket, "--data", filepath.Join(dir, "data"), "--attest=tpm", "--tpm", "tcp:"+tpmAddr)
	eventually(t, 30*time.Second, "the tpm agent's socket", func() error {
		select {
		case <-p.done:
			t.Fatalf("agent exited:\n%s", p.out.String())
		default:
		}
		_, err := os.Stat(socket)
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sv, err := x509Source(t, ctx, &agent{proc: p, socket: socket, dir: dir}).GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if sv.ID.String() != "spiffe://example.org/orders" {
		t.Fatalf("got %s", sv.ID)
	}
	if !strings.Contains(p.out.String(), hash) {
		t.Fatalf("the agent did not log its EK hash:\n%s", p.out.String())
	}
	p.stop()

	// Attack: a TPM the server was not told about (its EK not allowed).
	other := nodeattesttest.SWTPM(t)
	dir2 := filepath.Join(root, "stranger")
	os.MkdirAll(dir2, 0o700)
	out, err := cli(t, nil, "agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", filepath.Join(dir2, "workload.sock"), "--data", filepath.Join(dir2, "data"), "--attest=tpm", "--tpm", "tcp:"+other)
	if err == nil || !strings.Contains(out, "tpm node attestation refused") {
		t.Fatalf("an unknown TPM: err %v\n%s", err, out)
	}
}
