// Command dataplane measures rampart proxy against direct HTTP and against
// an nginx mTLS pair, all on loopback, with real processes: a server, an
// agent, two proxies (client side and app side), nginx (Debian) as the app
// and as the comparison. Run it through bench/dataplane.sh.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

var (
	bin        = flag.String("rampart", "bench/out/rampart", "rampart binary")
	dur        = flag.Duration("duration", 10*time.Second, "each wrk run (bounded to 60s)")
	conns      = flag.Int("connections", 64, "wrk connections")
	rate       = flag.Int("rate", 1000, "requests/s for the latency run")
	latDur     = flag.Duration("latency-duration", 10*time.Second, "latency run length (bounded to 60s)")
	rounds     = flag.Int("rounds", 3, "wrk rounds, each running direct, rampart pair and nginx pair in turn; the ratio reported is the median (this shared 2-core VM varies by 20-30% between runs)")
	profile    = flag.Bool("profile", false, "take CPU profiles of both proxies during the rampart pair's wrk run (bench/out/proxy-{app,client}.pprof)")
	pin        = flag.String("pin", "", "GEN:SYSTEMS: run the load generators (this process, wrk) on the CPUs GEN and everything measured (server, agent, proxies, nginx, the app) on SYSTEMS, as taskset lists, e.g. 0:1; as deployed, callers do not share the measured machine's CPUs (default: everything shares every CPU)")
	genProfile = flag.String("generator-profile", "", "write a CPU profile of this process (the load generator) to this file")
	workDir    string
)

// pinnedEnv marks the process re-executed on the generator's CPUs.
const pinnedEnv = "RAMPART_BENCH_PINNED"

func main() {
	flag.Parse()
	if spec := os.Getenv(slowAppEnv); spec != "" {
		fatal(serveSlowApp(spec))
	}
	if *pin != "" {
		gen, sys, ok := strings.Cut(*pin, ":")
		if !ok || gen == "" || sys == "" {
			fatal(fmt.Errorf("--pin %q: want GEN:SYSTEMS CPU lists, e.g. 0:1", *pin))
		}
		if os.Getenv(pinnedEnv) == "" {
			// Re-executed under taskset, so that every thread of this
			// process (the generator) starts on GEN's CPUs.
			ts, err := exec.LookPath("taskset")
			if err != nil {
				fatal(fmt.Errorf("--pin needs taskset (util-linux): %w", err))
			}
			self, err := os.Executable()
			if err != nil {
				fatal(err)
			}
			env := append(os.Environ(), pinnedEnv+"=1")
			fatal(syscall.Exec(ts, append([]string{"taskset", "-c", gen, self}, os.Args[1:]...), env))
		}
		sysCPUs = sys
	}
	if *genProfile != "" {
		f, err := os.Create(*genProfile)
		if err != nil {
			fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	*dur = min(*dur, time.Minute)
	*latDur = min(*latDur, time.Minute)
	var err error
	if workDir, err = os.MkdirTemp("", "rampart-dp-bench"); err != nil {
		fatal(err)
	}
	defer os.RemoveAll(workDir)
	if err := run(); err != nil {
		cleanup()
		fatal(err)
	}
	cleanup()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

var procs []*exec.Cmd

func cleanup() {
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { procs[i].Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			procs[i].Process.Kill()
		}
	}
}

// sysCPUs, if set (--pin), is where the measured processes run.
var sysCPUs string

// command runs path on sysCPUs if --pin says so (taskset execs it: the
// PID is the program's).
func command(path string, args ...string) *exec.Cmd {
	if sysCPUs == "" {
		return exec.Command(path, args...)
	}
	return exec.Command("taskset", append([]string{"-c", sysCPUs, path}, args...)...)
}

func start(path string, env []string, args ...string) (*exec.Cmd, error) {
	return startLogged(filepath.Base(path)+"-"+args[0], path, env, args...)
}

// startLogged starts a process whose output goes to workDir/NAME.log.
func startLogged(name, path string, env []string, args ...string) (*exec.Cmd, error) {
	cmd := command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, _ := os.Create(filepath.Join(workDir, name+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	procs = append(procs, cmd)
	return cmd, nil
}

func waitFile(path string) (string, error) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b), nil
		}
	}
	return "", fmt.Errorf("%s did not appear", path)
}

