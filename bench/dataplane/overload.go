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
	"os"
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
	overCapConns  = flag.Int("overload-capacity-conns", 64, "connections of the closed-loop capacity runs")
	overCapOnly   = flag.Bool("overload-capacity-only", false, "measure every system's capacity (closed loop, --overload-capacity-conns) and stop")
	overWarm      = flag.Int("overload-warm", 64, "connections the generator opens before each open-loop run and leaves idle, as a caller's pool in steady state (64: what the capacity run needs)")
	overTick      = flag.Duration("overload-tick", time.Second, "the timeline's step")
	overTimeline  = flag.Bool("overload-timeline", false, "print each run's timeline, a line a second: answers, timeouts, dials, requests in flight and waiting in the generator")
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
	began                                time.Time       // wall clock, to match a run with the systems' logs
	lat                                  []time.Duration // of the 200s, from their scheduled time
	cpu                                  float64         // vCPU of the system's processes over the run
	dials                                int             // connections the generator dialled (reconnections included)
	genCPU                               float64         // vCPU of the generator itself over the run
	late                                 []time.Duration // how late each request was handed to a connection, after its scheduled time
	kernel                               tcpCounters     // the kernel's TCP counters over the run (whole machine)
	dialTime                             []time.Duration // how long each of the generator's dials took
	timeline                             []tick          // a second each, by scheduled time
	host                                 []hostSample    // the host monitor's samples, a tick apart
	hostNames                            map[int]string  // the other processes it watched
}

// hostTick returns the host samples around the timeline's tick i: the
// monitor ticks from before the run's start, so the nearest are taken.
func (r runResult) hostTick(i int) (a, b hostSample, ok bool) {
	from := r.began.Add(time.Duration(i) * *overTick)
	k, _ := slices.BinarySearchFunc(r.host, from, func(s hostSample, t time.Time) int { return s.at.Compare(t) })
	if k > 0 && from.Sub(r.host[k-1].at) < r.host[min(k, len(r.host)-1)].at.Sub(from) {
		k--
	}
	if k+1 >= len(r.host) {
		return a, b, false
	}
	return r.host[k], r.host[k+1], true
}

// tick is one step (--overload-tick) of a run, by the requests' scheduled time (dials and
// the high-water marks by wall time).
type tick struct {
	ok, shed, failed, dials int
	lat                     []time.Duration // of the 200s
	inFlight, waiting       int             // high-water marks: requests on the wire, requests waiting for a connection of the generator
}

func (r runResult) printTimeline() {
	for i, t := range r.timeline {
		slices.Sort(t.lat)
		host := ""
		if a, b, ok := r.hostTick(i); ok {
			host = "  | " + hostLine(a, b, hostProbe, r.hostNames)
		}
		fmt.Printf("        t=%-6s  200 %6d  503 %5d  failed %6d  dials %5d  p50 %-9s p99 %-9s  in flight %4d  waiting in the generator %6d%s\n",
			(time.Duration(i) * *overTick).String(), t.ok, t.shed, t.failed, t.dials, quantile(t.lat, .5).Round(time.Millisecond), quantile(t.lat, .99).Round(time.Millisecond), t.inFlight, t.waiting, host)
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[int(q*float64(len(d)-1))]
}

// tcpCounters are the kernel's TCP counters (/proc/net/snmp, netstat)
// that tell a connection regime apart: connections opened, accept queues
// overflowing (the SYN or the handshake's last ACK dropped: the client
// retries after 1 s, then 3 s), segments retransmitted.
type tcpCounters struct {
	activeOpens, listenOverflows, listenDrops, retrans, synCookies, resets int64
}

func (a tcpCounters) sub(b tcpCounters) tcpCounters {
	return tcpCounters{a.activeOpens - b.activeOpens, a.listenOverflows - b.listenOverflows, a.listenDrops - b.listenDrops,
		a.retrans - b.retrans, a.synCookies - b.synCookies, a.resets - b.resets}
}

func (a tcpCounters) String() string {
	return fmt.Sprintf("connects %d, accept-queue overflows %d (drops %d), retransmits %d, syncookies %d, resets %d",
		a.activeOpens, a.listenOverflows, a.listenDrops, a.retrans, a.synCookies, a.resets)
}

func readTCPCounters() tcpCounters {
	get := func(file, prefix string) map[string]int64 {
		b, _ := os.ReadFile(file)
		var names []string
		m := map[string]int64{}
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != prefix {
				continue
			}
			if names == nil {
				names = f[1:]
				continue
			}
			for i, v := range f[1:] {
				if i < len(names) {
					m[names[i]], _ = strconv.ParseInt(v, 10, 64)
				}
			}
		}
		return m
	}
	snmp, ext := get("/proc/net/snmp", "Tcp:"), get("/proc/net/netstat", "TcpExt:")
	return tcpCounters{snmp["ActiveOpens"], ext["ListenOverflows"], ext["ListenDrops"], snmp["RetransSegs"], ext["SyncookiesSent"], snmp["OutRsts"]}
}

