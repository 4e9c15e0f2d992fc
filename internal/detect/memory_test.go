package detect

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

func readBy(at time.Duration, user string) *audit.Entry {
	e := decision(at, orders, payments, "GET", "success")
	e.Actor.User = user
	return e
}

func heapMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// Red team finding 3: a compromised enforcer shipped 7,000 decisions with
// distinct actor.user values; read-volume (threshold 3,000) allocated 3,000
// time slots per group up front (72 KB), groups were swept only every 8,192
// entries, and the server's heap reached 565 MB. Now a group costs a few
// buckets, a rule keeps at most MaxGroups groups (the rest count as one
// group, which still fires), and state is swept by entry time too.
func TestEngineMemoryBoundedUnderDistinctGroups(t *testing.T) {
	e := NewEngine(Default())
	var overflowed int64
	e.OnOverflow = func(rule string, n int64) {
		if rule == "read-volume" {
			overflowed = n
		}
	}
	var rv *ruleState
	for _, r := range e.rules {
		if r.Name == "read-volume" {
			rv = r
		}
	}
	alerts := map[string]bool{} // group → read-volume fired for it
	process := func(i int, en *audit.Entry) {
		for _, a := range e.Process(int64(i), en) {
			if a.Rule == "read-volume" {
				alerts[a.Group] = true
			}
		}
	}
	base := heapMB()
	const groups = 100_000
	i := 0
	process(i, readBy(0, "alice")) // known before the flood
	for i = 1; i <= groups; i++ {
		process(i, readBy(time.Duration(i)*100*time.Microsecond, fmt.Sprintf("forged-%d", i)))
		if i%5000 == 0 {
			if grown := heapMB() - base; grown > 64 {
				t.Fatalf("after %d distinct groups the heap grew by %.0f MB (at most 64)", i, grown)
			}
		}
	}
	if n := len(rv.counts); n > e.MaxGroups+1 {
		t.Fatalf("read-volume keeps %d groups, at most %d and the overflow group", n, e.MaxGroups)
	}
	for g, w := range rv.counts {
		if len(w.b) > windowBuckets+2 {
			t.Fatalf("group %s holds %d buckets", g, len(w.b))
		}
	}
	if want := int64(groups + 1 - e.MaxGroups); overflowed != want {
		t.Fatalf("%d matches counted in the overflow group, want %d", overflowed, want)
	}
	// 90,001 reads in 10 s from groups past the bound: the flood itself
	// fires, as one group.
	if !alerts[OverflowGroup] {
		t.Fatalf("read-volume did not fire for the overflow group; alerts for %v", keys(alerts))
	}
	// A group known before the flood keeps its own count and fires.
	alice := "actor.spiffe_id=" + orders + " actor.user=alice"
	for j := range 2999 {
		i++
		process(i, readBy(11*time.Second+time.Duration(j)*time.Millisecond, "alice"))
	}
	if !alerts[alice] {
		t.Fatal("read-volume did not fire for alice's 3,000 reads in a minute")
	}
	// Two minutes on, the flood's groups are swept (by time: far fewer than
	// sweepEntries entries later) and a new group is its own again.
	i++
	process(i, readBy(3*time.Minute, "bob"))
	if n := len(rv.counts); n > 2 {
		t.Fatalf("two minutes after the flood read-volume still keeps %d groups", n)
	}
	for j := range 2999 {
		i++
		process(i, readBy(3*time.Minute+time.Duration(j+1)*time.Millisecond, "bob"))
	}
	if !alerts["actor.spiffe_id="+orders+" actor.user=bob"] {
		t.Fatalf("read-volume did not fire for bob after the sweep; alerts for %v", keys(alerts))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The window counts matches within the rule's window, however they come:
// in order, late, or as aggregates.
func TestWindowCounts(t *testing.T) {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tt := range []struct {
		name      string
		times     []time.Duration
		threshold int
		window    time.Duration
		fires     []bool
	}{
		{"three within a minute", []time.Duration{0, 30 * time.Second, 60 * time.Second}, 3, time.Minute, []bool{false, false, true}},
		{"three over a minute", []time.Duration{0, 30 * time.Second, 61 * time.Second}, 3, time.Minute, []bool{false, false, false}},
		{"a late one counts", []time.Duration{50 * time.Second, 40 * time.Second, 10 * time.Second}, 3, time.Minute, []bool{false, false, true}},
		{"too late does not", []time.Duration{70 * time.Second, 40 * time.Second, 5 * time.Second}, 3, time.Minute, []bool{false, false, false}},
		{"empties after firing", []time.Duration{0, 1, 2, 3, 4, 5}, 3, time.Minute, []bool{false, false, true, false, false, true}},
	} {
		var w window
		for k, d := range tt.times {
			if got := w.add(at(d), 1, tt.threshold, tt.window); got != tt.fires[k] {
				t.Errorf("%s: match %d fired %v, want %v", tt.name, k, got, tt.fires[k])
			}
		}
	}
	// Aggregates: 19 then 1 make 20; the surplus of an aggregate is kept.
	var w window
	if w.add(at(0), 19, 20, time.Minute) || !w.add(at(time.Second), 5, 20, time.Minute) {
		t.Fatal("19 + 5 within a minute did not fire at 20")
	}
	if w.add(at(2*time.Second), 15, 20, time.Minute) || !w.add(at(3*time.Second), 1, 20, time.Minute) {
		t.Fatal("the surplus (4) + 15 + 1 did not fire at 20")
	}
}