func freePort() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func run() error {
	ctx := context.Background()
	srvDir := filepath.Join(workDir, "server")
	srvCmd, err := start(*bin, []string{"RAMPART_READY_FILE=" + filepath.Join(workDir, "srv.ready")}, "server", "--data", srvDir,
		"--listen", "127.0.0.1:0", "--trust-domain", "example.org", "--log-level", "warn")
	if err != nil {
		return err
	}
	addr, err := waitFile(filepath.Join(workDir, "srv.ready"))
	if err != nil {
		return err
	}
	addr = strings.TrimSpace(addr)
	tok, _ := os.ReadFile(filepath.Join(srvDir, "admin.token"))
	pem, _ := os.ReadFile(filepath.Join(srvDir, "bundle.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	admin := &api.Client{BaseURL: "https://" + addr, AdminToken: strings.TrimSpace(string(tok)),
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}}
	var jt api.CreateJoinTokenResponse
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "bench"}, &jt); err != nil {
		return err
	}
	sock := filepath.Join(workDir, "agent.sock")
	if _, err := start(*bin, []string{"RAMPART_JOIN_TOKEN=" + jt.Token}, "agent", "--server", addr, "--ca-bundle", filepath.Join(srvDir, "bundle.pem"),
		"--socket", sock, "--data", filepath.Join(workDir, "agent"), "--log-level", "warn"); err != nil {
		return err
	}
	// Two identities, each a copy of the binary at its own path.
	exe := map[string]string{}
	for _, name := range []string{"client", "app"} {
		p := filepath.Join(workDir, name+"-rampart")
		b, _ := os.ReadFile(*bin)
		os.WriteFile(p, b, 0o755)
		exe[name] = p
		e := api.Entry{SpiffeID: "spiffe://example.org/" + name, ParentID: jt.AgentID, DNSNames: []string{name + ".local"},
			Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + p}}
		if err := admin.Do(ctx, http.MethodPost, "/v1/entries", e, nil); err != nil {
			return err
		}
	}
	policy := "service: spiffe://example.org/app\nrules:\n  - name: client\n    callers: [spiffe://example.org/client]\n    methods: [GET, POST]\n    paths: [/*]\n"
	if err := admin.DoRaw(ctx, http.MethodPut, "/v1/policies", "application/yaml", []byte(policy), nil); err != nil {
		return err
	}
	// SVID files for nginx, fetched as each identity.
	for _, name := range []string{"client", "app"} {
		var out []byte
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if out, err = exec.Command(exe[name], "svid", "fetch", "--socket", sock, "--write", filepath.Join(workDir, name+"-svid"), "--timeout", "2s").CombinedOutput(); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("svid fetch %s: %v %s", name, err, out)
		}
	}
	// nginx: the app, and an mTLS pair in front of it.
	appAddr, ngIn, ngOut := freePort(), freePort(), freePort()
	// The pairs' upstreams: nginx's app, or with --overload-app a slow app
	// for each system (a shared one carried a collapsed system's backlog,
	// thousands of abandoned requests, into the next system's run).
	ups := [3]string{appAddr, appAddr, appAddr} // rampart off, on, nginx
	if *overload && *overApp != "" {
		workers, service, err := parseSlowApp(*overApp)
		if err != nil {
			return err
		}
		for i := range ups {
			ups[i] = freePort()
			if err := startSlowApp(ups[i], workers, service); err != nil {
				return err
			}
		}
	}
	nginxPair, err := startNginx(appAddr, ups[2], ngIn, ngOut)
	if err != nil {
		return err
	}
	// rampart pair.
	pprofAddr := map[string]string{"app": freePort(), "client": freePort()}
	pprofArgs := func(name string) []string {
		if !*profile {
			return nil
		}
		return []string{"--metrics-listen", pprofAddr[name], "--pprof"}
	}
	ready := filepath.Join(workDir, "app.ready")
	if _, err := start(exe["app"], []string{"RAMPART_READY_FILE=" + ready}, append([]string{"proxy", "--socket", sock, "--server", addr,
		"--inbound", "127.0.0.1:0", "--app", appAddr, "--log-level", "warn"}, pprofArgs("app")...)...); err != nil {
		return err
	}
	s, err := waitFile(ready)
	if err != nil {
		return err
	}
	rIn := strings.Split(s, "\n")[0]
	ready = filepath.Join(workDir, "client.ready")
	if _, err := start(exe["client"], []string{"RAMPART_READY_FILE=" + ready}, append([]string{"proxy", "--socket", sock, "--server", addr,
		"--outbound", "127.0.0.1:0=" + rIn + ",spiffe://example.org/app", "--log-level", "warn"}, pprofArgs("client")...)...); err != nil {
		return err
	}
	if s, err = waitFile(ready); err != nil {
		return err
	}
	rOut := strings.Split(strings.TrimRight(s, "\n"), "\n")[1]
	for _, u := range []string{"http://" + appAddr + "/", "http://" + rOut + "/", "http://" + ngOut + "/"} {
		if err := check(u); err != nil {
			return err
		}
	}
	if *overload {
		return overloadCurve(sock, addr, ups[:2], exe, ngOut, nginxPair, srvCmd.Process.Pid)
	}

	fmt.Printf("machine: %d cores (%s); wrk -t2 -c%d -d%s, 1 KiB responses, keep-alive; %d rounds\n", numCPU(), pinning(), *conns, *dur, *rounds)
	var ratios []float64
	for round := 1; round <= *rounds; round++ {
		results := map[string]wrkResult{}
		for _, c := range []struct{ name, url string }{{"direct", "http://" + appAddr + "/"}, {"rampart pair", "http://" + rOut + "/"}, {"nginx pair", "http://" + ngOut + "/"}} {
			var profiles sync.WaitGroup
			if *profile && c.name == "rampart pair" && round == 1 {
				for name, a := range pprofAddr {
					profiles.Go(func() { saveProfile(a, filepath.Join("bench", "out", "proxy-"+name+".pprof"), *dur-time.Second) })
				}
			}
			r, err := wrk(c.url)
			profiles.Wait()
			if err != nil {
				return err
			}
			results[c.name] = r
			fmt.Printf("  round %d  %-13s %8.0f req/s  p50 %-9s p99 %s\n", round, c.name, r.rps, r.p50, r.p99)
		}
		ratio := results["rampart pair"].rps / results["nginx pair"].rps
		ratios = append(ratios, ratio)
		fmt.Printf("  round %d  rampart/nginx requests/s ratio: %.2f\n", round, ratio)
	}
	slices.Sort(ratios)
	fmt.Printf("  rampart/nginx requests/s ratio, median of %d rounds: %.2f (range %.2f-%.2f)\n", len(ratios), ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])

	// Latency at a fixed rate with 1 KiB request bodies, and proxy cost.
	// Direct, rampart-pair and nginx-pair requests take turns in one open
	// loop, each at --rate, so all see the same machine: the difference of
	// quantiles is the pair's, not the noise between separate runs.
	pids := []int{procByExe(exe["app"]), procByExe(exe["client"])}
	cpu0, appCPU0, ngCPU0 := cpuTicks(pids), cpuTicks(pids[:1]), cpuTicks(nginxPair)
	t0 := time.Now()
	var lowProfiles sync.WaitGroup
	if *profile {
		for name, a := range pprofAddr {
			lowProfiles.Go(func() {
				saveProfile(a, filepath.Join("bench", "out", "proxy-"+name+"-1000rps.pprof"), *latDur-time.Second)
			})
		}
	}
	all := openLoop("http://"+appAddr+"/", "http://"+rOut+"/", "http://"+ngOut+"/")
	lowProfiles.Wait()
	secs := time.Since(t0).Seconds()
	cpu := float64(cpuTicks(pids)-cpu0) / 100 / secs
	appCPU := float64(cpuTicks(pids[:1])-appCPU0) / 100 / secs
	ngCPU := float64(cpuTicks(nginxPair)-ngCPU0) / 100 / secs
	direct, through, ng := all[0], all[1], all[2]
	rss, anon, file, peak := rssKB(pids, "VmRSS"), rssKB(pids, "RssAnon"), rssKB(pids, "RssFile"), rssKB(pids, "VmHWM")
	ngRSS := rssKB(nginxPair, "VmRSS")
	fmt.Printf("open loop %d req/s to each of direct, the rampart pair and the nginx pair, interleaved, for %s, 1 KiB POST bodies and responses:\n", *rate, *latDur)
	fmt.Printf("  direct        p50 %-9s p99 %-9s (%d errors)\n", direct.q(.5), direct.q(.99), direct.errors)
	fmt.Printf("  rampart pair  p50 %-9s p99 %-9s (%d errors)\n", through.q(.5), through.q(.99), through.errors)
	fmt.Printf("  nginx pair    p50 %-9s p99 %-9s (%d errors)\n", ng.q(.5), ng.q(.99), ng.errors)
	fmt.Printf("  added by the rampart pair: p50 %s, p99 %s; by the nginx pair: p50 %s, p99 %s\n",
		through.q(.5)-direct.q(.5), through.q(.99)-direct.q(.99), ng.q(.5)-direct.q(.5), ng.q(.99)-direct.q(.99))
	per := 1000 / float64(*rate)
	mb := func(kb int64) float64 { return float64(kb) / 1024 / 2 }
	fmt.Printf("  cost per 1,000 req/s: rampart pair %.3f vCPU (app-side proxy, which logs its decisions without shipping them: shipping is measured by --overload, %.3f; client side %.3f), nginx pair %.3f vCPU (%d workers)\n",
		cpu*per, appCPU*per, (cpu-appCPU)*per, ngCPU*per, len(nginxPair))
	fmt.Printf("  memory: rampart RSS %.1f MB per proxy (%.1f MB anonymous: heap, stacks, buffers; %.1f MB the binary's file pages, shared by every process running the same file; peak %.1f MB); nginx pair workers %.1f MB each\n",
		mb(rss), mb(anon), mb(file), mb(peak), float64(ngRSS)/1024/float64(max(1, len(nginxPair))))

	// New mTLS handshakes/s: the rampart inbound proxy vs a raw crypto/tls server.
	cert, err := tls.LoadX509KeyPair(filepath.Join(workDir, "client-svid", "svid.pem"), filepath.Join(workDir, "client-svid", "svid.key"))
	if err != nil {
		return err
	}
	rampartHS := handshakes(rIn, cert)
	raw, stop, err := rawTLSServer(pool)
	if err != nil {
		return err
	}
	rawHS := handshakes(raw, cert)
	stop()
	fmt.Printf("new mTLS handshakes/s (TLS 1.3, ECDSA P-256, 4 clients): rampart inbound %.0f, raw crypto/tls server %.0f, ratio %.2f\n", rampartHS, rawHS, rampartHS/rawHS)
	return nil
}

