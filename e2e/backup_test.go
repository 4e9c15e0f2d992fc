package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/s3test"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// Backup, wipe, restore, and the system works: a real server with a real
// agent is backed up (to a directory and, where the S3 gateway is
// installed, a bucket), stopped and its data directory (and PostgreSQL
// schema) thrown away; the backup is restored into an empty directory and
// schema; the restored server starts at the same address, the agent
// reconnects by itself with the SVID it had, workload SVIDs renew from the
// restored CA, and the audit log verifies and continues after its
// backup.restore entry.
func TestBackupWipeRestore(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) { backupWipeRestore(t, backend) })
	}
}

const (
	e2eAgeKey       = "AGE-SECRET-KEY-16TEGPENKDYSF792EJ76F39ARPQPCZEUM73FRYTZ6DNQ4UQLZHSJQ4GA835"
	e2eAgeRecipient = "age1ame8xalwryxz0zcw9534656525unv0uxvzxhz6vvekwhtnsnxvhq2kurcn"
)

func backupWipeRestore(t *testing.T, backend string) {
	root := t.TempDir()
	dir := filepath.Join(root, "server")
	dests := []string{filepath.Join(root, "dest-a")}
	if backend == "sqlite" {
		// The S3 destination: the real gateway (CI installs it).
		gw := s3test.Start(t, "backups")
		gw.Env(t)
		dests = append(dests, gw.URL("rampart"))
	} else {
		dests = append(dests, filepath.Join(root, "dest-b"))
	}
	var extra, restoreExtra []string
	if backend == "postgres" {
		extra = []string{"--postgres", storetest.PostgresDSN(t)}
		fresh := storetest.PostgresDSN(t)
		restoreExtra = []string{"--postgres", fresh} // the wiped deployment's new, empty schema
	}
	write := func(name, content string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := write("key.txt", e2eAgeKey+"\n")
	cfg := write("backup.yaml", fmt.Sprintf("destinations: [%q, %q]\nrecipients_file: %s\n", dests[0], dests[1], write("recipients.txt", e2eAgeRecipient+"\n")))

	s := startServer(t, dir, append(extra, "--backup-config", cfg)...)
	tok := mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1")
	a := startAgent(t, s, filepath.Join(root, "agent"), tok)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID(), "--ttl", "8s")
	before := fetchSVID(t, a, nil)

	var res struct {
		Seq  int64  `json:"seq"`
		Hash string `json:"manifest_sha256"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, s.adminEnv(), "backup", "create", "--json")), &res); err != nil || res.Seq != 1 {
		t.Fatalf("backup create: %+v, %v", res, err)
	}
	addr := s.addr
	s.stop()

	// What the operator keeps apart from the backups.
	pub := write("backup.pub", string(mustRead(t, filepath.Join(dir, "backup.pub"))))
	kek := write("kek", string(mustRead(t, filepath.Join(dir, "keys", "kek"))))
	// The disaster.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	args := []string{"backup", "restore", "--pubkey", pub, "-i", key, "--data", dir, "--kek-file", kek, "--seen", filepath.Join(root, "seen.json")}
	for _, d := range dests {
		args = append(args, "--dest", d)
	}
	out := mustCLI(t, nil, append(args, restoreExtra...)...)
	if !strings.Contains(out, "restored backup 1 ") {
		t.Fatalf("restore: %s", out)
	}
	if backend == "postgres" {
		extra = restoreExtra
	}
	restoredAt := time.Now()
	s2 := startServerAt(t, dir, addr, extra...)

	// The agent was never told: it reconnects with the SVID it holds, and
	// workload SVIDs renew, signed by the restored CA.
	after := fetchSVID(t, a, func(s *x509svid.SVID) error {
		if !s.Certificates[0].NotBefore.After(restoredAt.Add(-time.Minute)) || s.Certificates[0].SerialNumber.Cmp(before.Certificates[0].SerialNumber) == 0 {
			return fmt.Errorf("not renewed yet (serial %x)", s.Certificates[0].SerialNumber)
		}
		return nil
	})
	if after.Certificates[1].Subject.String() != before.Certificates[1].Subject.String() {
		t.Errorf("renewed by intermediate %s, before by %s: the restored CA is not the same", after.Certificates[1].Subject, before.Certificates[1].Subject)
	}
	agents := mustCLI(t, s2.adminEnv(), "agent", "list")
	if !strings.Contains(agents, agentID) {
		t.Fatalf("agent list after restore:\n%s", agents)
	}
	s2.stop()

	// The log verifies, holds the restore, and went on after it.
	out = mustCLI(t, nil, "audit", "verify", "--data", dir)
	if !strings.Contains(out, "OK: ") {
		t.Fatalf("audit verify after restore:\n%s", out)
	}
	q := mustCLI(t, nil, "audit", "query", "--data", dir, "--json")
	i := strings.Index(q, `"action":"backup.restore"`)
	if i < 0 || !strings.Contains(q[i:], `"action":"svid.issue"`) {
		t.Fatalf("no backup.restore entry followed by issuance in the restored log:\n%s", q)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fetchSVID fetches the workload's X.509-SVID from the agent until ok
// accepts it (nil: the first), and checks its chain against the bundle.
func fetchSVID(t *testing.T, a *agent, ok func(*x509svid.SVID) error) *x509svid.SVID {
	t.Helper()
	var got *x509svid.SVID
	eventually(t, 40*time.Second, "an X.509-SVID", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := workloadapi.FetchX509Context(ctx, addr(a))
		if err != nil {
			return err
		}
		s := c.DefaultSVID()
		pool := x509.NewCertPool()
		for _, b := range c.Bundles.Bundles() {
			for _, r := range b.X509Authorities() {
				pool.AddCert(r)
			}
		}
		inter := x509.NewCertPool()
		for _, ic := range s.Certificates[1:] {
			inter.AddCert(ic)
		}
		if _, err := s.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return err
		}
		if ok != nil {
			if err := ok(s); err != nil {
				return err
			}
		}
		got = s
		return nil
	})
	return got
}
