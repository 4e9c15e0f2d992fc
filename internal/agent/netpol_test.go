package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/netpol"
	"github.com/rampartsec/rampart/internal/workload"
)

// fakeProc writes a /proc entry for pid: its start time, one socket
// descriptor and a tcp table in which that socket listens on port.
func fakeProc(t *testing.T, proc string, pid, start string, port string) {
	t.Helper()
	dir := filepath.Join(proc, pid)
	os.MkdirAll(filepath.Join(dir, "fd"), 0o755)
	os.MkdirAll(filepath.Join(dir, "net"), 0o755)
	os.MkdirAll(filepath.Join(dir, "ns"), 0o755)
	// The host's namespace is the file proc/hostns; a process "in" it
	// has a hard link to it as ns/net (same device and inode).
	os.Remove(filepath.Join(dir, "ns", "net"))
	if err := os.Link(filepath.Join(proc, "hostns"), filepath.Join(dir, "ns", "net")); err != nil {
		t.Fatal(err)
	}
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
	proc, hostNS := fakeRoot(t)
	fakeProc(t, proc, "100", "5000", "20FB") // 8443
	state := filepath.Join(t.TempDir(), "netpol-processes.json")
	tr := newPlacementTracker(nil, proc, hostNS, []uint16{22}, state, slog.New(slog.DiscardHandler))
	orders := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/orders")}
	tr.Inspect(context.Background(), workload.Executable{PID: 100}, []workload.Identity{orders})
	rep := tr.report()
	if len(rep.Services) != 1 || rep.Services[0].SpiffeID != "spiffe://example.org/orders" || len(rep.Services[0].Ports) != 1 || rep.Services[0].Ports[0] != 8443 {
		t.Fatalf("report %+v", rep)
	}
	// A restarted agent still knows it (an empty first report would open
	// the host's ports until every workload attested again).
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the tracked processes' file: %v %v", fi, err)
	}
	tr2 := newPlacementTracker(nil, proc, hostNS, nil, state, slog.New(slog.DiscardHandler))
	if rep := tr2.report(); len(rep.Services) != 1 {
		t.Fatalf("after a restart: %+v", rep)
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

// fakeRoot is a fake /proc with a host namespace file.
func fakeRoot(t *testing.T) (string, netpol.NetNS) {
	proc := t.TempDir()
	os.WriteFile(filepath.Join(proc, "hostns"), nil, 0o644)
	ns, err := netpol.NetNSOf(filepath.Join(proc, "hostns"))
	if err != nil {
		t.Fatal(err)
	}
	return proc, ns
}

// A workload in a network namespace of its own (unshare -Urn: any user)
// is placed without ports, whatever it listens on there; exempt ports are
// never reported; a service with too many ports is capped, not refused.
func TestPlacementTrackerRefusesWhatIsNotTheHosts(t *testing.T) {
	proc, hostNS := fakeRoot(t)
	tr := newPlacementTracker(nil, proc, hostNS, []uint16{22}, "", slog.New(slog.DiscardHandler))
	batch := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/batch")}
	fakeProc(t, proc, "200", "1", "0016") // 22, in the host namespace: exempt
	tr.Inspect(context.Background(), workload.Executable{PID: 200}, []workload.Identity{batch})
	if rep := tr.report(); len(rep.Services) != 1 || len(rep.Services[0].Ports) != 0 {
		t.Fatalf("an exempt port was reported: %+v", rep)
	}
	fakeProc(t, proc, "201", "1", "20FB") // 8443, but in another namespace
	os.Remove(filepath.Join(proc, "201", "ns", "net"))
	os.WriteFile(filepath.Join(proc, "201", "ns", "net"), nil, 0o644)
	other := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/other")}
	tr.Inspect(context.Background(), workload.Executable{PID: 201}, []workload.Identity{other})
	for _, s := range tr.report().Services {
		if s.SpiffeID == "spiffe://example.org/other" && len(s.Ports) != 0 {
			t.Fatalf("ports of another namespace reported: %+v", s)
		}
	}
	// 70 listening sockets: 64 reported.
	dir := filepath.Join(proc, "202")
	fakeProc(t, proc, "202", "1", "20FB")
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for i := range 70 {
		table += fmt.Sprintf("   %d: 0200000A:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 100 0 0 10 0\n", i, 20000+i, 5000+i)
		os.Symlink(fmt.Sprintf("socket:[%d]", 5000+i), filepath.Join(dir, "fd", fmt.Sprint(10+i)))
	}
	// Every process of a namespace sees the same table (the report reads
	// it once): pid 200's socket stays in it.
	table += "   70: 0200000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n"
	for _, pid := range []string{"200", "202"} {
		os.WriteFile(filepath.Join(proc, pid, "net", "tcp"), []byte(table), 0o644)
	}
	many := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/many")}
	tr.Inspect(context.Background(), workload.Executable{PID: 202}, []workload.Identity{many})
	for _, s := range tr.report().Services {
		if s.SpiffeID == "spiffe://example.org/many" && len(s.Ports) != maxServicePorts {
			t.Fatalf("%d ports reported, want %d", len(s.Ports), maxServicePorts)
		}
	}
}

func TestProcStartParsesCommWithParens(t *testing.T) {
	proc, _ := fakeRoot(t)
	fakeProc(t, proc, "7", "123456", "20FB")
	if s, err := procStart(proc, 7); err != nil || s != "123456" {
		t.Fatalf("%q %v", s, err)
	}
	os.WriteFile(filepath.Join(proc, "7", "stat"), []byte("7 (x) S 1"), 0o644)
	if _, err := procStart(proc, 7); err == nil {
		t.Fatal("a short stat was accepted")
	}
}

// A report reads a process's descriptors again only when the host's
// listening sockets changed, when a process no longer holds one it held,
// or rescanEvery after its last full look: a proxy holding tens of
// thousands of connections must not cost the agent a read of each every
// 2 s. What changes is still seen: at once, but for a listening socket
// that a process was handed while its first holder keeps it (within
// rescanEvery).
func TestPlacementTrackerRereadsOnlyOnChange(t *testing.T) {
	proc, hostNS := fakeRoot(t)
	fakeProc(t, proc, "300", "1", "20FB") // 8443 on socket 4242, descriptor 3
	tr := newPlacementTracker(nil, proc, hostNS, nil, "", slog.New(slog.DiscardHandler))
	now := time.Unix(1_000_000, 0)
	tr.now = func() time.Time { return now }
	api := workload.Identity{SpiffeID: spiffeid.RequireFromString("spiffe://example.org/api")}
	tr.Inspect(context.Background(), workload.Executable{PID: 300}, []workload.Identity{api})
	step := func(what string, want ...uint16) {
		t.Helper()
		now = now.Add(time.Second)
		rep := tr.report()
		if len(rep.Services) != 1 {
			t.Fatalf("%s: report %+v", what, rep)
		}
		if got := rep.Services[0].Ports; !slices.Equal(got, want) {
			t.Fatalf("%s: ports %v, want %v", what, got, want)
		}
	}
	step("first look", 8443)
	fd := func(n int, inode int) {
		os.Remove(filepath.Join(proc, "300", "fd", fmt.Sprint(n)))
		if inode > 0 {
			os.Symlink(fmt.Sprintf("socket:[%d]", inode), filepath.Join(proc, "300", "fd", fmt.Sprint(n)))
		}
	}
	listening := func(inodes ...int) {
		text := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
		for i, ino := range inodes {
			text += fmt.Sprintf("   %d: 0200000A:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n", i, 8443+ino-4242, ino)
		}
		os.WriteFile(filepath.Join(proc, "300", "net", "tcp"), []byte(text), 0o644)
	}
	listening(4242, 4243) // another process opens 8444: a full look
	step("another process's listener", 8443)
	// It hands its socket to ours and keeps it: the host's set and ours
	// are unchanged, so the earlier look stands ...
	fd(4, 4243)
	step("a listener handed over, nothing else changed", 8443)
	// ... until rescanEvery has passed.
	now = now.Add(rescanEvery)
	step("after rescanEvery", 8443, 8444)
	// Ours closes its descriptor 3 (the socket lives on elsewhere): seen
	// at once, the set unchanged.
	fd(3, 0)
	step("a listener no longer held", 8444)
	// A listener opened anywhere changes the set: read again at once.
	fd(5, 4244)
	listening(4242, 4243, 4244)
	step("a new listener", 8444, 8445)
	// A listener closed changes it too.
	listening(4242, 4243)
	step("a closed listener", 8444)
	// A process whose /proc entry can no longer be read (a zombie keeps its
	// stat but not its fd or ns links) keeps nothing, so its failing check
	// cannot force a full look every report.
	os.Remove(filepath.Join(proc, "300", "ns", "net"))
	tr.report()
	if _, kept := tr.held[300]; kept {
		t.Fatal("an unreadable process's sockets are kept")
	}
}