// overloadCurve starts two rampart pairs in front of apps[0] and apps[1]
// (the same app but with --overload-app), the second with its decisions
// spooled and shipped to the server's audit log, and runs the overload
// curve on them and the nginx pair.
func overloadCurve(sock, server string, apps []string, exe map[string]string, ngOut string, nginxPair []int, serverPID int) error {
	extra := strings.Fields(*overProxyArgs)
	// With --profile, each proxy serves /metrics and /debug/pprof/ on an
	// address of its own, printed here, for goroutine dumps under load.
	debugArgs := func(tag, side string) []string {
		if !*profile {
			return nil
		}
		a := freePort()
		fmt.Printf("%s pair, %s proxy: http://%s/metrics, /debug/pprof/\n", tag, side, a)
		return []string{"--metrics-listen", a, "--pprof"}
	}
	pair := func(tag, name, appAddr string, inboundArgs ...string) (system, error) {
		ready := filepath.Join(workDir, tag+"-app.ready")
		in, err := startLogged(tag+"-app-proxy", exe["app"], []string{"RAMPART_READY_FILE=" + ready}, append(append(append([]string{"proxy", "--socket", sock, "--server", server,
			"--inbound", "127.0.0.1:0", "--app", appAddr, "--log-level", "warn"}, inboundArgs...), extra...), debugArgs(tag, "inbound")...)...)
		if err != nil {
			return system{}, err
		}
		s, err := waitFile(ready)
		if err != nil {
			return system{}, err
		}
		rIn := strings.Split(s, "\n")[0]
		ready = filepath.Join(workDir, tag+"-client.ready")
		out, err := startLogged(tag+"-client-proxy", exe["client"], []string{"RAMPART_READY_FILE=" + ready}, append([]string{"proxy", "--socket", sock, "--server", server,
			"--outbound", "127.0.0.1:0=" + rIn + ",spiffe://example.org/app", "--log-level", "warn"}, append(extra, debugArgs(tag, "outbound")...)...)...)
		if err != nil {
			return system{}, err
		}
		if s, err = waitFile(ready); err != nil {
			return system{}, err
		}
		u := "http://" + strings.Split(strings.TrimRight(s, "\n"), "\n")[1] + "/"
		if err := check(u); err != nil {
			return system{}, err
		}
		// The server is counted with both pairs: with shipping it ingests
		// the decisions, without it is idle but for the policy sync.
		return system{name: name, url: u, pids: []int{in.Process.Pid, out.Process.Pid, serverPID}}, nil
	}
	off, err := pair("off", "rampart, shipping off", apps[0])
	if err != nil {
		return err
	}
	on, err := pair("on", "rampart, shipping on", apps[1], "--data", filepath.Join(workDir, "shipping-data"))
	if err != nil {
		return err
	}
	fmt.Printf("machine: %d cores (%s); rampart pairs with %q; nginx pair with %d workers\n", numCPU(), pinning(), *overProxyArgs, len(nginxPair))
	return runOverload([]system{off, on, {name: "nginx pair", url: "http://" + ngOut + "/", pids: nginxPair}})
}

