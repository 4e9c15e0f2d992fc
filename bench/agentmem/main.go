// Command agentmem measures a rampart agent with many registration entries
// parented to it, of which only a few have a workload on the host: its
// anonymous memory (RssAnon in /proc/PID/status), the SVIDs it holds, and
// how long the first FetchX509SVID of a newly registered workload takes.
// Run it through bench/agentmem.sh; pass an older binary to compare.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/bench/internal/benchserver"
	"github.com/rampartsec/rampart/internal/api"
)

func main() {
	bin := flag.String("rampart", "bench/out/rampart", "rampart binary")
	n := flag.Int("entries", 1000, "entries parented to the agent, for workloads not on the host")
	firsts := flag.Int("firsts", 20, "newly registered workloads whose first fetch is timed")
	batch := flag.Int("batch", 0, "register the entries in batches of this many (/v1/entries/batch/create, as `rampart entry create --file` and bench/spire.sh do); 0: all in one batch; 1: one call per entry (the agent syncs the growing list thousands of times)")
	flag.Parse()
	if err := run(*bin, *n, *firsts, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "agentmem:", err)
		os.Exit(1)
	}
}

// cache is the part of the agent's cache.json that says what it holds.
type cache struct {
	Entries   []api.Entry                `json:"entries"`
	Workloads map[string]json.RawMessage `json:"workloads"`
}

func readCache(dir string) (cache, error) {
	var c cache
	b, err := os.ReadFile(filepath.Join(dir, "cache.json"))
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	return c, err
}

// rssAnon reads the process's anonymous memory now (RssAnon) and at its
// peak (VmHWM, which counts file-backed pages too).
func rssAnon(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var anon, hwm string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			anon = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			hwm = strings.TrimSpace(v)
		}
	}
	if anon == "" {
		return "", fmt.Errorf("no RssAnon in /proc/%d/status", pid)
	}
	return anon + " (VmHWM " + hwm + ")", nil
}

func run(bin string, n, firsts, batch int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "rampart-agentmem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := benchserver.Start(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	admin := srv.Admin
	var jt api.CreateJoinTokenResponse
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "node"}, &jt); err != nil {
		return err
	}
	sock := filepath.Join(dir, "agent.sock")
	data := filepath.Join(dir, "agent")
	agent := exec.CommandContext(ctx, bin, "agent", "--server", srv.Addr, "--ca-bundle", filepath.Join(dir, "server", "bundle.pem"),
		"--socket", sock, "--data", data, "--log-level", "warn")
	agent.Env = append(os.Environ(), "RAMPART_JOIN_TOKEN="+jt.Token)
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(os.Interrupt); agent.Wait() }()

	// n entries for workloads that are not on this host (uids nobody runs).
	absent := func(i int) api.Entry {
		return api.Entry{SpiffeID: "spiffe://example.org/absent/" + strconv.Itoa(i), ParentID: jt.AgentID, Selectors: []string{"unix:uid:" + strconv.Itoa(20000+i)}}
	}
	t0 := time.Now()
	if batch != 1 {
		if batch <= 0 {
			batch = n
		}
		for lo := 0; lo < n; lo += batch {
			var b api.EntryBatch
			for i := lo; i < min(lo+batch, n); i++ {
				b.Entries = append(b.Entries, absent(i))
			}
			if err := admin.Do(ctx, http.MethodPost, "/v1/entries/batch/create", b, nil); err != nil {
				return err
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := admin.Do(ctx, http.MethodPost, "/v1/entries", absent(i), nil); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		if batch != 1 {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	created := time.Since(t0)
	// Settled: every entry synced, and the number of SVIDs held unchanged
	// for 3 s (an agent that mints for every entry takes a while).
	var c cache
	held, stable := -1, time.Now()
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			return fmt.Errorf("agent did not settle: %d entries, %d SVIDs", len(c.Entries), len(c.Workloads))
		}
		if c, err = readCache(data); err != nil || len(c.Entries) < n {
			continue
		}
		if len(c.Workloads) != held {
			held, stable = len(c.Workloads), time.Now()
			continue
		}
		if time.Since(stable) > 3*time.Second {
			break
		}
	}
	rss, err := rssAnon(agent.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("agent with %d entries (created in %v), no workload present: %d SVIDs held, RssAnon %s\n", n, created.Round(time.Millisecond), held, rss)

	// New workloads, one at a time: register (this process's uid), wait
	// until the agent has the entry, then time its first fetch.
	var lat []time.Duration
	for i := range firsts {
		id := "spiffe://example.org/new/" + strconv.Itoa(i)
		sel := []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:gid:" + strconv.Itoa(os.Getgid())}
		if i%2 == 1 {
			sel = sel[:1]
		}
		if err := admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: jt.AgentID, Selectors: sel}, nil); err != nil {
			return err
		}
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			c, err := readCache(data)
			if err == nil && slices.ContainsFunc(c.Entries, func(e api.Entry) bool { return e.SpiffeID == id }) {
				break
			}
			if time.Now().After(end) {
				return fmt.Errorf("the agent never received entry %s", id)
			}
		}
		// Until the SVID is there: an agent that mints in the background
		// may not have it at the first ask.
		start := time.Now()
		for end := start.Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+sock))
			if err == nil && slices.ContainsFunc(svids, func(s *x509svid.SVID) bool { return s.ID.String() == id }) {
				break
			}
			if time.Now().After(end) {
				return fmt.Errorf("no SVID for %s: %v", id, err)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	c, _ = readCache(data)
	rss, _ = rssAnon(agent.Process.Pid)
	fmt.Printf("first FetchX509SVID of %d newly registered workloads (new client each, entry already synced): p50 %v max %v; then %d SVIDs held, RssAnon %s\n",
		firsts, lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(c.Workloads), rss)
	return nil
}
