package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The app-bound overload curve (--overload-app WORKERS:SERVICE): an app
// that answers WORKERS/SERVICE requests a second, each at least SERVICE
// after it came, without using the CPU (a database call, say), the rest
// waiting their turn. Its capacity is below what the proxies' CPU
// sustains, so the curve measures how a pair sheds what its app cannot
// serve (the common overload), not the machine's CPU.

var overApp = flag.String("overload-app", "", "WORKERS:SERVICE, e.g. 8:2ms: the overload curve's pairs front an app answering WORKERS/SERVICE requests a second, each at least SERVICE after it came (not CPU), the rest queued, instead of nginx's; the pairs' capacity is then the app's")

// slowAppEnv carries "ADDR WORKERS SERVICE" to the re-executed bench
// binary that serves the slow app.
const slowAppEnv = "RAMPART_BENCH_SLOW_APP"

// parseSlowApp reads --overload-app.
func parseSlowApp(s string) (workers int, service time.Duration, err error) {
	w, d, ok := strings.Cut(s, ":")
	if ok {
		workers, err = strconv.Atoi(w)
	}
	if !ok || err != nil || workers < 1 {
		return 0, 0, fmt.Errorf("--overload-app %q: want WORKERS:SERVICE, e.g. 8:2ms", s)
	}
	if service, err = time.ParseDuration(d); err != nil || service <= 0 {
		return 0, 0, fmt.Errorf("--overload-app %q: want WORKERS:SERVICE, e.g. 8:2ms", s)
	}
	return workers, service, nil
}

// startSlowApp runs this binary again, on the systems' CPUs, as the slow
// app listening on addr.
func startSlowApp(addr string, workers int, service time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %s", slowAppEnv, addr, workers, service))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	procs = append(procs, cmd)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := check("http://" + addr + "/"); err == nil {
			return nil
		}
	}
	return errors.New("the slow app did not start")
}

// serveSlowApp is the slow app's process.
func serveSlowApp(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q", slowAppEnv, spec)
	}
	workers, service, err := parseSlowApp(f[1] + ":" + f[2])
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f[0])
	if err != nil {
		return err
	}
	body := []byte(strings.Repeat("x", 1024))
	// Each answer is given a slot on an absolute schedule: no sooner than
	// SERVICE after its request came, and at least SERVICE/WORKERS after
	// the previous answer's slot, so the app serves WORKERS/SERVICE a
	// second whatever waits in its queue. A timer that fires late (the CPU
	// busy with the proxies) delays that one answer, not the next ones:
	// the app's capacity, the curve's reference, does not fall as the load
	// rises (with WORKERS goroutines each sleeping SERVICE, it fell by a
	// fifth at 2x on one CPU).
	var mu sync.Mutex
	var last time.Time
	gap := service / time.Duration(workers)
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		slot := time.Now().Add(service)
		if next := last.Add(gap); next.After(slot) {
			slot = next
		}
		last = slot
		mu.Unlock()
		t := time.NewTimer(time.Until(slot))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // the caller left: no answer to write
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}))
}