// selfTicks is this process's CPU time, in clock ticks.
func selfTicks() int64 { return cpuTicks([]int{os.Getpid()}) }

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

// generator is a lean HTTP/1.1 open-loop load generator that connects as
// a caller's connection pool does (Go's http.Transport, for one):
//
//   - a request due goes to the connection that went idle last (so at low
//     load a few connections carry everything);
//   - if none is idle, it waits, and a new connection is dialled for it
//     while there are fewer than conns, but the request goes to whichever
//     connection frees first, the new one or one finishing its request
//     (as http.Transport since Go 1.12: a dial never holds a request that
//     an idle connection could serve). The generator it replaces handed the
//     request to the dialling connection: at the start of each run, while
//     the first dials were in flight, every arrival started one more dial,
//     and each run began with all 1,024 connections opened at once;
//   - a connection whose request timed out is closed (HTTP/1.1 cannot
//     abandon one request and keep the connection), and replaced only when
//     requests wait;
//   - before each open-loop run, warm connections are opened at leisure
//     and left idle, as a caller in steady state has them.
//
// Latency counts from the scheduled time, so a wait for a connection is
// counted (no coordinated omission); a request that waited past the
// timeout fails unsent.
type generator struct {
	host, path string
	conns      int
	capConns   int
	warm       int
	timeout    time.Duration
}

func newGenerator(u string) (*generator, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	return &generator{host: p.Host, path: p.EscapedPath(), conns: *overConns, capConns: *overCapConns, warm: *overWarm, timeout: *overTimeout}, nil
}

// genWorker is one connection of the generator.
type genWorker struct {
	due chan time.Time
	c   net.Conn
	br  *bufio.Reader
}

