package workload

import (
	"bufio"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command name in /proc/PID/stat is the process's to choose: spaces
// and parentheses in it must not shift the fields.
func TestParseStat(t *testing.T) {
	rest := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21"
	tests := []struct {
		in        string
		wantStart uint64
		wantState byte
		wantErr   string
	}{
		{"123 (payments)" + rest, 424242, 'S', ""},
		{"123 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 1 (b)" + rest, 424242, 'S', ""},
		{"123 (x) 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 99 0)" + rest, 424242, 'S', ""},
		{"123 (zombie) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 7 20", 7, 'Z', ""},
		{"123 payments S 1 2", 0, 0, "no command name"},
		{"123 (short) S 1 2 3", 0, 0, "too few fields"},
		{"123 (bad) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 20", 0, 0, "start time"},
	}
	for _, tt := range tests {
		st, err := parseStat([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseStat(%q) = %+v, %v; want error %q", tt.in, st, err, tt.wantErr)
			}
			continue
		}
		if err != nil || st.start != tt.wantStart || st.state != tt.wantState {
			t.Errorf("parseStat(%q) = %+v, %v; want start %d state %c", tt.in, st, err, tt.wantStart, tt.wantState)
		}
	}
	// This process's own stat parses, and names it running or sleeping.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := parseStat(b); err != nil || st.start == 0 {
		t.Fatalf("own stat: %+v %v", st, err)
	}
}

func TestParseStatus(t *testing.T) {
	b := []byte("Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nGroups:\t4 24 27 \n")
	st, err := parseStatus(b)
	if err != nil || st.euid != 1001 || st.egid != 2001 || strings.Join(st.groups, ",") != "4,24,27" {
		t.Fatalf("parseStatus = %+v, %v", st, err)
	}
	for _, bad := range []string{"Name:\tx\n", "Uid:\t1\nGid:\t2 x\n", "Uid:\t1 -1\nGid:\t2 2\n"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("123 (payments) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21"))
	f.Add([]byte("1 ((a) b)) R 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			return
		}
		// Whatever parses has a one-letter state after the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); len(f) < 20 || f[0] != string(st.state) {
			t.Fatalf("parseStat(%q) = %+v", b, st)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nGroups:\t4 24 27\n"))
	f.Add([]byte("Uid:\nGid:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStatus(b)
		if err == nil {
			for _, g := range st.groups {
				if g == "" {
					t.Fatalf("empty group from %q", b)
				}
			}
		}
	})
}

// Each connection holds a pidfd and a /proc directory until it closes: a
// client that connects again and again must not make the agent run out of
// descriptors.
func TestPinsAreReleased(t *testing.T) {
	sock := serve(t, &staticSource{snap: snapshotFor(t, uidSel()), changed: make(chan struct{})})
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	if _, err := fetch(t, sock); err != nil { // warm up: lazily opened descriptors
		t.Fatal(err)
	}
	before := fds()
	for range 30 {
		if _, err := fetch(t, sock); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for fds() > before+4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open after 30 closed connections, %d before", fds(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A local user opens connections to the Workload API and holds them. Each
// costs the agent three descriptors (socket, pidfd, /proc directory):
// without a bound she took every descriptor, and no workload of any other
// uid could be served. The agent here has 256 descriptors; she holds 300
// connections; another uid is still served, and the agent logs why hers
// were refused.
func TestWorkloadAPIConnectionFlood(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to flood as a second local user (uid 65534)")
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	low := rl
	low.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) })
	dir := sharedDir(t)
	sock, _, logs := raceServer(t, dir, snapshotFor(t, uidSel()))

	cmd := helperCmd(copyTestBinary(t, dir, "flooder"), "hold", "RAMPART_WL_SOCK="+sock, "RAMPART_WL_CONNS=300")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "holding 300" {
		t.Fatalf("the flooder: %q", line)
	}
	if _, err := fetch(t, sock); err != nil {
		t.Fatalf("a workload of another uid, while uid 65534 holds 300 connections: %v", err)
	}
	if want := "too many open Workload API connections\" uid=65534"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
	if n := strings.Count(logs.String(), "too many open Workload API connections"); n != 1 {
		t.Fatalf("%d warnings for one flood, want 1 (one per uid per %v)", n, refusalInterval)
	}
}

func TestDefaultConnBudget(t *testing.T) {
	for _, tc := range []struct {
		nofile        uint64
		total, perUID int
	}{
		{256, 21, 16},
		{1024, 256, 32},
		{20000, 6581, 822},
		{1 << 20, 16384, 1024},
		{16, 16, 16},
	} {
		if total, perUID := defaultConnBudget(tc.nofile); total != tc.total || perUID != tc.perUID {
			t.Errorf("defaultConnBudget(%d) = %d, %d; want %d, %d", tc.nofile, total, perUID, tc.total, tc.perUID)
		}
	}
}
