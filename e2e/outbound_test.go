package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The outbound listener lends the service's identity to whoever reaches
// it (issue 26 item 5): the proxy refuses to listen beyond loopback unless
// told the network is trusted, and serves an app through a unix socket
// only its own uid may use.
func TestOutboundListenBoundary(t *testing.T) {
	m := newMesh(t)
	m.identity("orders", "")
	m.identity("payments", "")
	m.putPolicy(paymentsPolicy)
	inB := m.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]

	// On every interface: refused, naming the flag that would allow it.
	out, err := cli(t, nil, "proxy", "--socket", m.a.socket, "--server", m.s.addr, "--outbound", "0.0.0.0:0="+inB+",spiffe://example.org/payments")
	if err == nil || !strings.Contains(out+err.Error(), "open relay") || !strings.Contains(out+err.Error(), "--outbound-allow-remote") {
		t.Fatalf("an outbound on 0.0.0.0 was not refused: %v\n%s", err, out)
	}

	// On a unix socket: served to this process's uid.
	dir, err := os.MkdirTemp("", "rampart-outbound")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "orders", "payments.sock")
	addrs := m.proxy("orders", "--outbound", "unix:"+sock+"="+inB+",spiffe://example.org/payments")
	if addrs[1] != sock {
		t.Fatalf("outbound listens on %q, want %s", addrs[1], sock)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v (%v), want mode 0600", fi.Mode().Perm(), err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	eventually(t, 10*time.Second, "a call through the unix-socket outbound", func() error {
		resp, err := client.Get("http://payments/payments/42")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var saw appSaw
		json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&saw)
		if resp.StatusCode != 200 || len(saw.Caller) != 1 || saw.Caller[0] != "spiffe://example.org/orders" {
			return fmt.Errorf("%d %+v", resp.StatusCode, saw)
		}
		return nil
	})
}
