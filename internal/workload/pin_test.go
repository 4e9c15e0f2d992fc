package workload

import (
	"os"
	"strings"
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
