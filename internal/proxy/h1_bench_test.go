package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkH1Forward measures the forwarder alone: keep-alive GETs on one
// client connection through it to a net/http app answering 1 KiB, over
// loopback (no TLS, no guard; bench/dataplane.sh measures the whole pair).
// The app's own cost is included; compare with BenchmarkH1Direct.
func BenchmarkH1Forward(b *testing.B) {
	benchKeepAlive(b, newFwd(b, kib()).addr)
}

// BenchmarkH1Direct is the same load straight to the app.
func BenchmarkH1Direct(b *testing.B) {
	benchKeepAlive(b, newFwd(b, kib()).app.Listener.Addr().String())
}

func kib() http.Handler {
	body := []byte(strings.Repeat("x", 1024))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
}

func benchKeepAlive(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /bench HTTP/1.1\r\nHost: svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