// pinning says where the generator and the systems run.
func pinning() string {
	if sysCPUs == "" {
		return "generator and systems share them"
	}
	gen, _, _ := strings.Cut(*pin, ":")
	return "generator on CPUs " + gen + ", systems on CPUs " + sysCPUs
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func check(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) != 1024 {
		return fmt.Errorf("%s: %d, %d bytes: %.200s", u, resp.StatusCode, len(b), b)
	}
	return nil
}

// startNginx starts two nginx instances: the app (1 KiB answers) and, in
// a process of its own so its cost can be measured apart, an mTLS pair in
// front of upAddr (that app, or --overload-app's) configured as the
// rampart pair is. It returns the pair's worker PIDs. Every listener has
// the accept queue Go's listeners have (net.Listen asks for
// net.core.somaxconn, 4096 here): nginx's default is
// 511, and under the overload curve's connection bursts its queue
// overflowed (the kernel's ListenOverflows counter) where the rampart
// pairs' did not, each dropped SYN costing its caller a 1 s retransmit.
func startNginx(appAddr, upAddr, inAddr, outAddr string) ([]int, error) {
	body := strings.Repeat("x", 1024)
	common := `worker_processes 2;
pid %[1]s/nginx-%[2]s.pid;
error_log %[1]s/nginx-%[2]s-error.log warn;
events { worker_connections 16384; }
`
	app := fmt.Sprintf(common+`http {
  access_log off;
  server { listen %[3]s backlog=4096; location / { default_type text/plain; return 200 "%[4]s"; } }
}
`, workDir, "app", appAddr, body)
	pair := fmt.Sprintf(common+`http {
  access_log off;
  upstream app { server %[3]s; keepalive 128; }
  upstream mtls { server %[4]s; keepalive 128; }
  server {
    listen %[4]s ssl backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate %[1]s/app-svid/svid.pem; ssl_certificate_key %[1]s/app-svid/svid.key;
    ssl_client_certificate %[1]s/app-svid/bundle.pem; ssl_verify_client on; ssl_verify_depth 3;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen %[5]s backlog=4096;
    location / {
      proxy_pass https://mtls; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate %[1]s/client-svid/svid.pem; proxy_ssl_certificate_key %[1]s/client-svid/svid.key;
      proxy_ssl_trusted_certificate %[1]s/client-svid/bundle.pem; proxy_ssl_verify on; proxy_ssl_verify_depth 3;
      proxy_ssl_name app.local; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
    }
  }
}
`, workDir, "pair", upAddr, inAddr, outAddr)
	var pairWorkers []int
	for _, inst := range []struct{ name, conf, probe string }{{"app", app, appAddr}, {"pair", pair, outAddr}} {
		path := filepath.Join(workDir, "nginx-"+inst.name+".conf")
		if err := os.WriteFile(path, []byte(inst.conf), 0o600); err != nil {
			return nil, err
		}
		cmd := command("nginx", "-c", path, "-g", "daemon off;")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
		up := false
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !up; time.Sleep(50 * time.Millisecond) {
			if c, err := net.Dial("tcp", inst.probe); err == nil {
				c.Close()
				up = true
			}
		}
		if !up {
			return nil, fmt.Errorf("nginx (%s) did not start: %s", inst.name, errb.String())
		}
		if inst.name == "pair" {
			pairWorkers = childrenOf(cmd.Process.Pid)
		}
	}
	return pairWorkers, nil
}

