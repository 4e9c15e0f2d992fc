package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/workload"
)

// fakeProc writes a /proc entry for pid: its start time, one socket
// descriptor and a tcp table in which that socket listens on port.
func fakeProc(t *testing.T, proc string, pid, start string, port string) {
	t.Helper()
	dir := filepath.Join(proc, pid)
	os.MkdirAll(filepath.Join(dir, "fd"), 0o755)
	os.MkdirAll(filepath.Join(dir, "net"), 0o755)
	os.WriteFile(filepath.Join(dir, "stat"), []byte(pid+" (evil) prog) S 1 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 "+start+" 1000 100\n"), 0o644)
	os.Remove(filepath.Join(dir, "fd", "3"))
	os.Symlink("socket:[4242]", filepath.Join(dir, "fd", "3"))
	os.WriteFile(filepath.Join(dir, "net", "tcp"), []byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+
		"   0: 0200000A:"+port+" 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n"), 0o644)
}

// The tracker reports the services of the processes it handed SVIDs to,
// with their listening ports; a process that exits, or whose pid is
// reused by another, is forgotten (the new process never inherits the
// old one's placement).
func TestPlacementTracker(t *testing.T) {
	proc := t.TempDir()
	fakeProc(t, proc, "100", "5000", "20FB") // 8443
	tr := newPlacementTracker(nil, proc)
	orders := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/orders")}
	tr.Inspect(context.Background(), workload.Executable{PID: 100}, []workload.Identity{orders})
	rep := tr.report()
	if len(rep.Services) != 1 || rep.Services[0].SpiffeID != "spiffe://example.org/orders" || len(rep.Services[0].Ports) != 1 || rep.Services[0].Ports[0] != 8443 {
		t.Fatalf("report %+v", rep)
	}
	// pid 100 is reused by another process (another start time).
	fakeProc(t, proc, "100", "9000", "0016")
	if rep := tr.report(); len(rep.Services) != 0 {
		t.Fatalf("a reused pid kept the old placement: %+v", rep)
	}
	// Gone.
	fakeProc(t, proc, "101", "7000", "20FB")
	tr.Inspect(context.Background(), workload.Executable{PID: 101}, []workload.Identity{orders})
	os.RemoveAll(filepath.Join(proc, "101"))
	if rep := tr.report(); len(rep.Services) != 0 {
		t.Fatalf("an exited process is still placed: %+v", rep)
	}
	// A caller refused every identity is not placed.
	fakeProc(t, proc, "102", "7000", "20FB")
	tr.Inspect(context.Background(), workload.Executable{PID: 102}, nil)
	if rep := tr.report(); len(rep.Services) != 0 {
		t.Fatalf("placed without an identity: %+v", rep)
	}
}

func TestProcStartParsesCommWithParens(t *testing.T) {
	proc := t.TempDir()
	fakeProc(t, proc, "7", "123456", "20FB")
	if s, err := procStart(proc, 7); err != nil || s != "123456" {
		t.Fatalf("%q %v", s, err)
	}
	os.WriteFile(filepath.Join(proc, "7", "stat"), []byte("7 (x) S 1"), 0o644)
	if _, err := procStart(proc, 7); err == nil {
		t.Fatal("a short stat was accepted")
	}
}
