package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// waitFetch polls FetchX509SVIDs with a new client until id is among the
// SVIDs served.
func waitFetch(ctx context.Context, addr, id string, d time.Duration) error {
	var err error
	for end := time.Now().Add(d); ; sleep(ctx, 20*time.Millisecond) {
		var svids []*x509svid.SVID
		svids, err = workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
		if err == nil && slices.ContainsFunc(svids, func(s *x509svid.SVID) bool { return s.ID.String() == id }) {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(end) {
			return fmt.Errorf("no SVID for %s within %v (last: %v)", id, d, err)
		}
	}
}

// fetchStats are the figures of a FetchX509SVID load.
type fetchStats struct {
	calls         int
	perSecond     float64
	p50, p99, max time.Duration
}

func (f fetchStats) String() string {
	return fmt.Sprintf("%.0f calls/s (%d calls), p50 %v, p99 %v, max %v", f.perSecond, f.calls,
		f.p50.Round(time.Microsecond), f.p99.Round(time.Microsecond), f.max.Round(time.Microsecond))
}

// fetchLoad runs callers go-spiffe clients, each with its own connection,
// calling FetchX509SVID back to back for d, each answer checked to hold id.
func fetchLoad(ctx context.Context, addr, id string, callers int, d time.Duration) (fetchStats, error) {
	clients := make([]*workloadapi.Client, callers)
	for i := range clients {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			return fetchStats{}, err
		}
		defer c.Close()
		if _, err := c.FetchX509SVID(ctx); err != nil { // connect and warm
			return fetchStats{}, err
		}
		clients[i] = c
	}
	lats := make([][]time.Duration, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, c := range clients {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				s, err := c.FetchX509SVID(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				lats[i] = append(lats[i], time.Since(t0))
				if s.ID.String() != id {
					errs[i] = fmt.Errorf("FetchX509SVID gave %s, not %s", s.ID, id)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return fetchStats{}, err
		}
	}
	all := slices.Concat(lats...)
	if len(all) == 0 {
		return fetchStats{}, fmt.Errorf("no call completed in %v", d)
	}
	slices.Sort(all)
	return fetchStats{calls: len(all), perSecond: float64(len(all)) / elapsed.Seconds(),
		p50: all[len(all)/2], p99: all[len(all)*99/100], max: all[len(all)-1]}, nil
}

// watch is a go-spiffe X.509 context watcher that records when each SPIFFE
// ID was first received.
type watch struct {
	mu     sync.Mutex
	first  map[string]time.Time
	update chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatch(ctx context.Context, addr string) (*watch, error) {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watch{first: map[string]time.Time{}, update: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer c.Close()
		c.WatchX509Context(ctx, w)
	}()
	return w, nil
}

func (w *watch) OnX509ContextUpdate(x *workloadapi.X509Context) {
	now := time.Now()
	w.mu.Lock()
	for _, s := range x.SVIDs {
		if _, ok := w.first[s.ID.String()]; !ok {
			w.first[s.ID.String()] = now
		}
	}
	w.mu.Unlock()
	select {
	case w.update <- struct{}{}:
	default:
	}
}

func (w *watch) OnX509ContextWatchError(error) {}

func (w *watch) seen(id string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first[id]
}

// wait waits until the watcher has received id, at most d after since.
func (w *watch) wait(ctx context.Context, id string, since time.Time, d time.Duration) error {
	t := time.NewTimer(time.Until(since.Add(d)))
	defer t.Stop()
	for w.seen(id).IsZero() {
		select {
		case <-w.update:
		case <-t.C:
			return fmt.Errorf("the watching workload did not receive %s within %v: %w", id, d, errTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (w *watch) stop() {
	w.cancel()
	<-w.done
}

// durations prints sorted durations as median and range.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Sorted(slices.Values(ds))
	return fmt.Sprintf("median %v, min %v, max %v (n=%d)", median(s).Round(time.Millisecond),
		s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

func median(s []time.Duration) time.Duration {
	s = slices.Sorted(slices.Values(s))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianF(s []float64) float64 {
	s = slices.Sorted(slices.Values(s))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize prints, over all rounds, each figure per system and the ratio.
func summarize(all []result, o options) {
	by := map[string][]result{}
	for _, r := range all {
		by[r.system] = append(by[r.system], r)
	}
	ram, sp, fast := by["rampart"], by["spire"], by["spire-fast"]
	fmt.Printf("== summary (medians over %d rounds; load average now %s)\n", o.rounds, loadavg())

	reg := func(rs []result) time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, r.register)
		}
		return median(ds)
	}
	r, s, f := reg(ram), reg(sp), reg(fast)
	fmt.Printf("bulk registration of %d entries: rampart %v, SPIRE %v (fast setting %v): rampart %.2fx faster (target >= 2x)\n",
		o.entries, r.Round(time.Millisecond), s.Round(time.Millisecond), f.Round(time.Millisecond), s.Seconds()/r.Seconds())

	prop := func(rs []result) []time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, r.propagate...)
		}
		return ds
	}
	pr, ps, pf := prop(ram), prop(sp), prop(fast)
	fmt.Printf("propagation of a new entry: rampart %s\n  SPIRE default (5s sync, 5s cache reload) %s: rampart %.0fx faster\n  SPIRE fast (%v sync and reload, events-based cache) %s: rampart %.0fx faster\n",
		durations(pr), durations(ps), median(ps).Seconds()/median(pr).Seconds(),
		o.fastInterval, durations(pf), median(pf).Seconds()/median(pr).Seconds())

	for _, c := range o.callers {
		var rr, sr []float64
		var r99, s99 []time.Duration
		for _, x := range ram {
			rr, r99 = append(rr, x.fetch[c].perSecond), append(r99, x.fetch[c].p99)
		}
		for _, x := range sp {
			sr, s99 = append(sr, x.fetch[c].perSecond), append(s99, x.fetch[c].p99)
		}
		fmt.Printf("FetchX509SVID, %d callers: rampart %.0f calls/s p99 %v, SPIRE %.0f calls/s p99 %v: rampart %.2fx the calls/s, p99 %.2fx SPIRE's\n",
			c, medianF(rr), median(r99).Round(time.Microsecond), medianF(sr), median(s99).Round(time.Microsecond),
			medianF(rr)/medianF(sr), median(r99).Seconds()/median(s99).Seconds())
	}

	mem := func(rs []result, agent bool) (anon, hwm float64) {
		var a, h []float64
		for _, r := range rs {
			m := r.serverMem
			if agent {
				m = r.agentMem
			}
			a, h = append(a, float64(m.rssAnon)/1024), append(h, float64(m.hwm)/1024)
		}
		return medianF(a), medianF(h)
	}
	for _, who := range []string{"server", "agent"} {
		ra, rh := mem(ram, who == "agent")
		sa, sh := mem(sp, who == "agent")
		fmt.Printf("%s memory with %d entries: rampart RssAnon %.1f MB VmHWM %.1f MB, SPIRE RssAnon %.1f MB VmHWM %.1f MB: rampart %.2fx / %.2fx SPIRE's (target < 1)\n",
			who, o.entries, ra, rh, sa, sh, ra/sa, rh/sh)
	}
}
