// Command spirebench measures Rampart and SPIRE v1.13.3 side by side on one
// host, each as a real server and agent process (SQLite, join token,
// Workload API on a unix socket), in alternating rounds:
//
//   - bulk registration of N entries from one file: `rampart entry create
//     --file` against `spire-server entry create -data` (SPIRE's CLI sends
//     the whole file in one BatchCreateEntry call);
//   - propagation of a new entry: from the create call to a go-spiffe
//     watcher on the Workload API receiving the new SVID; SPIRE with its
//     default intervals (agent sync 5s, server entry cache reload 5s) and
//     with both set to --spire-fast-interval;
//   - FetchX509SVID calls/s and p99 at 1 and 16 concurrent go-spiffe
//     clients, with the N entries registered;
//   - server and agent memory (RssAnon and VmHWM from /proc/PID/status)
//     with the N entries registered, all parented to the agent.
//
// Run it through bench/spire.sh, which builds the binaries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rampart, spireServer, spireAgent string
	entries, rounds, propagations    int
	callers                          []int
	fetchFor, settle, fastInterval   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.rampart, "rampart", "bench/out/rampart", "rampart binary")
	flag.StringVar(&o.spireServer, "spire-server", "bench/spire/bin/spire-server", "spire-server binary (v1.13.3)")
	flag.StringVar(&o.spireAgent, "spire-agent", "bench/spire/bin/spire-agent", "spire-agent binary (v1.13.3)")
	flag.IntVar(&o.entries, "entries", 10000, "entries registered in bulk, parented to the agent")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds; each runs rampart, SPIRE (default intervals), SPIRE (fast intervals), in that order")
	flag.IntVar(&o.propagations, "propagations", 5, "new entries whose propagation is timed, per system and round")
	callers := flag.String("callers", "1,16", "concurrent FetchX509SVID callers, comma-separated")
	flag.DurationVar(&o.fetchFor, "fetch-duration", 5*time.Second, "FetchX509SVID load per caller count (at most 30s)")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "how long the agent's memory must stay flat before it is read")
	flag.DurationVar(&o.fastInterval, "spire-fast-interval", time.Second, "SPIRE's agent sync_interval and server cache_reload_interval for the fast setting")
	timeout := flag.Duration("timeout", 30*time.Minute, "the whole run stops after this")
	flag.Parse()
	for f := range strings.SplitSeq(*callers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 256 {
			fmt.Fprintf(os.Stderr, "spirebench: --callers: %q is not a count from 1 to 256\n", f)
			os.Exit(2)
		}
		o.callers = append(o.callers, n)
	}
	o.fetchFor = min(o.fetchFor, 30*time.Second)
	if o.entries < 1 || o.rounds < 1 || o.propagations < 1 {
		fmt.Fprintln(os.Stderr, "spirebench: --entries, --rounds and --propagations must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "spirebench:", err)
		os.Exit(1)
	}
}

// result is one system's figures in one round.
type result struct {
	system     string
	register   time.Duration
	propagate  []time.Duration
	fetch      map[int]fetchStats // by callers
	serverMem  memory
	agentMem   memory
	agentSVIDs string // what the agent holds, where it says
}

func run(ctx context.Context, o options) error {
	fmt.Printf("entries %d, rounds %d, propagations %d, callers %v, fetch %v; load average %s\n",
		o.entries, o.rounds, o.propagations, o.callers, o.fetchFor, loadavg())
	var all []result
	for r := range o.rounds {
		for _, sys := range []string{"rampart", "spire", "spire-fast"} {
			fmt.Printf("== round %d: %s (load average %s)\n", r+1, sys, loadavg())
			res, err := oneRun(ctx, o, sys)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, sys, err)
			}
			all = append(all, res)
		}
	}
	summarize(all, o)
	return nil
}

// oneRun starts one system, measures it and stops it.
func oneRun(ctx context.Context, o options, sys string) (res result, err error) {
	res = result{system: sys, fetch: map[int]fetchStats{}}
	dir, err := os.MkdirTemp("", "spirebench-"+sys)
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: failed; its data and logs are kept in %s\n", sys, dir)
			return
		}
		os.RemoveAll(dir)
	}()
	var s system
	switch sys {
	case "rampart":
		s, err = startRampart(ctx, o.rampart, dir)
	case "spire":
		s, err = startSPIRE(ctx, o.spireServer, o.spireAgent, dir, 0)
	case "spire-fast":
		s, err = startSPIRE(ctx, o.spireServer, o.spireAgent, dir, o.fastInterval)
	}
	if err != nil {
		return res, err
	}
	defer s.stop()

	// Bulk registration: N entries for workloads that are not on this host.
	file, err := writeEntryFile(dir, s.agentID(), o.entries)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := s.bulkCreate(ctx, file, o.entries); err != nil {
		return res, fmt.Errorf("bulk registration: %w", err)
	}
	res.register = time.Since(t0)
	fmt.Printf("%s: registered %d entries in one file: %v (%.0f entries/s)\n", sys, o.entries, res.register.Round(time.Millisecond), float64(o.entries)/res.register.Seconds())

	// A workload of this process: one entry for its uid, and wait until
	// the agent serves it (so the N entries are synced too).
	self := []selector{{"unix", "uid:" + strconv.Itoa(os.Getuid())}}
	probe := "spiffe://example.org/bench/probe"
	t0 = time.Now()
	if err := s.createEntry(ctx, probe, self); err != nil {
		return res, err
	}
	if err := waitFetch(ctx, s.socket(), probe, 2*time.Minute); err != nil {
		return res, err
	}
	fmt.Printf("%s: probe entry created after the %d: served after %v\n", sys, o.entries, time.Since(t0).Round(time.Millisecond))

	if sys != "spire-fast" {
		if res.agentMem, err = settledMemory(ctx, s.agentPID(), o.settle); err != nil {
			return res, err
		}
		if res.serverMem, err = readMemory(s.serverPID()); err != nil {
			return res, err
		}
		res.agentSVIDs = s.held()
		fmt.Printf("%s: with %d entries: server %v; agent %v%s\n", sys, o.entries, res.serverMem, res.agentMem, res.agentSVIDs)
		for _, c := range o.callers {
			st, err := fetchLoad(ctx, s.socket(), probe, c, o.fetchFor)
			if err != nil {
				return res, fmt.Errorf("FetchX509SVID at %d callers: %w", c, err)
			}
			res.fetch[c] = st
			fmt.Printf("%s: FetchX509SVID, %d callers: %v\n", sys, c, st)
		}
	}

	// Propagation: a watcher holds the probe SVID; each new entry for the
	// same workload is created at a random moment (so SPIRE's sync timers
	// are met at every phase) and timed until the watcher receives it.
	w, err := startWatch(ctx, s.socket())
	if err != nil {
		return res, err
	}
	defer w.stop()
	if err := w.wait(ctx, probe, time.Now(), time.Minute); err != nil {
		return res, err
	}
	for i := range o.propagations {
		sleep(ctx, time.Duration(rand.Int64N(int64(5*time.Second))))
		id := "spiffe://example.org/bench/new/" + strconv.Itoa(i)
		t0 := time.Now()
		if err := s.createEntry(ctx, id, self); err != nil {
			return res, err
		}
		if err := w.wait(ctx, id, t0, 2*time.Minute); err != nil {
			return res, err
		}
		res.propagate = append(res.propagate, w.seen(id).Sub(t0))
	}
	fmt.Printf("%s: propagation of a new entry to a watching workload: %v\n", sys, durations(res.propagate))
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

var errTimeout = errors.New("timed out")
