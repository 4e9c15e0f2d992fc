package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/bench/internal/benchserver"
	"github.com/rampartsec/rampart/internal/api"
)

type rampartSystem struct {
	bin, dir, agentData, sock, id string
	srv                           *benchserver.Server
	agent                         *exec.Cmd
}

// startRampart runs `rampart server` (SQLite) and `rampart agent` joined
// with a join token, as bench/identity does.
func startRampart(ctx context.Context, bin, dir string) (_ *rampartSystem, err error) {
	r := &rampartSystem{bin: bin, dir: dir}
	if r.srv, err = benchserver.Start(ctx, bin, dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	var jt api.CreateJoinTokenResponse
	if err := r.srv.Admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: "node"}, &jt); err != nil {
		return nil, err
	}
	r.id = jt.AgentID
	r.sock = filepath.Join(dir, "agent-socket", "agent.sock")
	r.agentData = filepath.Join(dir, "agent")
	if err := os.MkdirAll(filepath.Dir(r.sock), 0o700); err != nil {
		return nil, err
	}
	r.agent = command(ctx, bin, "agent", "--server", r.srv.Addr, "--ca-bundle", filepath.Join(r.srv.DataDir, "bundle.pem"),
		"--socket", r.sock, "--data", r.agentData, "--log-level", "warn")
	r.agent.Env = append(os.Environ(), "RAMPART_JOIN_TOKEN="+jt.Token)
	if err := r.agent.Start(); err != nil {
		return nil, err
	}
	return r, waitPath(ctx, r.sock, 30*time.Second)
}

func (r *rampartSystem) agentID() string { return r.id }
func (r *rampartSystem) socket() string  { return "unix://" + r.sock }
func (r *rampartSystem) serverPID() int  { return r.srv.PID() }
func (r *rampartSystem) agentPID() int   { return r.agent.Process.Pid }

var createdRE = regexp.MustCompile(`(?m)^created (\d+) entries$`)

func (r *rampartSystem) bulkCreate(ctx context.Context, file string, n int) error {
	cmd := exec.CommandContext(ctx, r.bin, "entry", "create", "--file", file, "--server", r.srv.Addr,
		"--ca-bundle", filepath.Join(r.srv.DataDir, "bundle.pem"), "--admin-token-file", filepath.Join(r.srv.DataDir, "admin.token"))
	cmd.Env = append(os.Environ(), "HOME="+r.dir, "XDG_CONFIG_HOME="+r.dir)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("rampart entry create --file: %w", err)
	}
	m := createdRE.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("rampart entry create --file said no count: %.200q", out)
	}
	if got, _ := strconv.Atoi(string(m[1])); got != n {
		return fmt.Errorf("rampart created %d entries, not %d", got, n)
	}
	return nil
}

func (r *rampartSystem) createEntry(ctx context.Context, id string, sels []selector) error {
	e := api.Entry{SpiffeID: id, ParentID: r.id}
	for _, s := range sels {
		e.Selectors = append(e.Selectors, s.Type+":"+s.Value)
	}
	return r.srv.Admin.Do(ctx, http.MethodPost, "/v1/entries", e, nil)
}

// held reads the agent's cache.json: the entries it has and the SVIDs it
// holds.
func (r *rampartSystem) held() string {
	var c struct {
		Entries   []json.RawMessage          `json:"entries"`
		Workloads map[string]json.RawMessage `json:"workloads"`
	}
	b, err := os.ReadFile(filepath.Join(r.agentData, "cache.json"))
	if err != nil || json.Unmarshal(b, &c) != nil {
		return ""
	}
	return fmt.Sprintf(" (%d entries, %d SVIDs held)", len(c.Entries), len(c.Workloads))
}

func (r *rampartSystem) stop() {
	stopProcess(r.agent)
	if r.srv != nil {
		r.srv.Stop()
	}
}