// childrenOf lists the PIDs whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			k, _ := strconv.Atoi(e.Name())
			kids = append(kids, k)
		}
	}
	return kids
}

type wrkResult struct {
	rps      float64
	p50, p99 string
}

func wrk(u string) (wrkResult, error) {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(*conns), "-d"+dur.String(), "--latency", u).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v %s", u, err, out)
	}
	var r wrkResult
	if m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := regexp.MustCompile(`\s50%\s+(\S+)`).FindSubmatch(out); m != nil {
		r.p50 = string(m[1])
	}
	if m := regexp.MustCompile(`\s99%\s+(\S+)`).FindSubmatch(out); m != nil {
		r.p99 = string(m[1])
	}
	if regexp.MustCompile(`Non-2xx`).Match(out) {
		return r, fmt.Errorf("wrk %s: non-2xx answers:\n%s", u, out)
	}
	return r, nil
}

type latencies struct {
	d      []time.Duration
	errors int64
}

func (l latencies) q(p float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	return l.d[int(p*float64(len(l.d)-1))].Round(time.Microsecond)
}

// openLoop sends requests at a fixed rate, whatever the answers' latency,
// so slow answers show up as latency rather than as a lower rate.
// openLoop sends 1 KiB POSTs at --rate to each of urls, taking turns, for
// --latency-duration, and returns each url's latencies.
func openLoop(urls ...string) []latencies {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	body := bytes.Repeat([]byte("y"), 1024)
	interval := time.Second / time.Duration(*rate*len(urls))
	n := int(latDur.Seconds()*float64(*rate)) * len(urls)
	var mu sync.Mutex
	errs := make([]atomic.Int64, len(urls))
	lat := make([][]time.Duration, len(urls))
	var wg sync.WaitGroup
	next := time.Now()
	for i := range n {
		next = next.Add(interval)
		time.Sleep(time.Until(next))
		k := i % len(urls)
		wg.Go(func() {
			t0 := time.Now()
			resp, err := client.Post(urls[k], "text/plain", bytes.NewReader(body))
			if err != nil {
				errs[k].Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[k].Add(1)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			lat[k] = append(lat[k], d)
			mu.Unlock()
		})
	}
	wg.Wait()
	out := make([]latencies, len(urls))
	for k := range urls {
		slices.Sort(lat[k])
		out[k] = latencies{d: lat[k], errors: errs[k].Load()}
	}
	return out
}

func procByExe(path string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	return 0
}

func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	return total
}

