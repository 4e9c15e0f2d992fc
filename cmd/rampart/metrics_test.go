package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics listener shares the process's descriptors with the proxy's
// (or agent's) real work: connections held open against it are bounded
// (metricsMaxConns), and those beyond wait in the kernel's backlog, holding
// no descriptor of the process, until one of the held ones goes.
func TestMetricsListenerBoundsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err := serveMetrics(addr, prometheus.NewRegistry(), false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range metricsMaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// One more, with a whole request: not served while the others hold
	// every place...
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatalf("a connection beyond the %d held ones was served", metricsMaxConns)
	}
	// ...and served once one goes.
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("once a place was free: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
}
