package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The overload curve (issue 27): offered load from half to three times the
// pair's measured capacity, in an open loop (requests are sent on schedule
// whatever the answers' latency, as a busy service's callers send them),
// goodput and p99 at each step, for the rampart pair with audit shipping
// off and on and the nginx pair, in rounds that alternate them so all see
// the same machine.

var (
	overload      = flag.Bool("overload", false, "run the overload curve (instead of the throughput, latency and handshake measurements)")
	overSteps     = flag.String("overload-steps", "0.5,1,1.5,2,2.5,3", "offered load at each step, as multiples of the rampart pair's measured capacity")
	overDur       = flag.Duration("overload-duration", 10*time.Second, "length of each step's run (bounded to 60s)")
	overConns     = flag.Int("overload-conns", 1024, "connections the load generator may open (an open loop needs many: a request waits for none)")
	overTimeout   = flag.Duration("overload-timeout", 2*time.Second, "a request not answered within this is counted as failed and its connection closed, as a caller's timeout does")
	overPause     = flag.Duration("overload-pause", 2*time.Second, "pause between runs, for the systems to drain")
	overProxyArgs = flag.String("proxy-flags", "", "more flags for every rampart proxy of the overload curve, e.g. \"--upstream-max-conns 256\"")
)

// system is one pair under test.
type system struct {
	name string
	url  string // the client side's address, http://host:port/
	pids []int  // processes whose CPU is counted
}

// runResult is one open-loop run.
type runResult struct {
	offered, sent, ok, overloaded, other int
	failed, timedOut                     int    // no answer; timedOut of them within the timeout
	firstErr                             string // the first failure other than a timeout
	conns                                int    // connections the generator opened
	secs                                 float64
	lat                                  []time.Duration // of the 200s, from their scheduled time
	cpu                                  float64         // vCPU of the system's processes over the run
}

func firstErr(r runResult) string {
	if r.firstErr == "" {
		return ""
	}
	return "  first error: " + r.firstErr
}

func (r runResult) goodput() float64 { return float64(r.ok) / r.secs }

func (r runResult) p(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(q*float64(len(r.lat)-1))]
}

// generator is a lean HTTP/1.1 open-loop load generator. Each worker has
// a keep-alive connection of its own; a request due is handed to the
// worker that went idle last (so at low load a few connections carry
// everything, as a client's pool does), to a new worker while there are
// fewer than conns, or else queued until one is free. Latency counts from
// the scheduled time, so a wait for a free worker is counted (no
// coordinated omission); a request that waited past the timeout fails.
type generator struct {
	host, path string
	conns      int
	timeout    time.Duration
}

func newGenerator(u string) (*generator, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	return &generator{host: p.Host, path: p.EscapedPath(), conns: *overConns, timeout: *overTimeout}, nil
}

// genWorker is one connection of the generator.
type genWorker struct {
	due chan time.Time
	c   net.Conn
	br  *bufio.Reader
}