// run offers rate requests a second for d; rate 0 runs a closed loop of
// capConns connections instead (as fast as answers come: the capacity).
func (g *generator) run(rate float64, d time.Duration) runResult {
	req := []byte("GET " + g.path + " HTTP/1.1\r\nHost: app\r\n\r\n")
	var mu sync.Mutex // guards everything below but req
	var res runResult
	var idle []*genWorker
	var queue []time.Time
	workers, dialing, peak := 0, 0, 0
	var wg sync.WaitGroup
	start := time.Now()
	res.began = start
	res.timeline = make([]tick, int(d / *overTick)+int(3*time.Second / *overTick))
	tickOf := func(t time.Time) *tick {
		return &res.timeline[min(max(0, int(t.Sub(start) / *overTick)), len(res.timeline)-1)]
	}
	inFlight := 0
	record := func(at time.Time, code int, lat time.Duration, err error) {
		t := tickOf(at)
		switch {
		case err != nil:
			res.failed++
			t.failed++
			if errors.Is(err, errGenTimeout) || isTimeout(err) {
				res.timedOut++
			} else if res.firstErr == "" {
				res.firstErr = err.Error()
			}
		case code == 200:
			res.ok++
			res.lat = append(res.lat, lat)
			t.ok++
			t.lat = append(t.lat, lat)
		case code == 503:
			res.overloaded++
			t.shed++
		default:
			res.other++
		}
	}
	dial := func(w *genWorker, counted bool) error {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", g.host, g.timeout)
		if counted {
			mu.Lock()
			res.dials++
			tickOf(t0).dials++
			res.dialTime = append(res.dialTime, time.Since(t0))
			mu.Unlock()
		}
		if err != nil {
			return err
		}
		w.c, w.br = c, bufio.NewReaderSize(c, 4<<10)
		return nil
	}
	// do sends the request scheduled at at on w's connection.
	do := func(w *genWorker, at time.Time) {
		late := time.Since(at)
		mu.Lock()
		res.late = append(res.late, late)
		if late > g.timeout {
			record(at, 0, 0, errGenTimeout)
			mu.Unlock()
			return
		}
		inFlight++
		t := tickOf(time.Now())
		t.inFlight = max(t.inFlight, inFlight)
		mu.Unlock()
		w.c.SetDeadline(at.Add(g.timeout))
		code, keep, err := roundTrip(w.c, w.br, req)
		if !keep {
			w.c.Close()
			w.c = nil
		}
		lat := time.Since(at)
		mu.Lock()
		inFlight--
		res.sent++
		record(at, code, lat, err)
		mu.Unlock()
	}
	var spawn func() // under mu
	// loop runs one connection: dial it if new, then serve the oldest
	// waiting request, or wait idle for one, until it is closed.
	loop := func(w *genWorker) {
		defer func() {
			if w.c != nil {
				w.c.Close()
			}
		}()
		for {
			if w.c == nil {
				err := dial(w, true)
				mu.Lock()
				dialing--
				if err != nil {
					// The oldest waiting request gets the error, as
					// http.Transport gives a failed dial's error to the
					// request it was dialled for.
					workers--
					if len(queue) > 0 {
						at := queue[0]
						queue = queue[1:]
						record(at, 0, 0, err)
					}
					spawn()
					mu.Unlock()
					return
				}
				mu.Unlock()
			}
			mu.Lock()
			var at time.Time
			if len(queue) > 0 {
				at = queue[0]
				queue = queue[1:]
				mu.Unlock()
			} else {
				idle = append(idle, w)
				mu.Unlock()
				var ok bool
				if at, ok = <-w.due; !ok {
					return
				}
			}
			do(w, at)
			if w.c == nil {
				// Closed (timed out): a new connection is dialled
				// only if requests wait, as a pool does.
				mu.Lock()
				workers--
				spawn()
				mu.Unlock()
				return
			}
		}
	}
	// spawn dials new connections while more requests wait than are being
	// dialled for, up to conns.
	spawn = func() {
		for dialing < len(queue) && workers < g.conns {
			workers++
			dialing++
			peak = max(peak, workers)
			w := &genWorker{due: make(chan time.Time, 1)}
			wg.Go(func() { loop(w) })
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
		queue = append(queue, at)
		t := tickOf(at)
		t.waiting = max(t.waiting, len(queue))
		spawn()
		mu.Unlock()
	}
	if rate > 0 {
		// Warm connections, opened one after the other before the clock
		// starts.
		for range g.warm {
			w := &genWorker{due: make(chan time.Time, 1)}
			if dial(w, false) != nil {
				break
			}
			mu.Lock()
			workers++
			peak = max(peak, workers)
			mu.Unlock()
			wg.Go(func() { loop(w) })
		}
		for {
			mu.Lock()
			n := len(idle)
			mu.Unlock()
			if n == workers {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	k0, cpu0 := readTCPCounters(), selfTicks()
	start = time.Now()
	end := start.Add(d)
	if rate == 0 {
		var cl sync.WaitGroup
		for range g.capConns {
			cl.Go(func() {
				w := &genWorker{}
				for time.Now().Before(end) {
					if w.c == nil && dial(w, true) != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					do(w, time.Now())
				}
				if w.c != nil {
					w.c.Close()
				}
			})
		}
		cl.Wait()
		res.offered = res.sent
		peak = g.capConns
	} else {
		// Every request due is handed out, then the loop sleeps until the
		// next is due: a timer wake-up a few hundred microseconds late
		// only batches requests, each keeping its scheduled time. (The
		// loop this replaces slept only when the next request was more
		// than 1 ms away and otherwise spun on the clock: at any rate
		// above 1,000/s it held a CPU, 70% of the generator's profile,
		// and on one CPU it delayed the goroutines reading the answers
		// by up to a scheduler slice, 10 ms, each.)
		interval := time.Duration(float64(time.Second) / rate)
		for next := start; next.Before(end); {
			time.Sleep(time.Until(next))
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
	res.genCPU = float64(selfTicks()-cpu0) / 100 / time.Since(start).Seconds()
	res.kernel = readTCPCounters().sub(k0)
	slices.Sort(res.late)
	slices.Sort(res.dialTime)
	res.secs = d.Seconds()
	res.conns = peak
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

// settle waits, after a run, until every system is idle (together under
// 0.08 vCPU over a quarter second, for at most 20 s), then --overload-pause:
// a system that collapsed can keep the shared CPU busy for seconds after
// its run (its callers' reconnections, its app's backlog), which a fixed
// pause charged to whichever system ran next.
func settle(systems []system) {
	var pids []int
	for _, s := range systems {
		pids = append(pids, s.pids...)
	}
	slices.Sort(pids)
	pids = slices.Compact(pids) // the rampart pairs share the server
	start := time.Now()
	for time.Since(start) < 20*time.Second {
		t0 := cpuTicks(pids)
		time.Sleep(250 * time.Millisecond)
		if cpuTicks(pids)-t0 <= 2 { // clock ticks are 10 ms
			break
		}
	}
	if waited := time.Since(start); waited > time.Second {
		fmt.Printf("        (the systems were busy %s after the run)\n", waited.Round(100*time.Millisecond))
	}
	time.Sleep(*overPause)
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
	// The host monitor's probe runs on the first of the systems' CPUs.
	hostCPUs = parseCPUList(sysCPUs)
	probeCPU := -1
	if len(hostCPUs) > 0 {
		probeCPU = hostCPUs[0]
	}
	hostProbe = startProbe(probeCPU)
	gens := make([]*generator, len(systems))
	for i, s := range systems {
		g, err := newGenerator(s.url)
		if err != nil {
			return err
		}
		gens[i] = g
	}
	if *overCapOnly {
		for round := range *rounds {
			for j, sys := range systems {
				cpu0 := cpuTicks(sys.pids)
				r := gens[j].run(0, *overDur)
				r.cpu = float64(cpuTicks(sys.pids)-cpu0) / 100 / r.secs
				answers := float64(r.ok+r.overloaded+r.other) / r.secs
				fmt.Printf("  round %d %-22s closed loop, %d connections: %.0f/s p50 %s p99 %s, 503 %.0f/s, %.1f µs of the system's CPU per answer, generator %.2f vCPU, system %.2f vCPU, %d dials; kernel: %s\n", round+1, sys.name, *overCapConns, r.goodput(),
					r.p(.5).Round(time.Microsecond), r.p(.99).Round(time.Microsecond), float64(r.overloaded)/r.secs, 1e6*r.cpu/answers, r.genCPU, r.cpu, r.dials, r.kernel)
				settle(systems)
			}
		}
		return nil
	}
	// Capacity: the median of three closed-loop runs of the rampart pair
	// without shipping (64 connections, as the throughput measurement).
	var caps []float64
	for range 3 {
		cpu0 := cpuTicks(systems[0].pids)
		names := startedProcs(systems[0].pids)
		stopWatch := watch(hostCPUs, hostProbe, systems[0].pids, names, *overTick)
		r := gens[0].run(0, *overDur)
		r.cpu = float64(cpuTicks(systems[0].pids)-cpu0) / 100 / r.secs
		host := stopWatch()
		caps = append(caps, r.goodput())
		fmt.Printf("  capacity run: %.0f/s p50 %s p99 %s, generator %.2f vCPU, system %.2f vCPU, %d dials; kernel: %s; host: %s\n", r.goodput(),
			r.p(.5).Round(time.Microsecond), r.p(.99).Round(time.Microsecond), r.genCPU, r.cpu, r.dials, r.kernel, hostLine(host[0], host[len(host)-1], hostProbe, names))
		settle(systems)
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
				names := startedProcs(systems[j].pids)
				stopWatch := watch(hostCPUs, hostProbe, systems[j].pids, names, *overTick)
				r := gens[j].run(rate, *overDur)
				r.cpu = float64(cpuTicks(systems[j].pids)-cpu0) / 100 / r.secs
				r.host, r.hostNames = stopWatch(), names
				table[si][j].runs = append(table[si][j].runs, r)
				fmt.Printf("  %s %.1fx (%6.0f req/s) round %d  %-22s offered %6.0f/s sent %6.0f/s  goodput %6.0f/s  p50 %-9s p99 %-9s  503 %6d  other %5d  failed %6d (timeouts %d)  %4d conns  %.2f vCPU%s\n",
					r.began.Format("15:04:05"), mult, rate, round+1, systems[j].name, float64(r.offered)/r.secs, float64(r.sent)/r.secs, r.goodput(),
					r.p(.5).Round(10*time.Microsecond), r.p(.99).Round(10*time.Microsecond), r.overloaded, r.other, r.failed, r.timedOut, r.conns, r.cpu, firstErr(r))
				fmt.Printf("        generator %.2f vCPU, %d dials (p50 %s, p99 %s, max %s), requests handed out late by p50 %s p99 %s max %s; kernel: %s\n",
					r.genCPU, r.dials, quantile(r.dialTime, .5).Round(time.Microsecond), quantile(r.dialTime, .99).Round(time.Microsecond), quantile(r.dialTime, 1).Round(time.Microsecond),
					quantile(r.late, .5).Round(time.Microsecond), quantile(r.late, .99).Round(time.Microsecond), quantile(r.late, 1).Round(time.Microsecond), r.kernel)
				if n := len(r.host); n > 1 {
					fmt.Printf("        host: %s\n", hostLine(r.host[0], r.host[n-1], hostProbe, r.hostNames))
				}
				if *overTimeline {
					r.printTimeline()
				}
				settle(systems)
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
			fmt.Printf("  %s: goodput at 2x is %.0f%% of its peak, %.0f%% of the measured capacity (target for rampart with shipping on: at least 90%% of its peak)\n", s.name, 100*at2[j]/peak[j], 100*at2[j]/capacity)
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
