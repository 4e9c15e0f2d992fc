package backup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
)

// What a drill's Boot checks of a server started on a restored data
// directory.

// ProbeAPI checks that the server at addr answers GET /healthz over TLS
// 1.3, its certificate verified with the restored dir/bundle.pem; it
// retries for about five seconds while the server starts.
func ProbeAPI(ctx context.Context, addr, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return errors.New("bundle.pem holds no certificate")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "localhost"}}}
	var last error
	for range 50 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/healthz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return last
}

// VerifyRestoredLog verifies the restored audit log in dir/audit with the
// restored dir/audit.pub, and that it holds at least what the backup m
// recorded.
func VerifyRestoredLog(dir string, m *Manifest) error {
	if m.Audit.Origin == "" {
		return nil
	}
	pub, err := os.ReadFile(filepath.Join(dir, "audit.pub"))
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		return err
	}
	rep, err := audit.Verify(filepath.Join(dir, "audit"), v)
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("%d problems, the first: %v", len(rep.Problems), rep.Problems[0])
	}
	if rep.Entries < m.Audit.Size {
		return fmt.Errorf("%d entries, the backup holds %d", rep.Entries, m.Audit.Size)
	}
	return nil
}
