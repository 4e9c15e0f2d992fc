package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The host monitor tells a run slowed by the machine from a run slowed by
// the system under test. On a shared VM the host may run other guests on
// our CPUs: that shows as steal in /proc/stat where the hypervisor reports
// it, and otherwise as the same work costing more CPU time (the guest
// charges the time it was descheduled to whatever it was running). So each
// tick it records, for the measured CPUs (--pin's SYSTEMS, or all):
//   - busy and steal, from /proc/stat;
//   - the CPU of the system being measured and of every other process the
//     benchmark started (the server and agent count with the pairs; a
//     process of another system busy during this run is interference);
//   - the probe: a thread pinned to the first measured CPU doing a fixed
//     piece of register-only arithmetic every quarter second, timed by its
//     own thread CPU clock (so waiting for the scheduler is not counted,
//     only the work being slower), as a multiple of its fastest time.

// cpuStat is one CPU set's time in clock ticks (/proc/stat).
type cpuStat struct{ busy, idle, steal int64 }

func readCPUStat(cpus []int) cpuStat {
	b, _ := os.ReadFile("/proc/stat")
	var s cpuStat
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil || (len(cpus) > 0 && !slices.Contains(cpus, n)) {
			continue
		}
		v := make([]int64, 8)
		for i := range v {
			v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		}
		// user nice system idle iowait irq softirq steal
		s.busy += v[0] + v[1] + v[2] + v[5] + v[6]
		s.idle += v[3] + v[4]
		s.steal += v[7]
	}
	return s
}

// parseCPUList reads a taskset list ("1", "0,2", "2-3").
func parseCPUList(s string) []int {
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// probe runs the fixed work on a thread of its own and keeps its times.
type probe struct {
	mu    sync.Mutex
	best  time.Duration
	times []probeTime
}

type probeTime struct {
	at time.Time
	d  time.Duration
}

//go:noinline
func probeWork() uint64 {
	x := uint64(88172645463325252)
	for range 2_000_000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// startProbe starts the probe on cpu (or anywhere, if cpu < 0).
func startProbe(cpu int) *probe {
	p := &probe{}
	go func() {
		runtime.LockOSThread()
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				fmt.Fprintln(os.Stderr, "probe: pinning to CPU", cpu, err)
			}
		}
		for {
			t0 := threadCPU()
			runtime.KeepAlive(probeWork())
			d := threadCPU() - t0
			p.mu.Lock()
			if p.best == 0 || d < p.best {
				p.best = d
			}
			p.times = append(p.times, probeTime{time.Now(), d})
			p.mu.Unlock()
			time.Sleep(250 * time.Millisecond)
		}
	}()
	return p
}

// slowdown is the probe's median time in [from, to) over its best, or 0.
func (p *probe) slowdown(from, to time.Time) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ds []time.Duration
	for _, t := range p.times {
		if !t.at.Before(from) && t.at.Before(to) {
			ds = append(ds, t.d)
		}
	}
	if len(ds) == 0 || p.best == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(p.best)
}

// hostSample is one tick of the monitor.
type hostSample struct {
	at     time.Time
	cpu    cpuStat
	system int64         // the measured system's CPU ticks (cumulative)
	others map[int]int64 // every other process's (cumulative)
}

// procName names a started process for the report: its program and, for
// rampart, its command.
func procName(args []string) string {
	if len(args) > 3 && args[0] == "taskset" { // taskset -c CPUS PROGRAM ARGS...
		args = args[3:]
	}
	if len(args) == 0 {
		return "?"
	}
	n := filepath.Base(args[0])
	switch {
	case len(args) > 1 && strings.Contains(n, "rampart"):
		n += " " + args[1]
	case len(args) > 2 && n == "nginx":
		n += " " + strings.TrimSuffix(filepath.Base(args[2]), ".conf")
	case n == filepath.Base(os.Args[0]):
		n = "slow app"
	}
	return n
}

// startedProcs names every process the benchmark started, with their
// children (nginx's workers), but those in skip.
func startedProcs(skip []int) map[int]string {
	m := map[int]string{}
	for _, c := range procs {
		if c.Process == nil {
			continue
		}
		n := procName(c.Args)
		m[c.Process.Pid] = n
		for _, k := range childrenOf(c.Process.Pid) {
			m[k] = n + " (worker)"
		}
	}
	for _, pid := range skip {
		delete(m, pid)
	}
	return m
}

// watch samples every tick until the returned function is called, which
// returns the samples.
func watch(cpus []int, p *probe, system []int, others map[int]string, tick time.Duration) func() []hostSample {
	var mu sync.Mutex
	var samples []hostSample
	take := func() {
		s := hostSample{at: time.Now(), cpu: readCPUStat(cpus), system: cpuTicks(system), others: map[int]int64{}}
		for pid := range others {
			s.others[pid] = cpuTicks([]int{pid})
		}
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	stop, done := make(chan struct{}), make(chan struct{})
	take()
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				take()
			case <-stop:
				take()
				return
			}
		}
	}()
	return func() []hostSample {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return samples
	}
}

// hostLine says what the machine did between two samples: the measured
// CPUs' busy and steal, the system's CPU, the busiest other process, and
// the probe's slowdown.
func hostLine(a, b hostSample, p *probe, names map[int]string) string {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return ""
	}
	ticks := float64(b.cpu.busy+b.cpu.idle+b.cpu.steal-a.cpu.busy-a.cpu.idle-a.cpu.steal) / 100 / secs // CPUs' worth
	per := func(t int64) float64 { return float64(t) / 100 / secs }
	var other float64
	top, topCPU := "", 0.0
	for pid, t := range b.others {
		c := per(t - a.others[pid])
		other += c
		if c > topCPU {
			top, topCPU = names[pid], c
		}
	}
	s := fmt.Sprintf("CPUs %.2f busy %.2f steal (of %.2f), system %.2f, others %.2f", per(b.cpu.busy-a.cpu.busy), per(b.cpu.steal-a.cpu.steal), ticks, per(b.system-a.system), other)
	if topCPU >= 0.05 {
		s += fmt.Sprintf(" (%s %.2f)", top, topCPU)
	}
	if sl := p.slowdown(a.at, b.at); sl > 0 {
		s += fmt.Sprintf(", probe %.2fx", sl)
	}
	return s
}

// The monitor's setting for the curve: the systems' CPUs and the probe.
var (
	hostCPUs  []int
	hostProbe *probe
)
