package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(10, 3, t0)
	for i := range 3 {
		if ok, _ := b.Take(t0); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := b.Take(t0)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("empty bucket: ok %v, wait %v, want 100ms", ok, wait)
	}
	if ok, _ := b.Take(t0.Add(100 * time.Millisecond)); !ok {
		t.Fatal("refilled token refused")
	}
	// A long quiet period refills no more than the burst.
	later := t0.Add(time.Hour)
	for i := range 3 {
		if ok, _ := b.Take(later); !ok {
			t.Fatalf("token %d after a quiet hour refused", i)
		}
	}
	if ok, _ := b.Take(later); ok {
		t.Fatal("more than the burst after a quiet period")
	}
	if ok, _ := NewBucket(0, 1, t0).Take(t0); !ok {
		t.Fatal("a zero rate must not bound")
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Limits)
		want string
	}{
		{func(l *Limits) {}, ""},
		{func(l *Limits) { l.MaxConns = -1 }, "max-conns -1"},
		{func(l *Limits) { l.MaxIdle = l.MaxConns + 1 }, "max-idle"},
		{func(l *Limits) { l.MinIdle = l.MaxIdle + 1 }, "min-idle"},
		{func(l *Limits) { l.MaxDialing = l.MaxConns + 1 }, "max-dialing"},
		{func(l *Limits) { l.DialRate = -1 }, "dial-rate"},
		{func(l *Limits) { l.QueueTimeout = -time.Second }, "queue-timeout"},
		{func(l *Limits) { l.QueueTarget = l.QueueTimeout + 1 }, "queue-target"},
		{func(l *Limits) { l.QueueTarget = -1 }, "queue-target"},
		{func(l *Limits) { l.QueueInterval = 0 }, "queue-interval"},
	} {
		l := DefaultLimits()
		tc.mod(&l)
		err := l.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("want %q, got %v", tc.want, err)
		}
	}
	if got := (Limits{QueueTimeout: 1500 * time.Millisecond}).RetryAfter(); got != "2" {
		t.Errorf("Retry-After %s, want 2", got)
	}
	if got := (Limits{QueueTimeout: 100 * time.Millisecond}).RetryAfter(); got != "1" {
		t.Errorf("Retry-After %s, want 1", got)
	}
}

// The gate lets MaxDialing dials run at once and no more.
func TestGateBoundsConcurrentDials(t *testing.T) {
	release := make(chan struct{})
	var running, most atomic.Int64
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		n := running.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		return nil, errors.New("done")
	}
	var dials atomic.Int64
	g := NewGate(Limits{MaxConns: 10, MaxDialing: 3}, nil, func(error) { dials.Add(1) })
	d := g.Dial(dial)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { d(context.Background(), "tcp", "x") })
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if most.Load() != 3 || dials.Load() != 10 {
		t.Fatalf("at most %d dials at once (want 3), %d dials (want 10)", most.Load(), dials.Load())
	}
	// A dial whose context ends while it waits for its turn gives up.
	g = NewGate(Limits{MaxConns: 1, MaxDialing: 1, DialRate: 1}, nil, nil)
	d = g.Dial(func(context.Context, string, string) (net.Conn, error) { return nil, nil })
	d(context.Background(), "tcp", "x") // takes the only token
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d(ctx, "tcp", "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled dial waiting for a token: %v", err)
	}
}

// Bound: with the one connection busy, a second request waits and is
// refused at the queue timeout; a third, the queue being full, at once;
// neither reaches the server. Once the connection is free, requests pass.
func TestBoundQueue(t *testing.T) {
	hold := make(chan struct{})
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Path == "/slow" {
			<-hold
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	l := Limits{MaxConns: 1, MaxPending: 1, QueueTimeout: 200 * time.Millisecond}
	var reasons sync.Map
	var pending atomic.Int64
	tr := Transport(l, false, (&net.Dialer{}).DialContext, nil)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: Bound(tr, l, func(r string) {
		v, _ := reasons.LoadOrStore(r, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}, &pending)}

	slow := make(chan error, 1)
	go func() {
		resp, err := c.Get(srv.URL + "/slow")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	for served.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	queued := make(chan error, 1)
	go func() {
		_, err := c.Get(srv.URL + "/queued")
		queued <- err
	}()
	for pending.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	_, err := c.Get(srv.URL + "/full")
	var oe *OverloadError
	if !errors.As(err, &oe) || oe.Reason != ReasonQueueFull {
		t.Fatalf("with the queue full: %v, want an overload (queue_full)", err)
	}
	err = <-queued
	if !errors.As(err, &oe) || oe.Reason != ReasonQueueTimeout || !errors.Is(err, ErrOverloaded) {
		t.Fatalf("queued past the timeout: %v, want an overload (queue_timeout)", err)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("the server saw %d requests, want only the slow one", n)
	}
	close(hold)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL + "/after")
	if err != nil {
		t.Fatalf("after the load: %v", err)
	}
	resp.Body.Close()
	if pending.Load() != 0 {
		t.Fatalf("%d still counted as waiting", pending.Load())
	}
	for _, r := range []string{ReasonQueueFull, ReasonQueueTimeout} {
		if v, ok := reasons.Load(r); !ok || v.(*atomic.Int64).Load() != 1 {
			t.Errorf("refusals for %s not counted once", r)
		}
	}
}
