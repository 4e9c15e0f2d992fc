package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/nodeattest/nodeattesttest"
)

// x509pop with real processes: a server given the node CA, an agent
// given its node certificate (no join token), an entry parented to the
// agent ID derived from the certificate, and a workload served by that
// agent. Then the refusals a red team would try from the command line:
// a node certificate from another CA, and a key that is not the
// certificate's.
func TestX509PoPNodeAttestation(t *testing.T) {
	root := t.TempDir()
	nodeCA := nodeattesttest.NewCA(t, "node CA")
	caFile := nodeattesttest.WritePEM(t, root, "node-ca.pem", nodeCA.Cert)
	s := startServer(t, filepath.Join(root, "server"), "--node-attest-x509pop-ca", caFile)

	node := nodeCA.Issue(t, "node-1.example.org")
	certFile := nodeattesttest.WritePEM(t, root, "node.pem", node.Cert)
	keyFile := nodeattesttest.WriteKey(t, root, "node.key", node.Key)
	sum := sha256.Sum256(node.Cert.Raw)
	agentID := "spiffe://example.org/rampart/agent/x509pop-" + hex.EncodeToString(sum[:])[:40]

	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders",
		"--parent", agentID, "--selector", myUID())
	a := startX509PoPAgent(t, s, filepath.Join(root, "agent"), certFile, keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sv, err := x509Source(t, ctx, a).GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if sv.ID.String() != "spiffe://example.org/orders" {
		t.Fatalf("got %s", sv.ID)
	}
	if out := mustCLI(t, s.adminEnv(), "agent", "list"); !strings.Contains(out, strings.TrimPrefix(agentID, "spiffe://example.org/rampart/agent/")) {
		t.Fatalf("agent list does not show the x509pop agent:\n%s", out)
	}

	// Attack: a node certificate from a CA the server was not given.
	rogue := nodeattesttest.NewCA(t, "rogue CA").Issue(t, "node-1.example.org")
	out := failX509PoPAgent(t, s, filepath.Join(root, "rogue"),
		nodeattesttest.WritePEM(t, root, "rogue.pem", rogue.Cert), nodeattesttest.WriteKey(t, root, "rogue.key", rogue.Key))
	if !strings.Contains(out, "x509pop node attestation refused") {
		t.Fatalf("a certificate from another CA: %s", out)
	}
	// Attack: the real node's certificate with another key: the agent
	// refuses before asking (and the server would refuse the signature).
	out = failX509PoPAgent(t, s, filepath.Join(root, "stolen"), certFile, nodeattesttest.WriteKey(t, root, "other.key", rogue.Key))
	if !strings.Contains(out, "is not the key of the certificate") {
		t.Fatalf("a certificate with another key: %s", out)
	}
}

func x509popArgs(s *server, dir, cert, key string) []string {
	return []string{"agent", "--server", s.addr, "--ca-bundle", filepath.Join(s.dir, "bundle.pem"),
		"--socket", filepath.Join(dir, "workload.sock"), "--data", filepath.Join(dir, "data"),
		"--attest=x509pop", "--x509pop-cert", cert, "--x509pop-key", key}
}

func startX509PoPAgent(t *testing.T, s *server, dir, cert, key string) *agent {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	p := start(t, nil, x509popArgs(s, dir, cert, key)...)
	socket := filepath.Join(dir, "workload.sock")
	eventually(t, 30*time.Second, "the x509pop agent's socket", func() error {
		select {
		case <-p.done:
			t.Fatalf("agent exited:\n%s", p.out.String())
		default:
		}
		_, err := os.Stat(socket)
		return err
	})
	return &agent{proc: p, socket: socket, dir: dir}
}

// failX509PoPAgent runs an agent that must fail to attest; its output.
func failX509PoPAgent(t *testing.T, s *server, dir, cert, key string) string {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	out, err := cli(t, nil, x509popArgs(s, dir, cert, key)...)
	if err == nil {
		t.Fatalf("the agent attested:\n%s", out)
	}
	return out
}
