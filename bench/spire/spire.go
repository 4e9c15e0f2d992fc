package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

type spireSystem struct {
	serverBin, dir, serverSock, agentSock, adminSock, id string
	server, agent                                        *exec.Cmd
	conn, adminConn                                      *grpc.ClientConn
	entries                                              entryv1.EntryClient
}

// The configurations follow SPIRE's conf/server/server.conf and
// conf/agent/agent.conf: SQLite datastore, join token attestation, unix
// workload attestor; keys on disk, as Rampart keeps them.
const spireServerConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = "%s"
    trust_domain = "example.org"
    data_dir = "%s"
    log_level = "WARN"
%s}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "%s"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "%s"
        }
    }
}
`

const spireAgentConf = `agent {
    data_dir = "%s"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = "%s"
    admin_socket_path = "%s"
    trust_bundle_path = "%s"
    trust_domain = "example.org"
%s}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "%s"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`

// startSPIRE runs spire-server and spire-agent; with interval > 0 the
// agent's sync_interval and the server's entry cache_reload_interval are
// set to it (SPIRE's documented knobs for propagation; both default to 5s)
// and the server uses its events-based entry cache, so that a short
// reload interval reads only what changed.
func startSPIRE(ctx context.Context, serverBin, agentBin, dir string, interval time.Duration) (_ *spireSystem, err error) {
	s := &spireSystem{serverBin: serverBin, dir: dir}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for _, d := range []string{"server", "agent", "public", "private", "admin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.serverSock = filepath.Join(dir, "private", "server.sock")
	s.agentSock = filepath.Join(dir, "public", "agent.sock")
	s.adminSock = filepath.Join(dir, "admin", "admin.sock")
	var serverExp, agentExp string
	if interval > 0 {
		serverExp = fmt.Sprintf("    experimental {\n        cache_reload_interval = %q\n        events_based_cache = true\n    }\n", interval)
		agentExp = fmt.Sprintf("    experimental {\n        sync_interval = %q\n    }\n", interval)
	}
	sdata := filepath.Join(dir, "server")
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, spireServerConf, port, s.serverSock, sdata, serverExp,
		filepath.Join(sdata, "datastore.sqlite3"), filepath.Join(sdata, "keys.json")), 0o600); err != nil {
		return nil, err
	}
	// SPIRE logs each refused Workload API call (the probe's polling)
	// at error level: its output goes to files in dir.
	s.server = command(ctx, serverBin, "run", "-config", conf)
	if err := logTo(s.server, filepath.Join(dir, "spire-server.log")); err != nil {
		return nil, err
	}
	if err := s.server.Start(); err != nil {
		return nil, err
	}
	// Ready when it answers on its socket: then take its bundle.
	bundle := filepath.Join(dir, "bundle.pem")
	for end := time.Now().Add(60 * time.Second); ; sleep(ctx, 100*time.Millisecond) {
		out, err := exec.CommandContext(ctx, serverBin, "bundle", "show", "-socketPath", s.serverSock).Output()
		if err == nil && len(out) > 0 {
			if err := os.WriteFile(bundle, out, 0o600); err != nil {
				return nil, err
			}
			break
		}
		if ctx.Err() != nil || time.Now().After(end) {
			return nil, fmt.Errorf("spire-server did not answer on %s: %v", s.serverSock, err)
		}
	}
	out, err := exec.CommandContext(ctx, serverBin, "token", "generate", "-socketPath", s.serverSock, "-ttl", "600").Output()
	if err != nil {
		return nil, fmt.Errorf("spire-server token generate: %w", err)
	}
	// "Token: VALUE", then a warning that no SPIFFE ID was given.
	first, _, _ := strings.Cut(string(out), "\n")
	token, ok := strings.CutPrefix(strings.TrimSpace(first), "Token: ")
	if !ok {
		return nil, fmt.Errorf("spire-server token generate said %q", out)
	}
	s.id = "spiffe://example.org/spire/agent/join_token/" + token
	aconf := filepath.Join(dir, "agent.conf")
	adata := filepath.Join(dir, "agent")
	if err := os.WriteFile(aconf, fmt.Appendf(nil, spireAgentConf, adata, port, s.agentSock, s.adminSock, bundle, agentExp, adata), 0o600); err != nil {
		return nil, err
	}
	s.agent = command(ctx, agentBin, "run", "-config", aconf, "-joinToken", token)
	if err := logTo(s.agent, filepath.Join(dir, "spire-agent.log")); err != nil {
		return nil, err
	}
	if err := s.agent.Start(); err != nil {
		return nil, err
	}
	if s.conn, err = grpc.NewClient("unix://"+s.serverSock, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, err
	}
	s.entries = entryv1.NewEntryClient(s.conn)
	if err := waitPath(ctx, s.agentSock, 60*time.Second); err != nil {
		return nil, err
	}
	if err := waitPath(ctx, s.adminSock, 10*time.Second); err != nil {
		return nil, err
	}
	s.adminConn, err = grpc.NewClient("unix://"+s.adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	return s, err
}

func (s *spireSystem) agentID() string { return s.id }
func (s *spireSystem) socket() string  { return "unix://" + s.agentSock }
func (s *spireSystem) serverPID() int  { return s.server.Process.Pid }
func (s *spireSystem) agentPID() int   { return s.agent.Process.Pid }

var spireCreatedRE = regexp.MustCompile(`(?m)^Entry ID\s*:`)

// bulkCreate runs `spire-server entry create -data FILE`: the CLI reads
// the file and sends all of its entries in one BatchCreateEntry call.
func (s *spireSystem) bulkCreate(ctx context.Context, file string, n int) error {
	out, err := exec.CommandContext(ctx, s.serverBin, "entry", "create", "-socketPath", s.serverSock, "-data", file).Output()
	if err != nil {
		return fmt.Errorf("spire-server entry create -data: %w: %.300s", err, out)
	}
	// It prints each entry created; count them, and ask the server.
	if got := len(spireCreatedRE.FindAllIndex(out, -1)); got != n {
		return fmt.Errorf("spire-server entry create printed %d entries, not %d: %.300s", got, n, out)
	}
	c, err := s.entries.CountEntries(ctx, &entryv1.CountEntriesRequest{})
	if err != nil {
		return err
	}
	if int(c.Count) != n {
		return fmt.Errorf("spire-server has %d entries, not %d", c.Count, n)
	}
	return nil
}

func (s *spireSystem) createEntry(ctx context.Context, id string, sels []selector) error {
	e := &types.Entry{SpiffeId: spiffeID(id), ParentId: spiffeID(s.id)}
	for _, sel := range sels {
		e.Selectors = append(e.Selectors, &types.Selector{Type: sel.Type, Value: sel.Value})
	}
	resp, err := s.entries.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		return err
	}
	if st := resp.Results[0].Status; st.Code != int32(codes.OK) {
		return fmt.Errorf("spire-server refused entry %s: %s", id, st.Message)
	}
	return nil
}

func spiffeID(s string) *types.SPIFFEID {
	rest, _ := strings.CutPrefix(s, "spiffe://")
	td, path, _ := strings.Cut(rest, "/")
	return &types.SPIFFEID{TrustDomain: td, Path: "/" + path}
}

// held asks the agent's admin API (debug GetInfo) how many X.509-SVIDs
// it caches.
func (s *spireSystem) held() string {
	if s.adminConn == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := debugv1.NewDebugClient(s.adminConn).GetInfo(ctx, &debugv1.GetInfoRequest{})
	if err != nil {
		return " (GetInfo: " + err.Error() + ")"
	}
	return fmt.Sprintf(" (%d X.509-SVIDs cached)", info.CachedX509SvidsCount)
}

func (s *spireSystem) stop() {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.adminConn != nil {
		s.adminConn.Close()
	}
	stopProcess(s.agent)
	stopProcess(s.server)
}

// logTo sends a child's output to a new file in the run's directory
// (kept when the run fails).
func logTo(cmd *exec.Cmd, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	return nil
}
