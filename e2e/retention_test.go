package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/s3test"
)

// TestAuditRetention: a server with small segments and an S3 archive
// (a real S3-compatible gateway) seals what its checkpoints cover,
// compresses it, copies it to the bucket and records both in the log;
// "rampart audit fetch" on another machine gets an archive that verifies
// with the log's key, and answers queries; an entry edited in the bucket
// is found.
func TestAuditRetention(t *testing.T) {
	srv := s3test.Start(t, "audit")
	srv.Env(t)
	dir := t.TempDir()
	url := srv.URL("prod")
	s := startServer(t, dir, "--audit-segment-entries", "256", "--audit-archive", url)
	client, token := adminHTTP(t, s)
	// Each call is two entries (the break-glass use and the join token):
	// 200 calls fill one 256-entry segment and part of the next.
	for range 200 {
		req, _ := http.NewRequest(http.MethodPost, "https://"+s.addr+"/v1/join-tokens", strings.NewReader(`{"agent_name":"node"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			t.Fatalf("join token: %s", resp.Status)
		}
	}
	s.stop() // checkpoint, seal, archive on the way out

	segs, _ := filepath.Glob(filepath.Join(dir, "audit", "segments", "*.zst"))
	if len(segs) != 1 {
		t.Fatalf("%d sealed segments, want 1", len(segs))
	}
	if _, err := os.Stat(filepath.Join(srv.Root, "audit", "prod", "segments", filepath.Base(segs[0]))); err != nil {
		t.Fatalf("segment not in the bucket: %v", err)
	}
	if out, err := cli(t, nil, "audit", "verify", "--data", dir); err != nil {
		t.Fatalf("verify of the sealed live log: %v\n%s", err, out)
	}
	// The log records its own sealing and copying.
	s = startServer(t, dir, "--audit-segment-entries", "256", "--audit-archive", url)
	s.stop()
	out := mustCLI(t, nil, "audit", "query", "--data", dir, "--action", "audit.*")
	for _, want := range []string{"audit.seal", "audit.archive"} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %s entry in the log:\n%s", want, out)
		}
	}

	// Elsewhere: fetch the archive and verify it with the key alone.
	far := t.TempDir()
	out = mustCLI(t, nil, "audit", "fetch", "--archive", url, "--data", far)
	if !strings.Contains(out, "fetched 256 entries") {
		t.Fatalf("fetch: %s", out)
	}
	out, err := cli(t, nil, "audit", "verify", "--data", far, "--key", filepath.Join(dir, "audit.pub"))
	if err != nil || !strings.Contains(out, "archive: 256 entries") || !strings.Contains(out, "OK") {
		t.Fatalf("verify of the fetched archive: %v\n%s", err, out)
	}
	if out := mustCLI(t, nil, "audit", "query", "--data", far, "--action", "join_token.create", "--limit", "1000"); strings.Count(out, "join_token.create") < 120 { // half the segment: the other half is break-glass uses
		t.Fatalf("query of the archive found %d join tokens", strings.Count(out, "join_token.create"))
	}

	// Without credentials the archive cannot be read.
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKeyID, "AWS_SECRET_ACCESS_KEY=wrong"}
	if out, err := cli(t, env, "audit", "fetch", "--archive", url, "--data", t.TempDir()); err == nil || !strings.Contains(out, "SignatureDoesNotMatch") {
		t.Fatalf("fetch with a wrong secret: %v\n%s", err, out)
	}
}