// rssKB sums a /proc/PID/status field (VmRSS, RssAnon, RssFile, VmHWM)
// over pids, in kB.
func rssKB(pids []int, field string) int64 {
	re := regexp.MustCompile(field + `:\s+(\d+)`)
	var total int64
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if m := re.FindSubmatch(b); m != nil {
			kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
			total += kb
		}
	}
	return total
}

// handshakes counts full mTLS handshakes/s (no session resumption).
func handshakes(addr string, cert tls.Certificate) float64 {
	var n atomic.Int64
	end := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			cfg := &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
			for time.Now().Before(end) {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
				if err != nil {
					continue
				}
				c.Close()
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / 5
}

// rawTLSServer is the ceiling: crypto/tls with the same key type, TLS 1.3,
// client certificates required and verified, nothing else.
func rawTLSServer(pool *x509.CertPool) (string, func(), error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(workDir, "app-svid", "svid.pem"), filepath.Join(workDir, "app-svid", "svid.key"))
	if err != nil {
		return "", nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.SetReadDeadline(time.Now().Add(time.Second))
				c.Read(make([]byte, 1))
				c.Close()
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }, nil
}

// saveProfile fetches a CPU profile of d from a proxy's pprof endpoint.
func saveProfile(addr, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(path, b, 0o644)
}