// run offers rate requests a second for d; rate 0 runs a closed loop of
// 64 connections instead (as fast as answers come: the capacity).
func (g *generator) run(rate float64, d time.Duration) runResult {
	req := []byte("GET " + g.path + " HTTP/1.1\r\nHost: app\r\n\r\n")
	var mu sync.Mutex // guards res, idle, queue, workers
	var res runResult
	var idle []*genWorker
	var queue []time.Time
	workers := 0
	var wg sync.WaitGroup
	record := func(code int, lat time.Duration, err error) {
		switch {
		case err != nil:
			res.failed++
			if errors.Is(err, errGenTimeout) || isTimeout(err) {
				res.timedOut++
			} else if res.firstErr == "" {
				res.firstErr = err.Error()
			}
		case code == 200:
			res.ok++
			res.lat = append(res.lat, lat)
		case code == 503:
			res.overloaded++
		default:
			res.other++
		}
	}
	do := func(w *genWorker, at time.Time) {
		if time.Since(at) > g.timeout {
			mu.Lock()
			record(0, 0, errGenTimeout)
			mu.Unlock()
			return
		}
		if w.c == nil {
			c, err := net.DialTimeout("tcp", g.host, g.timeout)
			if err != nil {
				mu.Lock()
				record(0, 0, err)
				mu.Unlock()
				return
			}
			w.c, w.br = c, bufio.NewReaderSize(c, 4<<10)
		}
		w.c.SetDeadline(at.Add(g.timeout))
		code, keep, err := roundTrip(w.c, w.br, req)
		if !keep {
			w.c.Close()
			w.c = nil
		}
		lat := time.Since(at)
		mu.Lock()
		res.sent++
		record(code, lat, err)
		mu.Unlock()
	}
	loop := func(w *genWorker) {
		defer func() {
			if w.c != nil {
				w.c.Close()
			}
		}()
		for at := range w.due {
			for {
				do(w, at)
				mu.Lock()
				if len(queue) == 0 {
					idle = append(idle, w)
					mu.Unlock()
					break
				}
				at = queue[0]
				queue = queue[1:]
				mu.Unlock()
			}
		}
	}
	dispatch := func(at time.Time) {
		mu.Lock()
		res.offered++
		if n := len(idle); n > 0 {
			w := idle[n-1]
			idle = idle[:n-1]
			mu.Unlock()
			w.due <- at
			return
		}
		if workers < g.conns {
			workers++
			w := &genWorker{due: make(chan time.Time, 1)}
			mu.Unlock()
			wg.Go(func() { loop(w) })
			w.due <- at
			return
		}
		queue = append(queue, at)
		mu.Unlock()
	}
	start := time.Now()
	end := start.Add(d)
	if rate == 0 {
		var cl sync.WaitGroup
		for range 64 {
			cl.Go(func() {
				w := &genWorker{}
				for time.Now().Before(end) {
					do(w, time.Now())
				}
				if w.c != nil {
					w.c.Close()
				}
			})
		}
		cl.Wait()
		res.offered = res.sent
	} else {
		// Due times in batches of at most 1 ms.
		interval := time.Duration(float64(time.Second) / rate)
		for next := start; next.Before(end); {
			if w := time.Until(next); w > time.Millisecond {
				time.Sleep(w)
			}
			for now := time.Now(); !next.After(now) && next.Before(end); next = next.Add(interval) {
				dispatch(next)
			}
		}
		// Wait for the queue to empty, then stop the workers.
		for {
			mu.Lock()
			n := len(queue)
			done := len(idle) == workers
			mu.Unlock()
			if n == 0 && done {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		for _, w := range idle {
			close(w.due)
		}
		mu.Unlock()
	}
	wg.Wait()
	res.secs = d.Seconds()
	res.conns = workers
	slices.Sort(res.lat)
	return res
}

var errGenTimeout = errors.New("waited past the timeout for a free connection of the generator")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roundTrip sends one request on c and reads the whole answer; keep says
// whether c may carry another.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (code int, keep bool, err error) {
	if _, err := c.Write(req); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err == nil && !resp.Close, err
}

// runOverload measures the first system's capacity (the rampart pair
// without shipping, closed loop), then runs the curve. The second system
// is the rampart pair with shipping: their CPU is compared at 1x.
func runOverload(systems []system) error {
	*overDur = min(*overDur, time.Minute)
	var steps []float64
	for s := range strings.SplitSeq(*overSteps, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("--overload-steps: %q is not a positive number", s)
		}
		steps = append(steps, f)
	}
	gens := make([]*generator, len(systems))
	for i, s := range systems {
		g, err := newGenerator(s.url)
		if err != nil {
			return err
		}
		gens[i] = g
	}
	// Capacity: the median of three closed-loop runs of the rampart pair
	// without shipping (64 connections, as the throughput measurement).
	var caps []float64
	for range 3 {
		r := gens[0].run(0, *overDur)
		caps = append(caps, r.goodput())
		time.Sleep(*overPause)
	}
	slices.Sort(caps)
	capacity := caps[1]
	fmt.Printf("overload curve: %s capacity %.0f req/s (closed loop, 64 connections; runs %.0f-%.0f); open loop at each step for %s, up to %d connections, %s timeout; %d rounds alternating the systems\n",
		systems[0].name, capacity, caps[0], caps[2], *overDur, *overConns, *overTimeout, *rounds)
	type cell struct{ runs []runResult }
	table := make([][]cell, len(steps))
	for i := range table {
		table[i] = make([]cell, len(systems))
	}
	for si, mult := range steps {
		rate := mult * capacity
		for round := range *rounds {
			for k := range systems {
				j := (k + round + si) % len(systems) // a different system goes first each time
				cpu0 := cpuTicks(systems[j].pids)
				r := gens[j].run(rate, *overDur)
				r.cpu = float64(cpuTicks(systems[j].pids)-cpu0) / 100 / r.secs
				table[si][j].runs = append(table[si][j].runs, r)
				fmt.Printf("  %.1fx (%6.0f req/s) round %d  %-22s offered %6.0f/s sent %6.0f/s  goodput %6.0f/s  p50 %-9s p99 %-9s  503 %6d  other %5d  failed %6d (timeouts %d)  %4d conns  %.2f vCPU%s\n",
					mult, rate, round+1, systems[j].name, float64(r.offered)/r.secs, float64(r.sent)/r.secs, r.goodput(),
					r.p(.5).Round(10*time.Microsecond), r.p(.99).Round(10*time.Microsecond), r.overloaded, r.other, r.failed, r.timedOut, r.conns, r.cpu, firstErr(r))
				time.Sleep(*overPause)
			}
		}
	}
	// Medians per step and system.
	med := func(runs []runResult, f func(runResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Printf("\nmedians of %d rounds (goodput: 200s a second; p99 of the 200s, from their scheduled time; collapse: goodput under half the capacity):\n", *rounds)
	fmt.Printf("  %-6s", "load")
	for _, s := range systems {
		fmt.Printf(" | %-38s", s.name)
	}
	fmt.Println()
	peak := make([]float64, len(systems))
	at2 := make([]float64, len(systems))
	for si, mult := range steps {
		fmt.Printf("  %-6s", strconv.FormatFloat(mult, 'f', -1, 64)+"x")
		for j := range systems {
			runs := table[si][j].runs
			g := med(runs, runResult.goodput)
			p99 := time.Duration(med(runs, func(r runResult) float64 { return float64(r.p(.99)) }))
			cpu := med(runs, func(r runResult) float64 { return r.cpu })
			collapsed := 0
			for _, r := range runs {
				if r.goodput() < capacity/2 && mult >= 1 {
					collapsed++
				}
			}
			mark := ""
			if collapsed > 0 {
				mark = fmt.Sprintf(" COLLAPSE %d/%d", collapsed, len(runs))
			}
			fmt.Printf(" | %6.0f/s p99 %-8s %.2f vCPU%s", g, p99.Round(100*time.Microsecond), cpu, mark)
			peak[j] = max(peak[j], g)
			if mult == 2 {
				at2[j] = g
			}
		}
		fmt.Println()
	}
	for j, s := range systems {
		if at2[j] > 0 {
			fmt.Printf("  %s: goodput at 2x is %.0f%% of its peak (target for rampart with shipping on: at least 90%%)\n", s.name, 100*at2[j]/peak[j])
		}
	}
	if len(systems) >= 2 {
		// Shipping's cost: the pair with shipping on (its proxies and the
		// server, which ingests) against the pair without, at 1x.
		for si, mult := range steps {
			if mult != 1 {
				continue
			}
			off := med(table[si][0].runs, func(r runResult) float64 { return r.cpu })
			on := med(table[si][1].runs, func(r runResult) float64 { return r.cpu })
			fmt.Printf("  shipping's cost at 1x: %.2f vCPU with shipping (proxies and server) vs %.2f without: %.2fx (target: at most 1.2x)\n", on, off, on/off)
		}
	}
	return nil
}
