package identity

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The maintainer rotates on schedule, says when the bundle changed (a
// successor root published at half life), and warns about a root in its
// last quarter of life.
func TestMaintainerRotatesAndWarns(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, func(c *Config) { c.RootTTL = 2000 * time.Hour }) // intermediate 24 h
	var logs bytes.Buffer
	changed := 0
	m := &Maintainer{CA: ca, Now: f.clk.Now, Log: slog.New(slog.NewTextHandler(&logs, nil)), Registry: prometheus.NewRegistry(),
		Changed: func(context.Context) { changed++ }}
	ctx := context.Background()
	for f.clk.Now().Sub(f.start) < 990*time.Hour {
		f.clk.Add(10 * time.Hour)
		m.Step(ctx)
	}
	if changed != 0 || strings.Contains(logs.String(), "expires soon") {
		t.Fatalf("before half life: %d bundle changes, logs %q", changed, logs.String())
	}
	for f.clk.Now().Sub(f.start) < 1010*time.Hour {
		f.clk.Add(10 * time.Hour)
		m.Step(ctx)
	}
	if changed != 1 || len(ca.X509Bundle()) != 2 {
		t.Fatalf("at half life: %d bundle changes, %d roots; want the successor published once", changed, len(ca.X509Bundle()))
	}
	if n := testutil.ToFloat64(m.failures); n != 0 {
		t.Fatalf("%v failures", n)
	}
	// The old root stays in the bundle until it expires: within 30 days
	// of that the log says so.
	for f.clk.Now().Sub(f.start) < 1290*time.Hour {
		f.clk.Add(10 * time.Hour)
		m.Step(ctx)
	}
	if !strings.Contains(logs.String(), "CA certificate expires soon") {
		t.Fatalf("no expiry warning within 30 days of a root's expiry: %q", logs.String())
	}
}

// SelfTest passes for a working CA and fails for one whose bundle does
// not hold the root its intermediate chains to.
func TestSelfTest(t *testing.T) {
	f := newFixture(t)
	ca := f.ca(t, nil)
	if err := ca.SelfTest(); err != nil {
		t.Fatalf("a working CA: %v", err)
	}
	ca.mu.Lock()
	roots := ca.roots
	ca.roots = nil
	ca.mu.Unlock()
	err := ca.SelfTest()
	ca.mu.Lock()
	ca.roots = roots
	ca.mu.Unlock()
	if err == nil {
		t.Fatal("a CA with an empty bundle passed its self test")
	}
}
