// Package s3test runs a real S3-compatible server for tests: the Versity S3
// Gateway (versitygw, POSIX backend), which checks AWS Signature Version 4
// and honours conditional writes as S3 does. .ci/run installs it; without
// it the test is skipped, except in CI, where it fails.
package s3test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Server is a running gateway with one bucket.
type Server struct {
	Endpoint        string // http://127.0.0.1:PORT
	Bucket          string
	AccessKeyID     string
	SecretAccessKey string
	Root            string // the gateway's directory (ROOT/BUCKET/KEY)
}

// URL is an s3:// URL for prefix in the bucket.
func (s *Server) URL(prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s", s.Bucket, prefix, s.Endpoint)
}

// Env sets the AWS credential variables for the rest of the test (child
// processes inherit them).
func (s *Server) Env(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretAccessKey)
}

// Start starts a gateway on a free loopback port with a bucket named
// bucket, stopped when the test ends.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	bin := os.Getenv("RAMPART_VERSITYGW")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("versitygw"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("versitygw is not installed (.ci/run must install it)")
			}
			t.Skip("versitygw is not installed; go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
		}
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	secret := make([]byte, 20)
	rand.Read(secret)
	s := &Server{Endpoint: "http://" + addr, Bucket: bucket, AccessKeyID: "rampart-test", SecretAccessKey: hex.EncodeToString(secret), Root: root}
	cmd := exec.Command(bin, "--port", addr, "--access", s.AccessKeyID, "--secret", s.SecretAccessKey, "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID=", "ROOT_SECRET_ACCESS_KEY=")
	logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not start on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
