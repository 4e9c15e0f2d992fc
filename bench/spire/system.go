package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// system is a running server and agent of one product.
type system interface {
	agentID() string
	// bulkCreate registers the entries of file (SPIRE's entry JSON) with
	// the product's CLI, in one command, and checks that n were created.
	bulkCreate(ctx context.Context, file string, n int) error
	// createEntry registers one entry through the server's API.
	createEntry(ctx context.Context, spiffeID string, sels []selector) error
	socket() string // Workload API address, unix://PATH
	serverPID() int
	agentPID() int
	held() string // what the agent says it holds, if it says
	stop()
}

type selector struct{ Type, Value string }

// writeEntryFile writes n entries parented to parent in the JSON of
// `spire-server entry create -data`, which `rampart entry create --file`
// reads too: workloads by uid that are not on this host.
func writeEntryFile(dir, parent string, n int) (string, error) {
	type sel struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	type entry struct {
		SpiffeID  string `json:"spiffe_id"`
		ParentID  string `json:"parent_id"`
		Selectors []sel  `json:"selectors"`
	}
	es := make([]entry, n)
	for i := range es {
		es[i] = entry{SpiffeID: "spiffe://example.org/absent/" + strconv.Itoa(i), ParentID: parent,
			Selectors: []sel{{"unix", "uid:" + strconv.Itoa(20000+i)}}}
	}
	b, err := json.Marshal(map[string]any{"entries": es})
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "entries.json")
	return p, os.WriteFile(p, b, 0o600)
}

// command is exec.CommandContext for a child that is interrupted when ctx
// ends and killed if this process dies first.
func command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

// stopProcess interrupts a child and waits for it.
func stopProcess(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitPath waits until path exists.
func waitPath(ctx context.Context, path string, d time.Duration) error {
	for end := time.Now().Add(d); ; sleep(ctx, 20*time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s did not appear within %v", path, d)
		}
	}
}

// memory is what /proc/PID/status says of a process, in kB.
type memory struct{ rssAnon, hwm int }

func (m memory) String() string {
	return fmt.Sprintf("RssAnon %.1f MB, VmHWM %.1f MB", float64(m.rssAnon)/1024, float64(m.hwm)/1024)
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "RssAnon":
			m.rssAnon = kb
		case "VmHWM":
			m.hwm = kb
		}
	}
	if m.rssAnon == 0 {
		return m, fmt.Errorf("no RssAnon in /proc/%d/status", pid)
	}
	return m, sc.Err()
}

// settledMemory reads a process's memory once its RssAnon has stayed
// within 2% for settle (an agent may still be minting SVIDs), at most 2
// minutes.
func settledMemory(ctx context.Context, pid int, settle time.Duration) (memory, error) {
	m, err := readMemory(pid)
	if err != nil {
		return m, err
	}
	ref, since := m.rssAnon, time.Now()
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end) && ctx.Err() == nil; sleep(ctx, 250*time.Millisecond) {
		if m, err = readMemory(pid); err != nil {
			return m, err
		}
		if d := m.rssAnon - ref; d*50 > ref || -d*50 > ref {
			ref, since = m.rssAnon, time.Now()
		}
		if time.Since(since) >= settle {
			return m, nil
		}
	}
	return m, fmt.Errorf("memory of process %d did not settle: %w", pid, errTimeout)
}
