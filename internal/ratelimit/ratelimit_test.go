package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newLimiter(t *testing.T, l Limits, mod func(*Config)) (*Limiter, *fakeclock.Clock, *[]Refusal) {
	t.Helper()
	clk := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	var got []Refusal
	cfg := Config{Name: "test", Limits: l, MaxSources: 1000, Interval: time.Minute, Now: clk.Now,
		OnRefusals: func(rs []Refusal) { got = append(got, rs...) }}
	if mod != nil {
		mod(&cfg)
	}
	lim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return lim, clk, &got
}

// TestPerSource: a source gets its burst, then waits for its rate; another
// source is not affected.
func TestPerSource(t *testing.T) {
	l, clk, _ := newLimiter(t, Limits{PerSource: Rule{Rate: 2, Burst: 3}, Global: Rule{Rate: 1000, Burst: 1000}}, nil)
	for i := 0; i < 3; i++ {
		if d := l.Allow("a"); !d.Allowed {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	d := l.Allow("a")
	if d.Allowed || d.Scope != ScopeSource || d.Retry != 500*time.Millisecond || d.RetryAfter() != "1" {
		t.Fatalf("beyond the burst: %+v (Retry-After %s)", d, d.RetryAfter())
	}
	if !l.Allow("b").Allowed {
		t.Fatal("another source refused")
	}
	clk.Add(499 * time.Millisecond)
	if l.Allow("a").Allowed {
		t.Fatal("allowed before a token dripped in")
	}
	clk.Add(time.Millisecond)
	if !l.Allow("a").Allowed {
		t.Fatal("refused after a token dripped in")
	}
	// A long idle time refills to the burst, not beyond.
	clk.Add(time.Hour)
	n := 0
	for l.Allow("a").Allowed {
		n++
	}
	if n != 3 {
		t.Fatalf("after an hour idle: %d requests allowed, want the burst 3", n)
	}
}

// TestGlobal: all sources together are bounded, and a source refused by
// its own bucket does not spend the global one.
func TestGlobal(t *testing.T) {
	l, clk, _ := newLimiter(t, Limits{PerSource: Rule{Rate: 1, Burst: 2}, Global: Rule{Rate: 1, Burst: 5}}, nil)
	// One noisy source: 2 allowed, then refused by its own bucket, many times.
	for i := 0; i < 50; i++ {
		l.Allow("noisy")
	}
	// The other sources still have the rest of the global burst (3).
	allowed := 0
	for i := 0; i < 10; i++ {
		if l.Allow(fmt.Sprintf("s%d", i)).Allowed {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d other sources allowed, want 3 (global burst 5 less the noisy source's 2)", allowed)
	}
	d := l.Allow("fresh")
	if d.Allowed || d.Scope != ScopeGlobal || d.Retry != time.Second {
		t.Fatalf("beyond the global burst: %+v", d)
	}
	clk.Add(time.Second)
	if !l.Allow("fresh").Allowed {
		t.Fatal("fresh source refused after the global bucket refilled")
	}
}

// TestRefusalsAggregated: refusals reach OnRefusals as one count per
// source and scope per interval, not one each.
func TestRefusalsAggregated(t *testing.T) {
	l, clk, got := newLimiter(t, Limits{PerSource: Rule{Rate: 1, Burst: 1}, Global: Rule{Rate: 100, Burst: 100}}, nil)
	for i := 0; i < 101; i++ {
		l.Allow("a")
		l.Allow("b")
	}
	if len(*got) != 0 {
		t.Fatalf("refusals reported before the interval: %+v", *got)
	}
	clk.Add(time.Minute)
	l.Allow("c") // the window rolls over on the next request
	if len(*got) != 2 {
		t.Fatalf("reported %+v, want one entry each for a and b", *got)
	}
	for _, r := range *got {
		if r.Count != 100 || r.Scope != ScopeSource || r.Limiter != "test" || r.First.IsZero() || r.Last.Before(r.First) {
			t.Fatalf("refusal %+v, want 100 per-source refusals", r)
		}
	}
	*got = nil
	l.Allow("a")
	l.Allow("a")
	l.Flush()
	if len(*got) != 1 || (*got)[0].Count != 1 {
		t.Fatalf("after Flush: %+v", *got)
	}
}

// TestBounded: a flood of distinct sources cannot grow the tables past
// MaxSources, and idle sources are forgotten first.
func TestBounded(t *testing.T) {
	l, _, got := newLimiter(t, Limits{PerSource: Rule{Rate: 1, Burst: 1}, Global: Rule{Rate: 1e6, Burst: 1e6}},
		func(c *Config) { c.MaxSources = 64 })
	l.Allow("busy")
	l.Allow("busy") // refused: its bucket is empty
	for i := 0; i < 10000; i++ {
		src := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		l.Allow(src)
		l.Allow(src) // each refused once
		if len(l.sources) > 64 || len(l.refused) > 64+2 {
			t.Fatalf("tables grew to %d sources, %d refusals", len(l.sources), len(l.refused))
		}
	}
	l.Flush()
	total := 0
	for _, r := range *got {
		total += r.Count
	}
	if total != 10001 {
		t.Fatalf("%d refusals counted, want 10001 (none lost when grouped as other)", total)
	}
}

// TestConfigRequired: a limit nobody set is an error, not "unlimited".
func TestConfigRequired(t *testing.T) {
	good := Config{Name: "x", Limits: Limits{PerSource: Rule{Rate: 1, Burst: 1}, Global: Rule{Rate: 1, Burst: 1}},
		MaxSources: 1, Interval: time.Second, Now: time.Now}
	for name, mod := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"zero rate":      func(c *Config) { c.Limits.PerSource.Rate = 0 },
		"negative rate":  func(c *Config) { c.Limits.Global.Rate = -1 },
		"zero burst":     func(c *Config) { c.Limits.Global.Burst = 0 },
		"no max sources": func(c *Config) { c.MaxSources = 0 },
		"no interval":    func(c *Config) { c.Interval = 0 },
		"no clock":       func(c *Config) { c.Now = nil },
	} {
		c := good
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
}

func TestSource(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:443":              "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80":  "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:443":     "192.0.2.7",
		"garbage":                    "unknown",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		r.Header.Set("X-Forwarded-For", "198.51.100.1")
		if got := Source(r); got != want {
			t.Errorf("Source(%q) = %q, want %q", addr, got, want)
		}
	}
}

func FuzzSource(f *testing.F) {
	for _, s := range []string{"192.0.2.7:443", "[2001:db8::1]:1", "x", "[::1]", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		r := &http.Request{RemoteAddr: addr}
		if s := Source(r); s == "" || len(s) > 64 {
			t.Fatalf("Source(%q) = %q", addr, s)
		}
	})
}

// TestWrapAndMetrics: Wrap answers 429 with Retry-After, and every
// decision is counted.
func TestWrapAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err != nil { // a second limiter on the same registry
		t.Fatal(err)
	}
	l, _, _ := newLimiter(t, Limits{PerSource: Rule{Rate: 0.1, Burst: 1}, Global: Rule{Rate: 100, Burst: 100}}, func(c *Config) { c.Metrics = m })
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }), nil)
	var codes []int
	var retry string
	for i := 0; i < 3; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/token", nil))
		codes = append(codes, rec.Code)
		retry = rec.Header().Get("Retry-After")
	}
	if codes[0] != http.StatusNoContent || codes[1] != http.StatusTooManyRequests || retry != "10" {
		t.Fatalf("codes %v, Retry-After %q", codes, retry)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("test", "refused_source")); got != 2 {
		t.Fatalf("refused_source counted %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("test", "allowed")); got != 1 {
		t.Fatalf("allowed counted %v, want 1", got)
	}
	if !strings.Contains(fmt.Sprint(reg.Gather()), "rampart_ratelimit_requests_total") {
		t.Fatal("metric not registered")
	}
}

// TestConcurrent: under the race detector, concurrent callers never get
// more than the burst between them.
func TestConcurrent(t *testing.T) {
	l, _, _ := newLimiter(t, Limits{PerSource: Rule{Rate: 1e-9, Burst: 50}, Global: Rule{Rate: 1e-9, Burst: 1000}}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				if l.Allow("a").Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 50 {
		t.Fatalf("%d allowed concurrently, want the burst 50", allowed)
	}
}
