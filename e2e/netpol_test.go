package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/netpol/netnstest"
)

// tcpListen accepts on addr forever, answering "ok" (an application that
// listens beyond loopback, as applications do).
func tcpListen(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		c.Write([]byte("ok"))
		c.Close()
	}
}

// tcpDial exits 0 when a TCP connection to addr opens.
func tcpDial(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 700*time.Millisecond)
	if err != nil {
		return 1
	}
	c.Close()
	return 0
}

// netnsHost runs rampart processes in one lab namespace.
type netnsLab struct {
	*netnstest.Lab
	t *testing.T
}

func (l netnsLab) start(ns string, bin string, env []string, args ...string) *proc {
	l.t.Helper()
	return startBin(l.t, "ip", env, append([]string{"netns", "exec", ns, bin}, args...)...)
}

func (l netnsLab) cli(env []string, args ...string) string {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Hub(), rampartBin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		l.t.Fatalf("rampart %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func (l netnsLab) connects(i int, addr string) bool {
	cmd := exec.Command("ip", "netns", "exec", l.NS(i), os.Args[0])
	cmd.Env = append(os.Environ(), "RAMPART_E2E_HELPER=tcp-dial", "RAMPART_E2E_ADDR="+addr)
	return cmd.Run() == nil
}

// Three hosts on a bridge, each with an agent enforcing its network policy
// and a proxied service: orders (h1), payments (h2, its application on
// 8080 behind its proxy on 8443), batch (h3). Only orders may call
// payments. The allowed host connects to payments' proxy, the others
// cannot even open a connection, nobody reaches the application around
// its proxy; a policy change reaches the host within seconds; an agent
// that stops leaves no rule of ours behind.
func TestNetpolEnforcedAcrossHosts(t *testing.T) {
	lab := netnsLab{Lab: netnstest.New(t, 3, true), t: t}
	root := t.TempDir()
	dir := filepath.Join(root, "server")
	ready := filepath.Join(dir, "ready")
	srv := lab.start(lab.Hub(), rampartBin, []string{"RAMPART_READY_FILE=" + ready},
		"server", "--data", dir, "--listen", lab.HubAddr().String()+":0", "--trust-domain", "example.org")
	s := &server{proc: srv, dir: dir, addr: strings.TrimSpace(waitFile(t, srv, ready))}
	env := s.adminEnv()

	names := []string{"", "orders", "payments", "batch"}
	agents := map[int]*proc{}
	for i := 1; i <= 3; i++ {
		adir := filepath.Join(root, fmt.Sprintf("h%d", i))
		os.MkdirAll(adir, 0o700)
		tok := lab.cli(env, "token", "create", "--agent-name", fmt.Sprintf("h%d", i))
		os.WriteFile(filepath.Join(adir, "join-token"), []byte(tok+"\n"), 0o600)
		sock := filepath.Join(adir, "workload.sock")
		agents[i] = lab.start(lab.NS(i), rampartBin, []string{"RAMPART_JOIN_TOKEN_FILE=" + filepath.Join(adir, "join-token")},
			"agent", "--server", s.addr, "--ca-bundle", filepath.Join(dir, "bundle.pem"), "--socket", sock,
			"--data", filepath.Join(adir, "data"), "--netpol", "enforce", "--inventory-interval", "1s")
		eventually(t, 30*time.Second, "agent socket", func() error { _, err := os.Stat(sock); return err })
		// The service's proxy: a copy of rampart, its own identity.
		bin := filepath.Join(adir, names[i]+"-proxy")
		b, _ := os.ReadFile(rampartBin)
		os.WriteFile(bin, b, 0o755)
		lab.cli(env, "entry", "create", "--spiffe-id", "spiffe://example.org/"+names[i], "--parent",
			fmt.Sprintf("spiffe://example.org/rampart/agent/h%d", i), "--selector", myUID(), "--selector", "unix:path:"+bin)
		pready := filepath.Join(adir, "proxy.ready")
		p := lab.start(lab.NS(i), bin, []string{"RAMPART_READY_FILE=" + pready},
			"proxy", "--socket", sock, "--server", s.addr, "--inbound", "0.0.0.0:8443", "--app", "127.0.0.1:8080")
		waitFile(t, p, pready)
	}
	// Payments' application listens on every address, as applications do.
	app := lab.start(lab.NS(2), os.Args[0], []string{"RAMPART_E2E_HELPER=tcp-listen", "RAMPART_E2E_ADDR=0.0.0.0:8080"})
	eventually(t, 10*time.Second, "the application listens", func() error {
		if !strings.Contains(app.out.String(), "listening") {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	policy := func(callers string) {
		f := filepath.Join(root, fmt.Sprintf("payments-%d.yaml", time.Now().UnixNano()))
		os.WriteFile(f, []byte("service: spiffe://example.org/payments\nnetwork:\n  app_ports: [8080, 8081]\nrules:\n- name: callers\n  callers: ["+callers+"]\n"), 0o600)
		lab.cli(env, "policy", "put", f)
	}
	policy("spiffe://example.org/orders")
	pay := func(port string) string { return net.JoinHostPort(lab.Addr(2).String(), port) }
	eventually(t, 30*time.Second, "payments' host enforces its table", func() error {
		if lab.connects(3, pay("8443")) {
			return fmt.Errorf("the batch host still connects to payments' proxy")
		}
		return nil
	})
	if !lab.connects(1, pay("8443")) {
		t.Fatal("orders' host cannot open a connection to payments' proxy")
	}
	for i := 1; i <= 3; i++ {
		if i != 2 && lab.connects(i, pay("8080")) {
			t.Fatalf("host %d reached payments' application around its proxy", i)
		}
	}
	if !lab.connects(2, "127.0.0.1:8080") {
		t.Fatal("payments' proxy cannot reach its application over loopback")
	}
	view := lab.cli(env, "netpol", "view")
	if !strings.Contains(view, "spiffe://example.org/orders -> spiffe://example.org/payments") || !strings.Contains(view, "10.77.0.2:8443") {
		t.Fatalf("netpol view:\n%s", view)
	}
	// What the agent applied is what the server renders.
	cmd := exec.Command("ip", "netns", "exec", lab.NS(2), rampartBin, "netpol", "check", "--host", lab.Addr(2).String())
	cmd.Env = append(os.Environ(), env...)
	// check dials the server from h2 (it reaches the hub over the bridge).
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "in step") {
		t.Fatalf("netpol check on payments' host: %v\n%s", err, out)
	}

	// A policy change reaches the host within seconds.
	changed := time.Now()
	policy("spiffe://example.org/orders, spiffe://example.org/batch")
	eventually(t, 15*time.Second, "the policy change reaches payments' host", func() error {
		if !lab.connects(3, pay("8443")) {
			return fmt.Errorf("the batch host still cannot connect")
		}
		return nil
	})
	t.Logf("policy change to rule applied on the host: %v", time.Since(changed).Round(10*time.Millisecond))

	// Attacks from a foothold on payments' host.
	//
	// A workload in a network namespace of its own (as unshare -Urn gives
	// any user) listens on 2222, which a real service of the host also
	// listens on: the port must not be governed (closed) because of it.
	lab.start(lab.NS(2), os.Args[0], []string{"RAMPART_E2E_HELPER=tcp-listen", "RAMPART_E2E_ADDR=0.0.0.0:2222"})
	cadir := filepath.Join(root, "contained")
	os.MkdirAll(cadir, 0o700)
	cbin := filepath.Join(cadir, "contained-proxy")
	b, _ := os.ReadFile(rampartBin)
	os.WriteFile(cbin, b, 0o755)
	lab.cli(env, "entry", "create", "--spiffe-id", "spiffe://example.org/contained", "--parent", "spiffe://example.org/rampart/agent/h2",
		"--selector", myUID(), "--selector", "unix:path:"+cbin)
	cready := filepath.Join(cadir, "proxy.ready")
	cp := startBin(t, "ip", []string{"RAMPART_READY_FILE=" + cready}, "netns", "exec", lab.NS(2), "unshare", "-n", "--", cbin,
		"proxy", "--socket", filepath.Join(root, "h2", "workload.sock"), "--server", "", "--inbound", "0.0.0.0:2222", "--app", "127.0.0.1:9")
	waitFile(t, cp, cready)
	eventually(t, 15*time.Second, "the contained workload placed", func() error {
		if v := lab.cli(env, "netpol", "view"); !strings.Contains(v, "spiffe://example.org/contained") {
			return fmt.Errorf("not yet:\n%s", v)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // the host's next table (a policy-free refresh)
	if !lab.connects(3, pay("2222")) {
		t.Fatal("a workload in its own network namespace got the host's port 2222 closed")
	}
	if v := lab.cli(env, "netpol", "view"); strings.Contains(v, ":2222") {
		t.Fatalf("a port held in another namespace was placed:\n%s", v)
	}
	// Root on the host deletes our table: the agent puts it back, and
	// says so in the audit log.
	netnstest.Run(t, "ip", "netns", "exec", lab.NS(2), "nft", "delete", "table", "inet", "rampart")
	eventually(t, 15*time.Second, "the agent restores its table", func() error {
		if lab.connects(1, pay("8080")) {
			return fmt.Errorf("the application is reachable around its proxy")
		}
		return nil
	})
	// Probing three governed ports from the batch host (orders' host is
	// allowed at 8443, so the probe is from a host that is not):
	// the port-scan rule raises an alert, through the agent's spool and
	// the server's intake.
	lab.connects(3, pay("8080"))
	lab.connects(3, pay("8081"))
	policy("spiffe://example.org/orders") // close 8443 to batch again
	eventually(t, 15*time.Second, "8443 closed to batch again", func() error {
		if lab.connects(3, pay("8443")) {
			return fmt.Errorf("still open")
		}
		return nil
	})
	for range 3 {
		lab.connects(3, pay("8443"))
		lab.connects(3, pay("8080"))
		lab.connects(3, pay("8081"))
	}
	eventually(t, 30*time.Second, "the netpol-port-scan alert", func() error {
		out := lab.cli(env, "alert", "list")
		if !strings.Contains(out, "netpol-port-scan") {
			return fmt.Errorf("no alert yet:\n%s", out)
		}
		return nil
	})
	out := lab.cli(nil, "audit", "query", "--data", dir, "--action", "netpol.drift")
	if !strings.Contains(out, "netpol.drift") {
		t.Fatalf("the repair is not in the audit log:\n%s", out)
	}

	// Stopping the agent leaves no rules of ours behind.
	agents[2].stop()
	tables, err := exec.Command("ip", "netns", "exec", lab.NS(2), "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.Contains(string(tables), "rampart") {
		t.Fatalf("after the agent stopped: %v\n%s", err, tables)
	}
}
